package dsinfer

import (
	"runtime"
	"sync"

	"github.com/dsinfer/dsinfer/bindings/go/internal/native"
)

// SamplerParams is the sampling chain; DefaultSamplerParams gives the library's defaults.
type SamplerParams struct {
	Temperature, TopP, MinP, RepeatPenalty, FrequencyPenalty, PresencePenalty float32
	TopK, PenaltyLastN                                                        int
	Seed                                                                      uint64
}

// DefaultSamplerParams: temperature 0.8, top-k 40, top-p 0.95, min-p 0.05, seed 0x5EED.
func DefaultSamplerParams() SamplerParams {
	p := native.Dsi_sampler_default_params()
	defer native.DeleteDsi_sampler_params(p)
	return SamplerParams{Temperature: p.GetTemperature(), TopP: p.GetTop_p(), MinP: p.GetMin_p(),
		RepeatPenalty: p.GetRepeat_penalty(), FrequencyPenalty: p.GetFrequency_penalty(),
		PresencePenalty: p.GetPresence_penalty(), TopK: p.GetTop_k(), PenaltyLastN: p.GetPenalty_last_n(),
		Seed: p.GetSeed()}
}

// Sampler is a sampling chain with its own random state. One goroutine at a time.
type Sampler struct {
	mu  sync.Mutex
	ptr native.Struct_SS_dsi_sampler
}

// NewSampler creates a sampler.
func NewSampler(sp SamplerParams) (*Sampler, error) {
	p := native.Dsi_sampler_default_params()
	defer native.DeleteDsi_sampler_params(p)
	p.SetTemperature(sp.Temperature)
	p.SetTop_k(sp.TopK)
	p.SetTop_p(sp.TopP)
	p.SetMin_p(sp.MinP)
	p.SetRepeat_penalty(sp.RepeatPenalty)
	p.SetFrequency_penalty(sp.FrequencyPenalty)
	p.SetPresence_penalty(sp.PresencePenalty)
	p.SetPenalty_last_n(sp.PenaltyLastN)
	p.SetSeed(sp.Seed)
	c := newCall()
	defer c.free()
	ptr := native.Dsib_sampler_create(p, c.p)
	if err := c.err(); err != nil {
		return nil, err
	}
	s := &Sampler{ptr: ptr}
	runtime.SetFinalizer(s, (*Sampler).Close)
	return s, nil
}

// Greedy is a sampler that takes the argmax (lowest id on ties).
func Greedy() (*Sampler, error) {
	p := DefaultSamplerParams()
	p.Temperature = 0
	return NewSampler(p)
}

// Close frees the sampler. Idempotent.
func (s *Sampler) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ptr != nil {
		native.Dsi_sampler_free(s.ptr)
		s.ptr = nil
	}
	return nil
}

// Sample picks the next token from ctx's last logits (not appended: evaluate it next).
func (s *Sampler) Sample(ctx *Context) (int32, error) {
	if s.ptr == nil || ctx.ptr == nil {
		return -1, errClosed
	}
	c := newCall()
	defer c.free()
	tok := native.Dsib_sampler_sample(s.ptr, ctx.ptr, c.p)
	runtime.KeepAlive(ctx)
	return int32(tok), c.err()
}

// SampleLogits runs the chain over given logits and history.
func (s *Sampler) SampleLogits(logits []float32, history []int32) (int32, error) {
	if s.ptr == nil {
		return -1, errClosed
	}
	c := newCall()
	defer c.free()
	tok := native.Dsib_sampler_sample_logits(s.ptr, logits, history, c.p)
	return int32(tok), c.err()
}

// SamplerPerf is a sampler's counters (dsi_sampler_perf): successful sample calls and their milliseconds.
type SamplerPerf struct {
	SampleMs float64
	Samples  int64
}

// Perf is the counters since creation or the last ResetPerf (zero once closed).
func (s *Sampler) Perf() SamplerPerf {
	if s.ptr == nil {
		return SamplerPerf{}
	}
	p := native.Dsi_sampler_perf_get(s.ptr)
	defer native.DeleteDsi_sampler_perf(p)
	return SamplerPerf{SampleMs: p.GetSample_ms(), Samples: p.GetSamples()}
}

// ResetPerf sets the counters to zero.
func (s *Sampler) ResetPerf() error {
	if s.ptr == nil {
		return errClosed
	}
	native.Dsi_sampler_perf_reset(s.ptr)
	return nil
}

// Reset restores the random state to that of a new sampler with seed.
func (s *Sampler) Reset(seed uint64) error {
	if s.ptr == nil {
		return errClosed
	}
	c := newCall()
	defer c.free()
	native.Dsib_sampler_reset(s.ptr, seed, c.p)
	return c.err()
}

// SetLogitBias replaces the logit bias: tokens[i] gets biases[i] (-Inf bans it).
func (s *Sampler) SetLogitBias(tokens []int32, biases []float32) error {
	if s.ptr == nil {
		return errClosed
	}
	c := newCall()
	defer c.free()
	native.Dsib_sampler_set_logit_bias(s.ptr, tokens, biases, c.p)
	return c.err()
}
