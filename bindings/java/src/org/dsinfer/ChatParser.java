package org.dsinfer;

import java.lang.ref.Cleaner;
import org.dsinfer.internal.SWIGTYPE_p_dsi_chat_parser;
import org.dsinfer.internal.dsinfer_native;

/** Incremental parser of a streamed reply (dsi_chat_parser). One thread at a time. */
public final class ChatParser implements AutoCloseable {
    private static final class Handle implements Runnable {
        SWIGTYPE_p_dsi_chat_parser ptr;

        @Override
        public synchronized void run() {
            if (ptr != null) dsinfer_native.dsi_chat_parser_free(ptr);
            ptr = null;
        }
    }

    private final Handle handle = new Handle();
    private final Cleaner.Cleanable cleanable;

    public ChatParser(boolean thinking) {
        Native.ensureLoaded();
        try (Native.Call call = new Native.Call()) {
            handle.ptr = dsinfer_native.dsib_chat_parser_create(thinking ? 1 : 0, call.ptr);
            call.check();
        }
        cleanable = Session.CLEANER.register(this, handle);
    }

    private SWIGTYPE_p_dsi_chat_parser ptr() {
        SWIGTYPE_p_dsi_chat_parser p = handle.ptr;
        if (p == null) throw new IllegalStateException("dsinfer: the chat parser is closed");
        return p;
    }

    /** Feeds more of the reply; returns the events that became certain (a JSON array). */
    public String push(String text) {
        try (Native.Call call = new Native.Call()) {
            dsinfer_native.dsib_chat_parser_push(ptr(), Native.utf8(text), call.ptr);
            return call.text();
        }
    }

    /** Ends the reply: {"events": [...], "result": {...}} (JSON). */
    public String finish() {
        try (Native.Call call = new Native.Call()) {
            dsinfer_native.dsib_chat_parser_finish(ptr(), call.ptr);
            return call.text();
        }
    }

    @Override
    public void close() { cleanable.clean(); }
}
