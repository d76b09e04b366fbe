#include "common/log.h"

#include "common/error.h"
#include "common/params.h"

#include <cstdarg>
#include <cstdio>
#include <mutex>

namespace dsi {

namespace {

struct GlobalSink {
    std::mutex mutex;
    dsi_log_fn fn = nullptr;
    void *user_data = nullptr;
    dsi_log_level min_level = DSI_LOG_NONE;
};

GlobalSink &global_sink() {
    static GlobalSink sink;
    return sink;
}

}  // namespace

// The sink is copied under the lock and called outside it, so that a slow callback does
// not serialise every thread's logging behind one mutex.
void log_message(dsi_log_fn fn, void *user_data, dsi_log_level min_level, dsi_log_level level, const char *message) {
    if (!fn) {
        GlobalSink &g = global_sink();
        std::lock_guard<std::mutex> lock(g.mutex);
        fn = g.fn;
        user_data = g.user_data;
        min_level = g.min_level;
    }
    if (fn && level >= min_level && level < DSI_LOG_NONE) fn(level, message, user_data);
}

void log_global(dsi_log_level level, const char *fmt, ...) {
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    std::vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    log_message(nullptr, nullptr, DSI_LOG_NONE, level, buf);
}

}  // namespace dsi

extern "C" DSI_API dsi_status dsi_log_set(dsi_log_fn fn, void *user_data, dsi_log_level min_level) {
    return dsi::guard([&] {
        const auto level = dsi::enum_value(min_level);
        if (level < DSI_LOG_DEBUG || level > DSI_LOG_NONE)
            dsi::fail(DSI_ERR_INVALID_ARGUMENT, "dsi_log_set: min_level %lld is outside [DSI_LOG_DEBUG, DSI_LOG_NONE]",
                      static_cast<long long>(level));
        dsi::GlobalSink &g = dsi::global_sink();
        std::lock_guard<std::mutex> lock(g.mutex);
        g.fn = fn;
        g.user_data = user_data;
        g.min_level = min_level;
    });
}
