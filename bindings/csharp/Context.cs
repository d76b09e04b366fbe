using System;
using System.Collections.Generic;
using Dsinfer.Internal;

namespace Dsinfer
{
    /// <summary>
    /// One sequence and its caches (dsi_context). One thread at a time: a concurrent call from
    /// another thread fails with DsinferException Busy.
    /// </summary>
    /// <summary>A context's performance counters (dsi_context_perf); times in milliseconds.</summary>
    public struct ContextPerf
    {
        public readonly double LoadMs, PromptMs, DecodeMs;
        public readonly long PromptTokens, DecodeTokens;

        internal ContextPerf(Dsinfer.Internal.ContextPerf p)
        {
            LoadMs = p.load_ms;
            PromptMs = p.prompt_ms;
            PromptTokens = p.prompt_tokens;
            DecodeMs = p.decode_ms;
            DecodeTokens = p.decode_tokens;
        }
    }

    /// <summary>A sampler's counters (dsi_sampler_perf): successful sample calls and their milliseconds.</summary>
    public struct SamplerPerf
    {
        public readonly double SampleMs;
        public readonly long Samples;

        internal SamplerPerf(double sampleMs, long samples) { SampleMs = sampleMs; Samples = samples; }
    }

    public sealed class Context : NativeObject<SWIGTYPE_p_dsi_context>
    {
        readonly Callbacks sessionCallbacks;                      // the session's log sink
        readonly List<Callbacks> abortCallbacks = new List<Callbacks>(); // every one set, until free
        public Session Session { get; }

        /// <summary>Owns p and one reference to the session's callbacks (its log sink serves this context).</summary>
        Context(Session session, SWIGTYPE_p_dsi_context p, Callbacks abort) : base("context")
        {
            Own(p);
            Session = session;
            sessionCallbacks = session.Callbacks.Retain();
            if (abort != null) abortCallbacks.Add(abort);
        }

        internal static Context Create(Session session, int nCtx, AbortHandler abort)
        {
            var cb = abort != null ? new Callbacks { Abort = abort } : null;
            using (var call = new Call())
            {
                var p = DsinferNative.dsib_context_create(session.Ptr, nCtx, 0, cb, call.Ptr);
                if (call.StatusCode != 0)
                {
                    cb?.Release();
                    call.Check();
                }
                return new Context(session, p, cb);
            }
        }

        internal override void Free(SWIGTYPE_p_dsi_context p)
        {
            DsinferNative.dsi_context_free(p);
            sessionCallbacks.Release();
            lock (abortCallbacks)
            {
                foreach (var cb in abortCallbacks) cb.Release();
                abortCallbacks.Clear();
            }
        }

        /// <summary>Replaces the abort handler (null clears it); may be called from any thread.</summary>
        public void SetAbort(AbortHandler abort)
        {
            var p = Ptr; // throws once disposed, before anything is kept
            Callbacks cb = null;
            if (abort != null)
            {
                cb = new Callbacks { Abort = abort };
                lock (abortCallbacks) abortCallbacks.Add(cb);
            }
            using (var call = new Call())
            {
                DsinferNative.dsib_context_set_abort(p, cb, call.Ptr);
                call.Check();
            }
        }

        /// <summary>Appends ids and runs the model over them (allLogits: keep every token's logits).</summary>
        public void Eval(int[] ids, bool allLogits = false)
        {
            using (var call = new Call())
            {
                DsinferNative.dsib_context_eval(Ptr, ids, (ulong)ids.Length, allLogits ? 1u : 0u, call.Ptr);
                call.Check();
            }
        }

        public void Eval(int id) => Eval(new[] { id });

        /// <summary>The logits of token index of the last eval (-1 = its last).</summary>
        public float[] Logits(int index = -1)
        {
            var outp = new float[Session.NVocab];
            using (var call = new Call())
            {
                DsinferNative.dsib_context_logits(Ptr, index, outp, (ulong)outp.Length, call.Ptr);
                call.Check();
            }
            return outp;
        }

        public int Length => DsinferNative.dsi_context_length(Ptr);
        public int NCtx => DsinferNative.dsi_context_n_ctx(Ptr);
        public int ReusedTokens => DsinferNative.dsi_context_reused_tokens(Ptr);

        /// <summary>Performance counters since creation or the last ResetPerf().</summary>
        public ContextPerf Perf
        {
            get { using (var p = DsinferNative.dsi_context_perf_get(Ptr)) return new ContextPerf(p); }
        }

        /// <summary>Sets the prompt and decode counters to zero (not LoadMs).</summary>
        public void ResetPerf() => DsinferNative.dsi_context_perf_reset(Ptr);

        public int[] Tokens()
        {
            int n = DsinferNative.dsib_context_tokens(Ptr, new int[0], 0);
            var ids = new int[n];
            if (n > 0) DsinferNative.dsib_context_tokens(Ptr, ids, (ulong)n);
            return ids;
        }

        public void Clear()
        {
            using (var call = new Call()) { DsinferNative.dsib_context_clear(Ptr, call.Ptr); call.Check(); }
        }

        public void Truncate(int length)
        {
            using (var call = new Call()) { DsinferNative.dsib_context_truncate(Ptr, length, call.Ptr); call.Check(); }
        }

        /// <summary>A new context sharing this one's tokens and cache pages.</summary>
        public Context Fork()
        {
            using (var call = new Call())
            {
                var p = DsinferNative.dsib_context_fork(Ptr, call.Ptr);
                call.Check();
                return new Context(Session, p, null);
            }
        }

        public byte[] SaveState(Sampler sampler = null)
        {
            using (var call = new Call())
            {
                DsinferNative.dsib_context_save_state(Ptr, sampler?.Ptr, call.Ptr);
                return call.Bytes();
            }
        }

        public void LoadState(byte[] state, Sampler sampler = null)
        {
            using (var call = new Call())
            {
                DsinferNative.dsib_context_load_state(Ptr, state, (ulong)state.Length, sampler?.Ptr, call.Ptr);
                call.Check();
            }
        }

        public void SaveStateFile(string path, Sampler sampler = null)
        {
            using (var call = new Call())
            {
                DsinferNative.dsib_context_save_state_file(Ptr, sampler?.Ptr, Call.Path(path), call.Ptr);
                call.Check();
            }
        }

        public void LoadStateFile(string path, Sampler sampler = null)
        {
            using (var call = new Call())
            {
                DsinferNative.dsib_context_load_state_file(Ptr, Call.Path(path), sampler?.Ptr, call.Ptr);
                call.Check();
            }
        }

        /// <summary>
        /// Generates up to maxTokens: samples, streams each token with the text it completed to
        /// onToken, evaluates it; stops at an end-of-generation token or when onToken returns false.
        /// </summary>
        public int[] Generate(Sampler sampler, int maxTokens, TokenHandler onToken = null)
        {
            var eog = new HashSet<int>(Session.EogTokens());
            Detokenizer detok = null;
            try
            {
                try { detok = Session.Tokenizer().Detokenizer(true); }
                catch (DsinferException) { }
                var outp = new List<int>();
                while (outp.Count < maxTokens)
                {
                    int id = sampler.Sample(this);
                    if (eog.Contains(id)) break;
                    outp.Add(id);
                    string text = detok == null ? "" : detok.Push(id);
                    Eval(id);
                    if (onToken != null && !onToken(id, text)) break;
                }
                if (detok != null && onToken != null)
                {
                    var rest = detok.Flush();
                    if (rest.Length > 0) onToken(-1, rest);
                }
                return outp.ToArray();
            }
            finally
            {
                detok?.Dispose();
            }
        }
    }

    /// <summary>A sampling chain with its own random state (dsi_sampler). One thread at a time.</summary>
    public sealed class Sampler : NativeObject<SWIGTYPE_p_dsi_sampler>
    {

        /// <summary>Defaults are the library's: temperature 0.8, top-k 40, top-p 0.95, min-p 0.05.</summary>
        public Sampler(float temperature = 0.8f, int topK = 40, float topP = 0.95f, float minP = 0.05f,
                       ulong seed = 0x5EED, float repeatPenalty = 1f, int penaltyLastN = 64) : base("sampler")
        {
            var p = DsinferNative.dsi_sampler_default_params();
            p.temperature = temperature;
            p.top_k = topK;
            p.top_p = topP;
            p.min_p = minP;
            p.seed = seed;
            p.repeat_penalty = repeatPenalty;
            p.penalty_last_n = penaltyLastN;
            using (var call = new Call())
            {
                var s = DsinferNative.dsib_sampler_create(p, call.Ptr);
                p.Dispose();
                call.Check();
                Own(s);
            }
        }

        public static Sampler Greedy() => new Sampler(temperature: 0);

        internal override void Free(SWIGTYPE_p_dsi_sampler p) => DsinferNative.dsi_sampler_free(p);

        public int Sample(Context ctx)
        {
            using (var call = new Call())
            {
                int tok = DsinferNative.dsib_sampler_sample(Ptr, ctx.Ptr, call.Ptr);
                call.Check();
                return tok;
            }
        }

        public int Sample(float[] logits, int[] history)
        {
            using (var call = new Call())
            {
                int tok = DsinferNative.dsib_sampler_sample_logits(Ptr, logits, (ulong)logits.Length, history,
                                                                   (ulong)history.Length, call.Ptr);
                call.Check();
                return tok;
            }
        }

        /// <summary>Sampling counters since creation or the last ResetPerf().</summary>
        public SamplerPerf Perf
        {
            get { using (var p = DsinferNative.dsi_sampler_perf_get(Ptr)) return new SamplerPerf(p.sample_ms, p.samples); }
        }

        /// <summary>Sets the sampling counters to zero.</summary>
        public void ResetPerf() => DsinferNative.dsi_sampler_perf_reset(Ptr);

        public void Reset(ulong seed)
        {
            using (var call = new Call()) { DsinferNative.dsib_sampler_reset(Ptr, seed, call.Ptr); call.Check(); }
        }

        /// <summary>Replaces the logit bias: tokens[i] gets biases[i] (float.NegativeInfinity bans it).</summary>
        public void SetLogitBias(int[] tokens, float[] biases)
        {
            using (var call = new Call())
            {
                DsinferNative.dsib_sampler_set_logit_bias(Ptr, tokens, (ulong)tokens.Length, biases, (ulong)biases.Length, call.Ptr);
                call.Check();
            }
        }
    }
}
