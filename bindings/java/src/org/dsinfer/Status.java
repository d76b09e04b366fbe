package org.dsinfer;

/** The DSI_ERR_* codes of include/dsinfer.h. */
public final class Status {
    private Status() {}
    public static final int OK = 0, INVALID_ARGUMENT = 1, IO = 2, FORMAT = 3, CONFIG = 4, CHECKPOINT = 5,
        UNSUPPORTED = 6, NO_MEMORY = 7, CONTEXT_FULL = 8, INVALID_TOKEN = 9, CANCELLED = 10, BUSY = 11,
        BUFFER_TOO_SMALL = 12, PARSE = 13, BACKEND = 14, INTERNAL = 15;
}
