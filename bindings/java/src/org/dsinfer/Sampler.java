package org.dsinfer;

import org.dsinfer.internal.SWIGTYPE_p_dsi_sampler;
import org.dsinfer.internal.SamplerParams;
import org.dsinfer.internal.dsinfer_native;

/** A sampling chain with its own random state (dsi_sampler). One thread at a time. */
public final class Sampler implements AutoCloseable {
    /** The chain's parameters; the defaults are the library's (temperature 0.8, top-k 40, ...). */
    public static final class Params {
        public float temperature = 0.8f, topP = 0.95f, minP = 0.05f, repeatPenalty = 1f,
            frequencyPenalty = 0f, presencePenalty = 0f;
        public int topK = 40, penaltyLastN = 64;
        public long seed = 0x5EED;

        public Params temperature(float t) { temperature = t; return this; }
        public Params topK(int k) { topK = k; return this; }
        public Params topP(float p) { topP = p; return this; }
        public Params minP(float p) { minP = p; return this; }
        public Params seed(long s) { seed = s; return this; }
    }

    private final Owned<SWIGTYPE_p_dsi_sampler> handle;

    /** A sampler with the given parameters. */
    public Sampler(Params p) {
        Native.ensureLoaded();
        SamplerParams sp = dsinfer_native.dsi_sampler_default_params();
        sp.setTemperature(p.temperature);
        sp.setTop_k(p.topK);
        sp.setTop_p(p.topP);
        sp.setMin_p(p.minP);
        sp.setRepeat_penalty(p.repeatPenalty);
        sp.setFrequency_penalty(p.frequencyPenalty);
        sp.setPresence_penalty(p.presencePenalty);
        sp.setPenalty_last_n(p.penaltyLastN);
        sp.setSeed(p.seed);
        try (Native.Call call = new Native.Call()) {
            SWIGTYPE_p_dsi_sampler s = dsinfer_native.dsib_sampler_create(sp, call.ptr);
            sp.delete();
            call.check();
            handle = new Owned<>(this, s, dsinfer_native::dsi_sampler_free, "sampler");
        }
    }

    /** The default chain with a seed. */
    public Sampler(long seed) { this(new Params().seed(seed)); }

    /** Greedy: the argmax (lowest id on ties). */
    public static Sampler greedy() { return new Sampler(new Params().temperature(0)); }

    SWIGTYPE_p_dsi_sampler ptr() { return handle.get(); }

    @Override
    public void close() { handle.close(); }

    /** The next token from ctx's last logits (not appended: evaluate it next). */
    public int sample(Context ctx) {
        try (Native.Call call = new Native.Call()) {
            int tok = dsinfer_native.dsib_sampler_sample(ptr(), ctx.ptr(), call.ptr);
            call.check();
            return tok;
        }
    }

    /** The same chain over given logits and history. */
    public int sample(float[] logits, int[] history) {
        try (Native.Call call = new Native.Call()) {
            int tok = dsinfer_native.dsib_sampler_sample_logits(ptr(), logits, logits.length, history, history.length, call.ptr);
            call.check();
            return tok;
        }
    }

    /** Sampling time (dsi_sampler_perf): successful sample calls and their milliseconds. */
    public static final class Perf {
        public final double sampleMs;
        public final long samples;

        Perf(double sampleMs, long samples) {
            this.sampleMs = sampleMs;
            this.samples = samples;
        }
    }

    /** The counters since creation or the last resetPerf(). */
    public Perf perf() {
        org.dsinfer.internal.SamplerPerf p = dsinfer_native.dsi_sampler_perf_get(ptr());
        try {
            return new Perf(p.getSample_ms(), p.getSamples());
        } finally {
            p.delete();
        }
    }

    /** Sets the counters to zero. */
    public void resetPerf() { dsinfer_native.dsi_sampler_perf_reset(ptr()); }

    /** Restores the random state to that of a new sampler with seed. */
    public void reset(long seed) {
        try (Native.Call call = new Native.Call()) {
            dsinfer_native.dsib_sampler_reset(ptr(), seed, call.ptr);
            call.check();
        }
    }

    /** Replaces the logit bias: tokens[i] gets biases[i] (Float.NEGATIVE_INFINITY bans it). */
    public void setLogitBias(int[] tokens, float[] biases) {
        try (Native.Call call = new Native.Call()) {
            dsinfer_native.dsib_sampler_set_logit_bias(ptr(), tokens, tokens.length, biases, biases.length, call.ptr);
            call.check();
        }
    }
}
