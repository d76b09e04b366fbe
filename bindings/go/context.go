package dsinfer

import (
	"runtime"
	"sync"

	"github.com/dsinfer/dsinfer/bindings/go/internal/native"
)

// Context is one sequence and its caches. Used by one goroutine at a time: a concurrent
// call from another fails with StatusBusy.
type Context struct {
	mu         sync.Mutex // guards ptr and abortCbs against Close
	ptr        native.Struct_SS_dsi_context
	session    *Session
	sessionCbs *callbacks   // the session's log sink
	abortCbs   []*callbacks // every abort handler set, until Close
}

// Close frees the context. Idempotent.
func (c *Context) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ptr != nil {
		native.Dsi_context_free(c.ptr)
		c.ptr = nil
	}
	if c.sessionCbs != nil {
		c.sessionCbs.release()
		c.sessionCbs = nil
	}
	for _, cb := range c.abortCbs {
		cb.release()
	}
	c.abortCbs = nil
	return nil
}

func (c *Context) handle() (native.Struct_SS_dsi_context, error) {
	if c.ptr == nil {
		return nil, errClosed
	}
	return c.ptr, nil
}

// Session is the session the context was created from.
func (c *Context) Session() *Session { return c.session }

// SetAbort replaces the abort handler (nil clears it); may be called from any goroutine.
func (c *Context) SetAbort(abort func() bool) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	ptr, err := c.handle()
	if err != nil {
		return err
	}
	h := c.addAbort(abort)
	cl := newCall()
	defer cl.free()
	native.Dsib_context_set_abort(ptr, h, cl.p)
	return cl.err()
}

// addAbort keeps a handler's callbacks until Close; the handle for C (0 for nil).
func (c *Context) addAbort(abort func() bool) uint {
	if abort == nil {
		return 0
	}
	cb := newCallbacks()
	cb.abort = abort
	c.abortCbs = append(c.abortCbs, cb)
	return uint(cb.handle)
}

// status runs f with the context's handle and a call record, and returns the call's error.
func (c *Context) status(f func(native.Struct_SS_dsi_context, native.Struct_SS_dsib_call)) error {
	ptr, err := c.handle()
	if err != nil {
		return err
	}
	cl := newCall()
	defer cl.free()
	f(ptr, cl.p)
	runtime.KeepAlive(c)
	return cl.err()
}

// Eval appends ids and runs the model over them, keeping the last token's logits.
func (c *Context) Eval(ids ...int32) error { return c.EvalFlags(ids, false) }

// EvalFlags appends ids; allLogits keeps every token's logits.
func (c *Context) EvalFlags(ids []int32, allLogits bool) error {
	flags := uint(0)
	if allLogits {
		flags = 1
	}
	return c.status(func(p native.Struct_SS_dsi_context, cl native.Struct_SS_dsib_call) {
		native.Dsib_context_eval(p, ids, flags, cl)
	})
}

// Logits are the logits of token index of the last eval (-1 = its last).
func (c *Context) Logits(index int) ([]float32, error) {
	out := make([]float32, c.session.nVocab)
	err := c.status(func(p native.Struct_SS_dsi_context, cl native.Struct_SS_dsib_call) {
		native.Dsib_context_logits(p, index, out, cl)
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// Len is the number of tokens in the sequence (0 once closed).
func (c *Context) Len() int {
	if c.ptr == nil {
		return 0
	}
	return native.Dsi_context_length(c.ptr)
}

// NCtx is the context's capacity in tokens (0 once closed).
func (c *Context) NCtx() int {
	if c.ptr == nil {
		return 0
	}
	return native.Dsi_context_n_ctx(c.ptr)
}

// ReusedTokens counts the tokens taken from cached pages of a shared prefix.
func (c *Context) ReusedTokens() int {
	if c.ptr == nil {
		return 0
	}
	return native.Dsi_context_reused_tokens(c.ptr)
}

// ContextPerf is a context's performance counters (dsi_context_perf); times in milliseconds.
type ContextPerf struct {
	LoadMs, PromptMs, DecodeMs float64
	PromptTokens, DecodeTokens int64
}

// Perf is the counters since creation or the last ResetPerf (zero once closed).
func (c *Context) Perf() ContextPerf {
	if c.ptr == nil {
		return ContextPerf{}
	}
	p := native.Dsi_context_perf_get(c.ptr)
	defer native.DeleteDsi_context_perf(p)
	return ContextPerf{LoadMs: p.GetLoad_ms(), PromptMs: p.GetPrompt_ms(), DecodeMs: p.GetDecode_ms(),
		PromptTokens: p.GetPrompt_tokens(), DecodeTokens: p.GetDecode_tokens()}
}

// ResetPerf sets the prompt and decode counters to zero (not LoadMs).
func (c *Context) ResetPerf() error {
	if c.ptr == nil {
		return errClosed
	}
	native.Dsi_context_perf_reset(c.ptr)
	return nil
}

// Tokens is the token history.
func (c *Context) Tokens() []int32 {
	if c.ptr == nil {
		return nil
	}
	n := native.Dsib_context_tokens(c.ptr, nil)
	ids := make([]int32, n)
	if n > 0 {
		native.Dsib_context_tokens(c.ptr, ids)
	}
	return ids
}

// Clear forgets every token and gives the cache pages back.
func (c *Context) Clear() error {
	return c.status(func(p native.Struct_SS_dsi_context, cl native.Struct_SS_dsib_call) { native.Dsib_context_clear(p, cl) })
}

// Truncate keeps the first length tokens.
func (c *Context) Truncate(length int) error {
	return c.status(func(p native.Struct_SS_dsi_context, cl native.Struct_SS_dsib_call) {
		native.Dsib_context_truncate(p, length, cl)
	})
}

// Fork is a new context sharing this one's tokens and cache pages.
func (c *Context) Fork() (*Context, error) {
	f := &Context{session: c.session}
	err := c.status(func(p native.Struct_SS_dsi_context, cl native.Struct_SS_dsib_call) {
		f.ptr = native.Dsib_context_fork(p, cl)
	})
	if err != nil {
		return nil, err
	}
	f.sessionCbs = c.sessionCbs.retain()
	runtime.SetFinalizer(f, (*Context).Close)
	return f, nil
}

func samplerPtr(s *Sampler) native.Struct_SS_dsi_sampler {
	if s == nil || s.ptr == nil {
		return native.SwigcptrStruct_SS_dsi_sampler(0)
	}
	return s.ptr
}

// SaveState returns the context's tokens, caches and logits (and sampler's state, if not nil).
func (c *Context) SaveState(sampler *Sampler) ([]byte, error) {
	var out []byte
	err := c.status(func(p native.Struct_SS_dsi_context, cl native.Struct_SS_dsib_call) {
		if native.Dsib_context_save_state(p, samplerPtr(sampler), cl) == 0 {
			out = []byte(call{cl}.bytes())
		}
	})
	runtime.KeepAlive(sampler)
	return out, err
}

// LoadState replaces the context's state (and sampler's, if not nil) with a saved one.
func (c *Context) LoadState(state []byte, sampler *Sampler) error {
	err := c.status(func(p native.Struct_SS_dsi_context, cl native.Struct_SS_dsib_call) {
		native.Dsib_context_load_state(p, string(state), samplerPtr(sampler), cl)
	})
	runtime.KeepAlive(sampler)
	return err
}

// SaveStateFile writes SaveState's bytes to path.
func (c *Context) SaveStateFile(path string, sampler *Sampler) error {
	err := c.status(func(p native.Struct_SS_dsi_context, cl native.Struct_SS_dsib_call) {
		native.Dsib_context_save_state_file(p, samplerPtr(sampler), path, cl)
	})
	runtime.KeepAlive(sampler)
	return err
}

// LoadStateFile reads a state written by SaveStateFile.
func (c *Context) LoadStateFile(path string, sampler *Sampler) error {
	err := c.status(func(p native.Struct_SS_dsi_context, cl native.Struct_SS_dsib_call) {
		native.Dsib_context_load_state_file(p, path, samplerPtr(sampler), cl)
	})
	runtime.KeepAlive(sampler)
	return err
}

// Generate samples up to maxTokens after what was evaluated, streaming each token and the
// text it completed to onToken (may be nil; return false to stop), and evaluating it. It
// stops at an end-of-generation token. Returns the generated ids.
func (c *Context) Generate(s *Sampler, maxTokens int, onToken func(id int32, text string) bool) ([]int32, error) {
	eog := map[int32]bool{}
	for _, id := range c.session.EogTokens() {
		eog[id] = true
	}
	var detok *Detokenizer
	if tok, err := c.session.Tokenizer(); err == nil {
		if detok, err = tok.Detokenizer(true); err != nil {
			return nil, err
		}
		defer detok.Close()
	}
	var out []int32
	for len(out) < maxTokens {
		id, err := s.Sample(c)
		if err != nil {
			return out, err
		}
		if eog[id] {
			break
		}
		out = append(out, id)
		text := ""
		if detok != nil {
			if text, err = detok.Push(id); err != nil {
				return out, err
			}
		}
		if err := c.Eval(id); err != nil {
			return out, err
		}
		if onToken != nil && !onToken(id, text) {
			break
		}
	}
	if detok != nil && onToken != nil {
		if rest, err := detok.Flush(); err == nil && rest != "" {
			onToken(-1, rest)
		}
	}
	return out, nil
}
