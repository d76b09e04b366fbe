package org.dsinfer;

import org.dsinfer.internal.dsinfer_native;

/** Library-wide functions: version, the process-wide log sink. */
public final class Dsinfer {
    private Dsinfer() {}

    public static final int LOG_DEBUG = 0, LOG_INFO = 1, LOG_WARN = 2, LOG_ERROR = 3, LOG_NONE = 4;

    static {
        Native.ensureLoaded();
    }

    /** The linked library's version, "MAJOR.MINOR.PATCH". */
    public static String version() { return dsinfer_native.dsi_version(); }

    /** Sinks set so far: the library may still deliver to a replaced one for a moment. */
    private static final java.util.List<Callbacks> sinks = new java.util.ArrayList<>();

    /**
     * Sets the process-wide log sink (messages of calls without a session's own sink, and
     * every failed call's message at LOG_ERROR); null turns it off. Thread-safe.
     */
    public static synchronized void setLogger(Listeners.Log log, int minLevel) {
        Callbacks cb = null;
        if (log != null) {
            cb = new Callbacks();
            cb.log = log;
            sinks.add(cb);
        }
        try (Native.Call call = new Native.Call()) {
            dsinfer_native.dsib_log_set(cb, minLevel, call.ptr);
            call.check();
        }
    }
}
