// UTF-8 well-formedness (Table 3-7 of the Unicode standard), shared by the tokenizer, the
// detokenizer and the DSML parser.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace dsi::utf8 {

// One step of a left-to-right scan: a well-formed sequence, or the maximal subpart of an
// ill-formed one (at least one byte). `truncated`: the subpart ran into the end of the input,
// so more bytes could still complete it.
struct Sequence {
    size_t len;
    bool valid;
    bool truncated;
};

// The sequence starting at p[0]; `n` (at least 1) bytes are available. Overlong forms,
// surrogates and code points above U+10FFFF are ill-formed.
Sequence scan(const unsigned char *p, size_t n);

// Byte offset of the first byte that does not start a well-formed UTF-8 sequence, or npos.
size_t find_invalid(std::string_view s);

// Length of the longest prefix of `s` that cannot change when more bytes are appended:
// everything except a trailing truncated-but-so-far-valid sequence.
size_t stable_prefix(std::string_view s);

// Appends `s` with every ill-formed subsequence replaced by U+FFFD, one per maximal
// subpart (Unicode's recommended practice, as Python's errors="replace" and Rust's
// from_utf8_lossy do).
void append_lossy(std::string &out, std::string_view s);

}  // namespace dsi::utf8
