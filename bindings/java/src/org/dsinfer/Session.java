package org.dsinfer;

import java.util.Arrays;
import org.dsinfer.internal.SWIGTYPE_p_dsi_session;
import org.dsinfer.internal.SWIGTYPE_p_dsib_batch;
import org.dsinfer.internal.SessionParams;
import org.dsinfer.internal.dsi_backend;
import org.dsinfer.internal.dsi_log_level;
import org.dsinfer.internal.dsinfer_native;

/**
 * A model loaded on a backend (dsi_session): immutable, shared by any number of contexts
 * and threads. Close it when done; contexts created from it keep working after that.
 */
public final class Session implements AutoCloseable {
    /** What {@link #open(String, Options)} takes; the defaults are the library's. */
    public static final class Options {
        String backend = "auto";
        int threads;
        String tokenizerPath;
        long cacheBudget;
        int logLevel = Dsinfer.LOG_WARN;
        Listeners.Progress progress;
        Listeners.Log log;

        /** "auto" (default), "cpu" or "cuda". */
        public Options backend(String b) { backend = b; return this; }
        /** CPU threads; 0 = all. */
        public Options threads(int n) { threads = n; return this; }
        public Options tokenizerPath(String p) { tokenizerPath = p; return this; }
        /** Bytes for all contexts' cache pages; 0 = the library's default. */
        public Options cacheBudget(long bytes) { cacheBudget = bytes; return this; }
        public Options progress(Listeners.Progress p) { progress = p; return this; }
        /** This session's own log sink, from level minLevel (Dsinfer.LOG_*). */
        public Options log(Listeners.Log l, int minLevel) { log = l; logLevel = minLevel; return this; }
    }

    private final Owned<SWIGTYPE_p_dsi_session> handle;
    private final Callbacks callbacks;
    private final int nVocab;

    static {
        Native.ensureLoaded();
    }

    private Session(SWIGTYPE_p_dsi_session ptr, Callbacks cb) {
        callbacks = cb;
        handle = new Owned<>(this, ptr, p -> {
            dsinfer_native.dsi_session_free(p);
            cb.release();
        }, "session");
        nVocab = dsinfer_native.dsi_session_n_vocab(ptr);
    }

    /** Opens a checkpoint directory with the default options. */
    public static Session open(String modelDir) { return open(modelDir, new Options()); }

    /** Opens a checkpoint directory; throws DsinferException with the library's message on failure. */
    public static Session open(String modelDir, Options o) {
        SessionParams p = dsinfer_native.dsi_session_default_params();
        switch (o.backend) {
            case "cpu": p.setBackend(dsi_backend.DSI_BACKEND_CPU); break;
            case "cuda": p.setBackend(dsi_backend.DSI_BACKEND_CUDA); break;
            case "auto": break;
            default: throw new IllegalArgumentException("backend must be auto, cpu or cuda: " + o.backend);
        }
        p.setN_threads(o.threads);
        p.setCache_budget(o.cacheBudget);
        p.setLog_level(dsi_log_level.swigToEnum(o.logLevel));
        Callbacks cb = new Callbacks();
        cb.progress = o.progress;
        cb.log = o.log;
        int want = (o.progress != null ? 1 : 0) | (o.log != null ? 2 : 0);
        try (Native.Call call = new Native.Call()) {
            SWIGTYPE_p_dsi_session s = dsinfer_native.dsib_session_open(
                Native.utf8(modelDir), p, o.tokenizerPath == null ? null : Native.path(o.tokenizerPath), cb, want, call.ptr);
            p.delete();
            if (call.status() != 0) {
                cb.release();
                call.check();
            }
            return new Session(s, cb);
        }
    }

    SWIGTYPE_p_dsi_session ptr() { return handle.get(); }

    Callbacks callbacks() { return callbacks; }

    /** Frees the application's handle (idempotent); contexts keep the model until they close. */
    @Override
    public void close() { handle.close(); }

    public int nVocab() { return nVocab; }
    public int nCtxTrain() { return dsinfer_native.dsi_session_n_ctx_train(ptr()); }
    public int bosToken() { return dsinfer_native.dsi_session_bos_token(ptr()); }
    public int eosToken() { return dsinfer_native.dsi_session_eos_token(ptr()); }
    public String describe() { return dsinfer_native.dsi_session_describe(ptr()); }

    /** Parameters (weight elements) of the tensors the forward pass uses. */
    public long nParams() { return dsinfer_native.dsi_session_n_params(ptr()); }
    /** Bytes of those tensors in memory (FP8 weights with their scales). */
    public long weightBytes() { return dsinfer_native.dsi_session_weight_bytes(ptr()); }

    /**
     * A config.json value by its key ("hidden_size", "index_topk", ...: the keys of
     * dsi_config_key); throws DsinferException INVALID_ARGUMENT for any other key.
     */
    public long configValue(String key) {
        long v = dsinfer_native.dsib_session_config_value(ptr(), Native.utf8(key));
        if (v < 0) throw new DsinferException(Status.INVALID_ARGUMENT, "not a dsi_config_key: " + key);
        return v;
    }

    /** The token's attributes (Tokenizer.ATTR_* bits, ATTR_EOG for end-of-generation ids). */
    public int tokenAttr(int id) { return (int) dsinfer_native.dsi_session_token_attr(ptr(), id); }

    /** The state of the session's cache pool (dsi_cache_stats): pages of all its contexts. */
    public static final class CacheStats {
        public final long budgetBytes, pageBytes, nPages, pagesInUse, pagesShared, pagesCached, pagesFree, nContexts;
        public final int pageTokens;

        CacheStats(org.dsinfer.internal.CacheStats s) {
            budgetBytes = s.getBudget_bytes();
            pageBytes = s.getPage_bytes();
            pageTokens = s.getPage_tokens();
            nPages = s.getN_pages();
            pagesInUse = s.getPages_in_use();
            pagesShared = s.getPages_shared();
            pagesCached = s.getPages_cached();
            pagesFree = s.getPages_free();
            nContexts = s.getN_contexts();
        }
    }

    public CacheStats cacheStats() {
        org.dsinfer.internal.CacheStats s = new org.dsinfer.internal.CacheStats();
        try (Native.Call call = new Native.Call()) {
            dsinfer_native.dsib_session_cache_stats(ptr(), s, call.ptr);
            call.check();
            return new CacheStats(s);
        } finally {
            s.delete();
        }
    }

    /** The end-of-generation ids. */
    public int[] eogTokens() {
        int n = dsinfer_native.dsib_session_eog_tokens(ptr(), new int[0], 0);
        int[] ids = new int[n];
        if (n > 0) dsinfer_native.dsib_session_eog_tokens(ptr(), ids, n);
        return ids;
    }

    /** The session's tokenizer; usable while this session is open. Throws if the model has none. */
    public Tokenizer tokenizer() {
        var t = dsinfer_native.dsib_session_tokenizer(ptr());
        if (t == null) throw new DsinferException(Status.INVALID_ARGUMENT, "the model directory has no tokenizer.json");
        return new Tokenizer(t, this);
    }

    /** A new context with the model's maximum length. */
    public Context newContext() { return newContext(0, null); }

    /** A new context of nCtx tokens (0 = the model's maximum), with an optional abort listener. */
    public Context newContext(int nCtx, Listeners.Abort abort) { return Context.create(this, nCtx, abort); }

    /** One item of {@link #evalBatch}: ids appended to a context, as Context.eval takes them. */
    public static final class BatchItem {
        final Context context;
        final int[] ids;
        final boolean allLogits;

        public BatchItem(Context context, int[] ids, boolean allLogits) {
            this.context = context;
            this.ids = ids.clone();
            this.allLogits = allLogits;
        }

        public BatchItem(Context context, int[] ids) { this(context, ids, false); }
    }

    /** Advances every item's context in shared forward passes; all or nothing. */
    public void evalBatch(BatchItem... items) {
        SWIGTYPE_p_dsib_batch b = dsinfer_native.dsib_batch_new();
        if (b == null) throw new OutOfMemoryError("dsinfer: batch");
        try (Native.Call call = new Native.Call()) {
            for (BatchItem it : items) {
                int st = dsinfer_native.dsib_batch_add(b, it.context.ptr(), it.ids, it.ids.length, it.allLogits ? 1 : 0);
                if (st != 0) throw new DsinferException(st, "batch item " + Arrays.asList(items).indexOf(it));
            }
            dsinfer_native.dsib_session_eval_batch(ptr(), b, call.ptr);
            call.check();
        } finally {
            dsinfer_native.dsib_batch_free(b);
        }
    }
}
