// Errors inside the library: thrown as dsi::Error, turned into a dsi_status and a
// per-thread message at the C boundary (lib/api.cpp). Nothing else crosses it.
#pragma once

#include "dsinfer.h"

#include <cstdarg>
#include <stdexcept>
#include <string>

namespace dsi {

class Error : public std::runtime_error {
public:
    Error(dsi_status status, std::string message)
        : std::runtime_error(std::move(message)), status_(status) {}
    dsi_status status() const { return status_; }

private:
    dsi_status status_;
};

// printf-style formatting into a std::string.
std::string strformat(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

// Throws dsi::Error(status, formatted message).
[[noreturn]] void fail(dsi_status status, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

// Sets this thread's last-error message (used by the C wrappers).
void set_last_error(const std::string &message);

// Runs `body` and converts any exception into a status plus the thread's message.
template <class F>
dsi_status guard(F &&body) noexcept {
    try {
        body();
        return DSI_OK;
    } catch (const Error &e) {
        set_last_error(e.what());
        return e.status();
    } catch (const std::bad_alloc &) {
        set_last_error("out of memory");
        return DSI_ERR_NO_MEMORY;
    } catch (const std::length_error &e) {  // a container asked for more than it can hold
        set_last_error(std::string("out of memory: a size too large to allocate (") + e.what() + ")");
        return DSI_ERR_NO_MEMORY;
    } catch (const std::exception &e) {
        set_last_error(std::string("internal error: ") + e.what());
        return DSI_ERR_INTERNAL;
    } catch (...) {
        set_last_error("internal error: unknown exception");
        return DSI_ERR_INTERNAL;
    }
}

}  // namespace dsi
