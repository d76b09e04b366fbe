package dsinfer

import (
	"errors"
	"fmt"
	"runtime"
	"sync"

	"github.com/dsinfer/dsinfer/bindings/go/internal/native"
)

// Options for Open; the zero value gives the library's defaults.
type Options struct {
	Backend       string                          // "auto" (default), "cpu" or "cuda"
	Threads       int                             // CPU threads; 0 = all
	TokenizerPath string                          // default: <model_dir>/tokenizer.json when present
	CacheBudget   int64                           // bytes for all contexts' cache pages; 0 = the library's default
	Progress      func(fraction float32) bool     // return false to cancel the load
	Log           func(level int, message string) // this session's own log sink
	LogLevel      int                             // least severe level delivered (with Log)
}

// Session is a loaded model: immutable, shared by any number of contexts and goroutines.
type Session struct {
	mu     sync.RWMutex
	ptr    native.Struct_SS_dsi_session
	cbs    *callbacks
	nVocab int
}

// Open loads a checkpoint directory. opts may be nil.
func Open(modelDir string, opts *Options) (*Session, error) {
	if opts == nil {
		opts = &Options{}
	}
	p := native.Dsi_session_default_params()
	defer native.DeleteDsi_session_params(p)
	switch opts.Backend {
	case "", "auto":
	case "cpu":
		p.SetBackend(native.DSI_BACKEND_CPU)
	case "cuda":
		p.SetBackend(native.DSI_BACKEND_CUDA)
	default:
		return nil, &Error{StatusInvalidArgument, fmt.Sprintf("backend must be auto, cpu or cuda: %q", opts.Backend)}
	}
	p.SetN_threads(opts.Threads)
	p.SetCache_budget(opts.CacheBudget)
	want := 0
	cb := newCallbacks()
	if opts.Progress != nil {
		cb.progress = opts.Progress
		want |= 1
	}
	if opts.Log != nil {
		cb.log = opts.Log
		p.SetLog_level(native.Enum_SS_dsi_log_level(opts.LogLevel))
		want |= 2
	}
	c := newCall()
	defer c.free()
	ptr := native.Dsib_session_open(modelDir, p, opts.TokenizerPath, uint(cb.handle), want, c.p)
	if err := c.err(); err != nil {
		cb.release()
		return nil, err
	}
	s := &Session{ptr: ptr, cbs: cb, nVocab: native.Dsi_session_n_vocab(ptr)}
	runtime.SetFinalizer(s, (*Session).Close)
	return s, nil
}

var errClosed = errors.New("dsinfer: use of a closed object")

func (s *Session) handle() (native.Struct_SS_dsi_session, error) {
	if s.ptr == nil {
		return nil, errClosed
	}
	return s.ptr, nil
}

// Close frees the application's handle; contexts keep the model until they close. Idempotent.
func (s *Session) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ptr != nil {
		native.Dsi_session_free(s.ptr)
		s.ptr = nil
		s.cbs.release()
	}
	return nil
}

// NVocab is the model's vocabulary size.
func (s *Session) NVocab() int { return s.nVocab }

// CacheStats is the state of a session's cache pool (dsi_cache_stats): pages of all its contexts.
type CacheStats struct {
	BudgetBytes, PageBytes                                             int64
	PageTokens                                                         int
	NPages, PagesInUse, PagesShared, PagesCached, PagesFree, NContexts int64
}

// CacheStats reads the pool's current state.
func (s *Session) CacheStats() (CacheStats, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	ptr, err := s.handle()
	if err != nil {
		return CacheStats{}, err
	}
	st := native.NewDsi_cache_stats()
	defer native.DeleteDsi_cache_stats(st)
	c := newCall()
	defer c.free()
	native.Dsib_session_cache_stats(ptr, st, c.p)
	if err := c.err(); err != nil {
		return CacheStats{}, err
	}
	return CacheStats{BudgetBytes: st.GetBudget_bytes(), PageBytes: st.GetPage_bytes(), PageTokens: st.GetPage_tokens(),
		NPages: st.GetN_pages(), PagesInUse: st.GetPages_in_use(), PagesShared: st.GetPages_shared(),
		PagesCached: st.GetPages_cached(), PagesFree: st.GetPages_free(), NContexts: st.GetN_contexts()}, nil
}

// value reads an accessor of the open session (def once closed).
func (s *Session) value(def int, f func(native.Struct_SS_dsi_session) int) int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.ptr == nil {
		return def
	}
	return f(s.ptr)
}

// NCtxTrain is the model's max_position_embeddings.
func (s *Session) NCtxTrain() int { return s.value(0, native.Dsi_session_n_ctx_train) }

// BosToken is config.json's bos_token_id, or -1.
func (s *Session) BosToken() int { return s.value(-1, native.Dsi_session_bos_token) }

// EosToken is config.json's eos_token_id, or -1.
func (s *Session) EosToken() int { return s.value(-1, native.Dsi_session_eos_token) }

// Describe is a one-line description of the model.
func (s *Session) Describe() string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.ptr == nil {
		return ""
	}
	return native.Dsi_session_describe(s.ptr)
}

// NParams is the number of parameters (weight elements) of the tensors the forward pass uses (0 once closed).
func (s *Session) NParams() int64 { return s.value64(native.Dsi_session_n_params) }

// WeightBytes is the bytes of those tensors in memory, FP8 weights with their scales (0 once closed).
func (s *Session) WeightBytes() int64 { return s.value64(native.Dsi_session_weight_bytes) }

func (s *Session) value64(f func(native.Struct_SS_dsi_session) int64) int64 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.ptr == nil {
		return 0
	}
	return f(s.ptr)
}

// ConfigValue is a config.json value by its key ("hidden_size", ...: the keys of
// dsi_config_key); an *Error with StatusInvalidArgument for any other key.
func (s *Session) ConfigValue(key string) (int64, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	ptr, err := s.handle()
	if err != nil {
		return 0, err
	}
	v := native.Dsib_session_config_value(ptr, key)
	if v < 0 {
		return 0, &Error{Status: StatusInvalidArgument, Message: "not a dsi_config_key: " + key}
	}
	return v, nil
}

// TokenAttr is the token's attributes (TokenAttr* bits; TokenAttrEOG for end-of-generation ids).
func (s *Session) TokenAttr(id int32) uint32 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.ptr == nil {
		return TokenAttrNone
	}
	return uint32(native.Dsi_session_token_attr(s.ptr, int(id)))
}

// EogTokens are the end-of-generation ids.
func (s *Session) EogTokens() []int32 {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.ptr == nil {
		return nil
	}
	n := native.Dsib_session_eog_tokens(s.ptr, nil)
	ids := make([]int32, n)
	if n > 0 {
		native.Dsib_session_eog_tokens(s.ptr, ids)
	}
	return ids
}

// Tokenizer is the session's tokenizer, usable until the session is closed.
func (s *Session) Tokenizer() (*Tokenizer, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	ptr, err := s.handle()
	if err != nil {
		return nil, err
	}
	t := native.Dsib_session_tokenizer(ptr)
	if t.Swigcptr() == 0 {
		return nil, &Error{StatusInvalidArgument, "the model directory has no tokenizer.json"}
	}
	return &Tokenizer{ptr: t, session: s}, nil
}

// NewContext creates a context of nCtx tokens (0 = the model's maximum); abort may be nil.
func (s *Session) NewContext(nCtx int, abort func() bool) (*Context, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	ptr, err := s.handle()
	if err != nil {
		return nil, err
	}
	ctx := &Context{session: s, sessionCbs: s.cbs.retain()}
	h := ctx.addAbort(abort)
	c := newCall()
	defer c.free()
	ctx.ptr = native.Dsib_context_create(ptr, nCtx, 0, h, c.p)
	if err := c.err(); err != nil {
		ctx.ptr = nil
		ctx.Close()
		return nil, err
	}
	runtime.SetFinalizer(ctx, (*Context).Close)
	return ctx, nil
}

// BatchItem is one context's part of EvalBatch: ids appended as Context.Eval takes them.
type BatchItem struct {
	Context   *Context
	Ids       []int32
	AllLogits bool
}

// EvalBatch advances every item's context in shared forward passes; all or nothing.
func (s *Session) EvalBatch(items []BatchItem) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	ptr, err := s.handle()
	if err != nil {
		return err
	}
	b := native.Dsib_batch_new()
	defer native.Dsib_batch_free(b)
	for i, it := range items {
		if it.Context == nil || it.Context.ptr == nil {
			return &Error{StatusInvalidArgument, fmt.Sprintf("item %d: no context", i)}
		}
		flags := uint(0)
		if it.AllLogits {
			flags = 1
		}
		if st := native.Dsib_batch_add(b, it.Context.ptr, it.Ids, flags); st != 0 {
			return &Error{st, fmt.Sprintf("item %d", i)}
		}
	}
	c := newCall()
	defer c.free()
	native.Dsib_session_eval_batch(ptr, b, c.p)
	runtime.KeepAlive(items)
	return c.err()
}
