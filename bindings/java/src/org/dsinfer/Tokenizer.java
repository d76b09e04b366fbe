package org.dsinfer;

import java.nio.charset.StandardCharsets;
import org.dsinfer.internal.SWIGTYPE_p_dsi_tokenizer;
import org.dsinfer.internal.dsinfer_native;

/**
 * A Hugging Face tokenizer.json (dsi_tokenizer): loaded from a file, or a session's (then
 * usable while that session is open). Thread-safe.
 */
public final class Tokenizer implements AutoCloseable {
    public static final int PARSE_SPECIAL = 1, ADD_SPECIAL = 2;
    /** Token attribute bits (DSI_TOKEN_ATTR_*); NONE = no token has the id. */
    public static final int ATTR_NONE = 0, ATTR_NORMAL = 1, ATTR_CONTROL = 2, ATTR_USER_DEFINED = 4, ATTR_EOG = 8;

    private final Owned<SWIGTYPE_p_dsi_tokenizer> handle;
    private final Session session; // the owner of a session's tokenizer, else null

    Tokenizer(SWIGTYPE_p_dsi_tokenizer ptr, Session session) {
        this.session = session;
        this.handle = new Owned<>(this, ptr, session == null ? dsinfer_native::dsi_tokenizer_free : p -> {}, "tokenizer");
    }

    /** Loads a tokenizer.json. */
    public static Tokenizer load(String path) {
        Native.ensureLoaded();
        try (Native.Call call = new Native.Call()) {
            SWIGTYPE_p_dsi_tokenizer t = dsinfer_native.dsib_tokenizer_load(Native.path(path), call.ptr);
            call.check();
            return new Tokenizer(t, null);
        }
    }

    SWIGTYPE_p_dsi_tokenizer ptr() {
        SWIGTYPE_p_dsi_tokenizer p = handle.get();
        if (session != null) session.ptr(); // throws once the session is closed
        return p;
    }

    @Override
    public void close() { handle.close(); }

    public int nVocab() { return dsinfer_native.dsi_tokenizer_n_vocab(ptr()); }
    /** The token's attribute: ATTR_NORMAL, ATTR_CONTROL, ATTR_USER_DEFINED or ATTR_NONE. */
    public int tokenAttr(int id) { return (int) dsinfer_native.dsi_tokenizer_token_attr(ptr(), id); }

    /** The id of a token given by its exact text, or -1. */
    public int tokenId(String text) { return dsinfer_native.dsib_tokenizer_token_id(ptr(), Native.utf8(text)); }

    /** Encodes text (flags: PARSE_SPECIAL, ADD_SPECIAL). */
    public int[] tokenize(String text, int flags) {
        byte[] b = Native.utf8(text);
        try (Native.Call call = new Native.Call()) {
            int[] ids = new int[b.length + 2];
            long n = dsinfer_native.dsib_tokenize(ptr(), b, flags, ids, ids.length, call.ptr);
            call.check();
            if (n > ids.length) {
                ids = new int[(int) n];
                n = dsinfer_native.dsib_tokenize(ptr(), b, flags, ids, ids.length, call.ptr);
                call.check();
            }
            return java.util.Arrays.copyOf(ids, (int) n);
        }
    }

    public int[] tokenize(String text) { return tokenize(text, 0); }

    /** Decodes ids to text (skipSpecial: control tokens give no text). */
    public String detokenize(int[] ids, boolean skipSpecial) {
        try (Native.Call call = new Native.Call()) {
            dsinfer_native.dsib_detokenize(ptr(), ids, ids.length, skipSpecial ? 1 : 0, call.ptr);
            return call.text();
        }
    }

    public String detokenize(int[] ids) { return detokenize(ids, false); }

    /** The raw bytes of one token. */
    public byte[] piece(int id) {
        try (Native.Call call = new Native.Call()) {
            dsinfer_native.dsib_tokenizer_token_to_piece(ptr(), id, call.ptr);
            return call.bytes();
        }
    }

    /** A streaming decoder; it outlives this tokenizer. */
    public Detokenizer detokenizer(boolean skipSpecial) {
        try (Native.Call call = new Native.Call()) {
            var d = dsinfer_native.dsib_detokenizer_create(ptr(), skipSpecial ? 1 : 0, call.ptr);
            call.check();
            return new Detokenizer(d);
        }
    }
}
