package org.dsinfer;

import org.dsinfer.internal.SWIGTYPE_p_dsi_chat_parser;
import org.dsinfer.internal.dsinfer_native;

/** Incremental parser of a streamed reply (dsi_chat_parser). One thread at a time. */
public final class ChatParser implements AutoCloseable {
    private final Owned<SWIGTYPE_p_dsi_chat_parser> handle;

    public ChatParser(boolean thinking) {
        Native.ensureLoaded();
        try (Native.Call call = new Native.Call()) {
            SWIGTYPE_p_dsi_chat_parser p = dsinfer_native.dsib_chat_parser_create(thinking ? 1 : 0, call.ptr);
            call.check();
            handle = new Owned<>(this, p, dsinfer_native::dsi_chat_parser_free, "chat parser");
        }
    }

    private SWIGTYPE_p_dsi_chat_parser ptr() { return handle.get(); }

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
    public void close() { handle.close(); }
}
