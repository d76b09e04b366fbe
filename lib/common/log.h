// Log delivery: a session's own sink, else the process-wide one (dsi_log_set).
#pragma once

#include "dsinfer.h"

namespace dsi {

// Delivers `message` to `fn` if level >= min_level; without `fn`, to the process-wide
// sink under its own level.
void log_message(dsi_log_fn fn, void *user_data, dsi_log_level min_level, dsi_log_level level, const char *message);

// printf-style, to the process-wide sink only (calls without a session).
void log_global(dsi_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

}  // namespace dsi
