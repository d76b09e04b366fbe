package org.dsinfer;

import org.dsinfer.internal.SWIGTYPE_p_dsi_detokenizer;
import org.dsinfer.internal.dsinfer_native;

/** Streaming ids -> text: only whole UTF-8 characters come out. One thread at a time. */
public final class Detokenizer implements AutoCloseable {
    private final Owned<SWIGTYPE_p_dsi_detokenizer> handle;

    Detokenizer(SWIGTYPE_p_dsi_detokenizer ptr) {
        handle = new Owned<>(this, ptr, dsinfer_native::dsi_detokenizer_free, "detokenizer");
    }

    private String next(int id) {
        SWIGTYPE_p_dsi_detokenizer p = handle.get();
        try (Native.Call call = new Native.Call()) {
            dsinfer_native.dsib_detokenizer_next(p, id, call.ptr);
            return call.text();
        }
    }

    /** Feeds one id; returns the text it completed (possibly ""). */
    public String push(int id) {
        if (id < 0) throw new DsinferException(Status.INVALID_TOKEN, "token id " + id + " is negative");
        return next(id);
    }

    /** Ends the stream: pending bytes come out as U+FFFD. */
    public String flush() { return next(-1); }

    @Override
    public void close() { handle.close(); }
}
