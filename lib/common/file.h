// Small filesystem helpers shared by the loaders (config, checkpoint, tokenizer, session).
#pragma once

#include <cstddef>
#include <string>

namespace dsi {

// The whole of a regular file as bytes, at most `max_bytes` long. A FIFO, device or
// directory is refused before any read (reading one could block for ever or never end).
// Throws DSI_ERR_IO: "cannot open <what> PATH: <strerror>", "<what> PATH is a directory /
// is not a regular file / is N bytes, more than the limit of M", "cannot read <what> PATH";
// "<what> " is left out when `what` is null.
std::string read_text_file(const std::string &path, const char *what = nullptr,
                           size_t max_bytes = size_t(256) << 20);

// True when `path` names a regular file (following symlinks).
bool is_regular_file(const std::string &path);

// Opens `path` read-only without blocking on a FIFO and checks that it is a regular
// file. Returns the descriptor (the caller closes it) and its size. Throws DSI_ERR_IO
// naming `what` and the path.
int open_regular_file(const std::string &path, const char *what, size_t *size);

}  // namespace dsi
