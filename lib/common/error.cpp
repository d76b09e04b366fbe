#include "common/error.h"

#include "common/log.h"

#include <cstdio>
#include <vector>

namespace dsi {

static thread_local std::string t_last_error;

static std::string vformat(const char *fmt, va_list ap) {
    va_list copy;
    va_copy(copy, ap);
    int n = std::vsnprintf(nullptr, 0, fmt, copy);
    va_end(copy);
    if (n < 0) return fmt;
    std::vector<char> buf(static_cast<size_t>(n) + 1);
    std::vsnprintf(buf.data(), buf.size(), fmt, ap);
    return std::string(buf.data(), static_cast<size_t>(n));
}

std::string strformat(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    std::string s = vformat(fmt, ap);
    va_end(ap);
    return s;
}

void fail(dsi_status status, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    std::string s = vformat(fmt, ap);
    va_end(ap);
    throw Error(status, std::move(s));
}

void set_last_error(const std::string &message) {
    t_last_error = message;
    log_message(nullptr, nullptr, DSI_LOG_NONE, DSI_LOG_ERROR, message.c_str());
}

}  // namespace dsi

extern "C" DSI_API const char *dsi_last_error(void) { return dsi::t_last_error.c_str(); }
