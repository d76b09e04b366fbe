package org.dsinfer;

import java.util.ArrayList;
import java.util.List;
import org.dsinfer.internal.SWIGTYPE_p_dsi_context;
import org.dsinfer.internal.dsinfer_native;

/**
 * One sequence and its caches (dsi_context). Used by one thread at a time: a concurrent
 * call from another thread fails with DsinferException BUSY.
 */
public final class Context implements AutoCloseable {
    private final Owned<SWIGTYPE_p_dsi_context> handle;
    private final Session session;
    private final List<Callbacks> abortCallbacks; // every one set, released with the context

    /** Takes ownership of ptr and of one reference to the session's and to each abort callbacks. */
    private Context(Session session, SWIGTYPE_p_dsi_context ptr, List<Callbacks> aborts) {
        this.session = session;
        this.abortCallbacks = aborts;
        Callbacks sessionCallbacks = session.callbacks().retain(); // its log sink serves this context too
        this.handle = new Owned<>(this, ptr, p -> {
            dsinfer_native.dsi_context_free(p);
            sessionCallbacks.release();
            synchronized (aborts) {
                for (Callbacks cb : aborts) cb.release();
                aborts.clear();
            }
        }, "context");
    }

    private static List<Callbacks> abortList(Listeners.Abort abort) {
        List<Callbacks> list = new ArrayList<>();
        if (abort != null) {
            Callbacks cb = new Callbacks();
            cb.abort = abort;
            list.add(cb);
        }
        return list;
    }

    private static void releaseAll(List<Callbacks> list) {
        for (Callbacks cb : list) cb.release();
    }

    static Context create(Session session, int nCtx, Listeners.Abort abort) {
        List<Callbacks> aborts = abortList(abort);
        try (Native.Call call = new Native.Call()) {
            SWIGTYPE_p_dsi_context p = dsinfer_native.dsib_context_create(session.ptr(), nCtx, 0,
                                                                          aborts.isEmpty() ? null : aborts.get(0), call.ptr);
            if (call.status() != 0) {
                releaseAll(aborts);
                call.check();
            }
            return new Context(session, p, aborts);
        }
    }

    SWIGTYPE_p_dsi_context ptr() { return handle.get(); }

    /** The session this context was created from. */
    public Session session() { return session; }

    /** Frees the context (idempotent). */
    @Override
    public void close() { handle.close(); }

    /** Replaces the abort listener (null clears it); may be called from any thread. */
    public void setAbort(Listeners.Abort abort) {
        SWIGTYPE_p_dsi_context p = ptr(); // throws once closed, before anything is kept
        List<Callbacks> added = abortList(abort);
        Callbacks cb = added.isEmpty() ? null : added.get(0);
        synchronized (abortCallbacks) { abortCallbacks.addAll(added); }
        try (Native.Call call = new Native.Call()) {
            dsinfer_native.dsib_context_set_abort(p, cb, call.ptr);
            call.check();
        }
    }

    /** Appends ids and runs the model over them; keeps the last token's logits. */
    public void eval(int... ids) { eval(ids, false); }

    /** Appends ids; allLogits keeps the logits of every one of them. */
    public void eval(int[] ids, boolean allLogits) {
        try (Native.Call call = new Native.Call()) {
            dsinfer_native.dsib_context_eval(ptr(), ids, ids.length, allLogits ? 1 : 0, call.ptr);
            call.check();
        }
    }

    /** The logits of the last evaluated token. */
    public float[] logits() { return logits(-1); }

    /** The logits of token index of the last eval (-1 = its last). */
    public float[] logits(int index) {
        float[] out = new float[session.nVocab()];
        try (Native.Call call = new Native.Call()) {
            dsinfer_native.dsib_context_logits(ptr(), index, out, out.length, call.ptr);
            call.check();
        }
        return out;
    }

    public int length() { return dsinfer_native.dsi_context_length(ptr()); }
    public int nCtx() { return dsinfer_native.dsi_context_n_ctx(ptr()); }
    public int reusedTokens() { return dsinfer_native.dsi_context_reused_tokens(ptr()); }
    public long cacheBytes() { return dsinfer_native.dsi_context_cache_bytes(ptr()); }

    /** Performance counters (dsi_context_perf): times in milliseconds. */
    public static final class Perf {
        public final double loadMs, promptMs, decodeMs;
        public final long promptTokens, decodeTokens;

        Perf(org.dsinfer.internal.ContextPerf p) {
            loadMs = p.getLoad_ms();
            promptMs = p.getPrompt_ms();
            promptTokens = p.getPrompt_tokens();
            decodeMs = p.getDecode_ms();
            decodeTokens = p.getDecode_tokens();
        }
    }

    /** The counters since creation or the last resetPerf(). */
    public Perf perf() {
        org.dsinfer.internal.ContextPerf p = dsinfer_native.dsi_context_perf_get(ptr());
        try {
            return new Perf(p);
        } finally {
            p.delete();
        }
    }

    /** Sets the prompt and decode counters to zero (not loadMs). */
    public void resetPerf() { dsinfer_native.dsi_context_perf_reset(ptr()); }

    /** The token history. */
    public int[] tokens() {
        int n = dsinfer_native.dsib_context_tokens(ptr(), new int[0], 0);
        int[] ids = new int[n];
        if (n > 0) dsinfer_native.dsib_context_tokens(ptr(), ids, n);
        return ids;
    }

    /** Forgets every token and gives the cache pages back. */
    public void clear() {
        try (Native.Call call = new Native.Call()) {
            dsinfer_native.dsib_context_clear(ptr(), call.ptr);
            call.check();
        }
    }

    /** Keeps the first length tokens. */
    public void truncate(int length) {
        try (Native.Call call = new Native.Call()) {
            dsinfer_native.dsib_context_truncate(ptr(), length, call.ptr);
            call.check();
        }
    }

    /** A new context sharing this one's tokens and cache pages. */
    public Context fork() {
        try (Native.Call call = new Native.Call()) {
            SWIGTYPE_p_dsi_context p = dsinfer_native.dsib_context_fork(ptr(), call.ptr);
            call.check();
            return new Context(session, p, new ArrayList<>());
        }
    }

    /** Saved state: tokens, caches, logits, and the sampler's state when sampler is not null. */
    public byte[] saveState(Sampler sampler) {
        try (Native.Call call = new Native.Call()) {
            dsinfer_native.dsib_context_save_state(ptr(), sampler == null ? null : sampler.ptr(), call.ptr);
            return call.bytes();
        }
    }

    public void loadState(byte[] state, Sampler sampler) {
        try (Native.Call call = new Native.Call()) {
            dsinfer_native.dsib_context_load_state(ptr(), state, sampler == null ? null : sampler.ptr(), call.ptr);
            call.check();
        }
    }

    public void saveStateFile(String path, Sampler sampler) {
        try (Native.Call call = new Native.Call()) {
            dsinfer_native.dsib_context_save_state_file(ptr(), sampler == null ? null : sampler.ptr(), Native.path(path), call.ptr);
            call.check();
        }
    }

    public void loadStateFile(String path, Sampler sampler) {
        try (Native.Call call = new Native.Call()) {
            dsinfer_native.dsib_context_load_state_file(ptr(), Native.path(path), sampler == null ? null : sampler.ptr(), call.ptr);
            call.check();
        }
    }

    /**
     * Generates up to maxTokens after what was evaluated: samples, streams each token with the
     * text it completed (session tokenizer; "" without one) to onToken, evaluates it, and stops
     * at an end-of-generation token or when onToken returns false. Returns the generated ids.
     */
    public int[] generate(Sampler sampler, int maxTokens, Listeners.Token onToken) {
        int[] eog = session.eogTokens();
        Detokenizer detok = null;
        try {
            Tokenizer tok = null;
            try {
                tok = session.tokenizer();
            } catch (DsinferException noTokenizer) {
                // ids only
            }
            if (tok != null) detok = tok.detokenizer(true);
            int[] out = new int[maxTokens];
            int n = 0;
            while (n < maxTokens) {
                int id = sampler.sample(this);
                boolean end = false;
                for (int e : eog) end |= e == id;
                if (end) break;
                out[n++] = id;
                String text = detok == null ? "" : detok.push(id);
                eval(id);
                if (onToken != null && !onToken.onToken(id, text)) break;
            }
            if (detok != null && onToken != null) {
                String rest = detok.flush();
                if (!rest.isEmpty()) onToken.onToken(-1, rest);
            }
            return java.util.Arrays.copyOf(out, n);
        } finally {
            if (detok != null) detok.close();
        }
    }
}
