using System;
using System.Text;
using Dsinfer.Internal;

namespace Dsinfer
{
    /// <summary>Where a session runs: Auto = CUDA when built in and a GPU is present, else the CPU.</summary>
    public enum Backend { Auto = 0, Cpu = 1, Cuda = 2 }

    /// <summary>What Session.Open takes; the defaults are the library's.</summary>
    public sealed class SessionOptions
    {
        public Backend Backend = Backend.Auto;
        public int Threads;
        public string TokenizerPath;
        public long CacheBudget;
        public LogLevel LogLevel = LogLevel.Warn;
        public ProgressHandler Progress;
        /// <summary>This session's own log sink (from LogLevel on).</summary>
        public LogHandler Log;
    }

    /// <summary>The state of a session's cache pool (dsi_cache_stats): pages of all its contexts.</summary>
    public sealed class CacheStats
    {
        public readonly ulong BudgetBytes, PageBytes;
        public readonly int PageTokens;
        public readonly long NPages, PagesInUse, PagesShared, PagesCached, PagesFree, NContexts;

        internal CacheStats(Dsinfer.Internal.CacheStats s)
        {
            BudgetBytes = s.budget_bytes;
            PageBytes = s.page_bytes;
            PageTokens = s.page_tokens;
            NPages = s.n_pages;
            PagesInUse = s.pages_in_use;
            PagesShared = s.pages_shared;
            PagesCached = s.pages_cached;
            PagesFree = s.pages_free;
            NContexts = s.n_contexts;
        }
    }

    /// <summary>One item of Session.EvalBatch: ids appended to a context.</summary>
    public sealed class BatchItem
    {
        public Context Context;
        public int[] Ids;
        public bool AllLogits;
        public BatchItem(Context context, int[] ids, bool allLogits = false) { Context = context; Ids = ids; AllLogits = allLogits; }
    }

    /// <summary>
    /// A model loaded on a backend (dsi_session): immutable, shared by any number of contexts and
    /// threads. Dispose it when done; contexts created from it keep working after that.
    /// </summary>
    public sealed class Session : NativeObject<SWIGTYPE_p_dsi_session>
    {
        internal readonly Callbacks Callbacks;
        public int NVocab { get; }

        Session(SWIGTYPE_p_dsi_session p, Callbacks cb) : base("session")
        {
            Own(p);
            Callbacks = cb;
            NVocab = DsinferNative.dsi_session_n_vocab(p);
        }

        public static Session Open(string modelDir, SessionOptions o = null)
        {
            o = o ?? new SessionOptions();
            var p = DsinferNative.dsi_session_default_params();
            p.backend = (dsi_backend)(int)o.Backend;
            p.n_threads = o.Threads;
            p.cache_budget = (ulong)o.CacheBudget;
            p.log_level = (dsi_log_level)(int)o.LogLevel;
            var cb = new Callbacks { Progress = o.Progress, Log = o.Log };
            int want = (o.Progress != null ? 1 : 0) | (o.Log != null ? 2 : 0);
            var dir = Call.Utf8(modelDir);
            using (var call = new Call())
            {
                var s = DsinferNative.dsib_session_open(dir, (ulong)dir.Length, p, Call.Path(o.TokenizerPath), cb, want, call.Ptr);
                p.Dispose();
                if (call.StatusCode != 0)
                {
                    cb.Release();
                    call.Check();
                }
                return new Session(s, cb);
            }
        }

        /// <summary>Frees the application's handle (Dispose); contexts keep the model until they are disposed.</summary>
        internal override void Free(SWIGTYPE_p_dsi_session p)
        {
            DsinferNative.dsi_session_free(p);
            Callbacks.Release();
        }

        public int NCtxTrain => DsinferNative.dsi_session_n_ctx_train(Ptr);
        public int BosToken => DsinferNative.dsi_session_bos_token(Ptr);
        public int EosToken => DsinferNative.dsi_session_eos_token(Ptr);
        public string Describe() => DsinferNative.dsi_session_describe(Ptr);
        /// <summary>Parameters (weight elements) of the tensors the forward pass uses.</summary>
        public long NParams => DsinferNative.dsi_session_n_params(Ptr);
        /// <summary>Bytes of those tensors in memory (FP8 weights with their scales).</summary>
        public long WeightBytes => DsinferNative.dsi_session_weight_bytes(Ptr);

        /// <summary>A config.json value by its key ("hidden_size", ...: the keys of dsi_config_key);
        /// DsinferException InvalidArgument for any other key.</summary>
        public long ConfigValue(string key)
        {
            byte[] b = Encoding.UTF8.GetBytes(key);
            long v = DsinferNative.dsib_session_config_value(Ptr, b, (ulong)b.Length);
            if (v < 0) throw new DsinferException(Status.InvalidArgument, "not a dsi_config_key: " + key);
            return v;
        }

        /// <summary>The token's attributes (TokenAttr bits; Eog for end-of-generation ids).</summary>
        public TokenAttr TokenAttributes(int id) => (TokenAttr)DsinferNative.dsi_session_token_attr(Ptr, id);

        public CacheStats CacheStats()
        {
            using (var s = new Dsinfer.Internal.CacheStats())
            using (var call = new Call())
            {
                DsinferNative.dsib_session_cache_stats(Ptr, s, call.Ptr);
                call.Check();
                return new CacheStats(s);
            }
        }

        public int[] EogTokens()
        {
            int n = DsinferNative.dsib_session_eog_tokens(Ptr, new int[0], 0);
            var ids = new int[n];
            if (n > 0) DsinferNative.dsib_session_eog_tokens(Ptr, ids, (ulong)n);
            return ids;
        }

        /// <summary>The session's tokenizer, usable while the session is not disposed.</summary>
        public Tokenizer Tokenizer()
        {
            var t = DsinferNative.dsib_session_tokenizer(Ptr);
            if (t == null) throw new DsinferException(Status.InvalidArgument, "the model directory has no tokenizer.json");
            return new Tokenizer(t, this);
        }

        /// <summary>A new context of nCtx tokens (0 = the model's maximum).</summary>
        public Context NewContext(int nCtx = 0, AbortHandler abort = null) => Context.Create(this, nCtx, abort);

        /// <summary>Advances every item's context in shared forward passes; all or nothing.</summary>
        public void EvalBatch(params BatchItem[] items)
        {
            var b = DsinferNative.dsib_batch_new();
            try
            {
                for (int i = 0; i < items.Length; i++)
                {
                    int st = DsinferNative.dsib_batch_add(b, items[i].Context.Ptr, items[i].Ids, (ulong)items[i].Ids.Length,
                                                          items[i].AllLogits ? 1u : 0u);
                    if (st != 0) throw new DsinferException(st, "batch item " + i);
                }
                using (var call = new Call())
                {
                    DsinferNative.dsib_session_eval_batch(Ptr, b, call.Ptr);
                    call.Check();
                }
            }
            finally
            {
                DsinferNative.dsib_batch_free(b);
                GC.KeepAlive(items);
            }
        }
    }
}
