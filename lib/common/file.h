// Small filesystem helpers shared by the loaders (config, checkpoint, tokenizer, session).
#pragma once

#include <string>

namespace dsi {

// The whole file as bytes. Throws DSI_ERR_IO: "cannot open <what> PATH: <strerror>" or
// "cannot read <what> PATH", where "<what> " is left out when `what` is null.
std::string read_text_file(const std::string &path, const char *what = nullptr);

// True when `path` names a regular file (following symlinks).
bool is_regular_file(const std::string &path);

}  // namespace dsi
