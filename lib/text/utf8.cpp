#include "text/utf8.h"

namespace dsi::utf8 {

namespace {

const unsigned char *bytes(std::string_view s) { return reinterpret_cast<const unsigned char *>(s.data()); }

}  // namespace

// Table 3-7 of the Unicode standard (well-formed UTF-8 byte sequences).
Sequence scan(const unsigned char *p, size_t n) {
    unsigned char b = p[0];
    if (b < 0x80) return {1, true, false};
    size_t need;
    unsigned char lo = 0x80, hi = 0xBF;
    if (b >= 0xC2 && b <= 0xDF) {
        need = 2;
    } else if (b >= 0xE0 && b <= 0xEF) {
        need = 3;
        if (b == 0xE0) lo = 0xA0;
        if (b == 0xED) hi = 0x9F;  // no surrogates
    } else if (b >= 0xF0 && b <= 0xF4) {
        need = 4;
        if (b == 0xF0) lo = 0x90;
        if (b == 0xF4) hi = 0x8F;  // nothing above U+10FFFF
    } else {
        return {1, false, false};
    }
    for (size_t k = 1; k < need; ++k) {
        if (k == n) return {k, false, true};
        if (p[k] < lo || p[k] > hi) return {k, false, false};
        lo = 0x80;
        hi = 0xBF;
    }
    return {need, true, false};
}

size_t find_invalid(std::string_view s) {
    const unsigned char *p = bytes(s);
    size_t i = 0;
    while (i < s.size()) {
        if (p[i] < 0x80) {
            ++i;
            continue;
        }
        Sequence seq = scan(p + i, s.size() - i);
        if (!seq.valid) return i;
        i += seq.len;
    }
    return std::string_view::npos;
}

size_t stable_prefix(std::string_view s) {
    const unsigned char *p = bytes(s);
    size_t i = 0;
    while (i < s.size()) {
        Sequence seq = scan(p + i, s.size() - i);
        if (seq.truncated) return i;
        i += seq.len;
    }
    return s.size();
}

void append_lossy(std::string &out, std::string_view s) {
    const unsigned char *p = bytes(s);
    size_t i = 0, run = 0;  // [run, i) is valid text not yet copied
    while (i < s.size()) {
        Sequence seq = scan(p + i, s.size() - i);
        if (seq.valid) {
            i += seq.len;
            continue;
        }
        out.append(s.data() + run, i - run);
        out += "\xEF\xBF\xBD";
        i += seq.len;
        run = i;
    }
    out.append(s.data() + run, s.size() - run);
}

}  // namespace dsi::utf8
