package dsinfer

import (
	"runtime"
	"sync"

	"github.com/dsinfer/dsinfer/bindings/go/internal/native"
)

// Tokenize flags.
const (
	ParseSpecial = 1 // added tokens written in the text become their ids
	AddSpecial   = 2 // BOS/EOS as the tokenizer's configuration says
)

// Tokenizer is a Hugging Face tokenizer.json: loaded from a file, or a session's (usable
// until that session is closed). Safe for concurrent use.
type Tokenizer struct {
	mu      sync.Mutex
	ptr     native.Struct_SS_dsi_tokenizer
	session *Session // the owner of a session's tokenizer
}

// Token attribute bits (DSI_TOKEN_ATTR_*); TokenAttrNone = no token has the id.
const (
	TokenAttrNone        = 0
	TokenAttrNormal      = 1
	TokenAttrControl     = 2
	TokenAttrUserDefined = 4
	TokenAttrEOG         = 8
)

// LoadTokenizer loads a tokenizer.json.
func LoadTokenizer(path string) (*Tokenizer, error) {
	c := newCall()
	defer c.free()
	ptr := native.Dsib_tokenizer_load(path, c.p)
	if err := c.err(); err != nil {
		return nil, err
	}
	t := &Tokenizer{ptr: ptr}
	runtime.SetFinalizer(t, (*Tokenizer).Close)
	return t, nil
}

// Close frees a loaded tokenizer (a session's belongs to the session). Idempotent.
func (t *Tokenizer) Close() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.ptr != nil && t.session == nil {
		native.Dsi_tokenizer_free(t.ptr)
	}
	t.ptr = nil
	return nil
}

// with runs f while the tokenizer (and its session) cannot be closed.
func (t *Tokenizer) with(f func(native.Struct_SS_dsi_tokenizer) error) error {
	if t.session != nil {
		t.session.mu.RLock()
		defer t.session.mu.RUnlock()
		if t.session.ptr == nil {
			return errClosed
		}
	}
	if t.ptr == nil {
		return errClosed
	}
	return f(t.ptr)
}

// NVocab is the number of ids including added tokens.
func (t *Tokenizer) NVocab() int {
	n := 0
	_ = t.with(func(p native.Struct_SS_dsi_tokenizer) error {
		n = native.Dsi_tokenizer_n_vocab(p)
		return nil
	})
	return n
}

// TokenAttr is the token's attribute: TokenAttrNormal, TokenAttrControl, TokenAttrUserDefined or TokenAttrNone.
func (t *Tokenizer) TokenAttr(id int32) uint32 {
	var attr uint32
	_ = t.with(func(p native.Struct_SS_dsi_tokenizer) error {
		attr = uint32(native.Dsi_tokenizer_token_attr(p, int(id)))
		return nil
	})
	return attr
}

// Piece is the raw bytes of one token (part of a UTF-8 character for some byte-level tokens).
func (t *Tokenizer) Piece(id int32) ([]byte, error) {
	var piece string
	err := t.with(func(p native.Struct_SS_dsi_tokenizer) error {
		var err error
		piece, err = textCall(func(c native.Struct_SS_dsib_call) { native.Dsib_tokenizer_token_to_piece(p, int(id), c) })
		return err
	})
	return []byte(piece), err
}

// Tokenize encodes text (flags: ParseSpecial, AddSpecial).
func (t *Tokenizer) Tokenize(text string, flags uint) ([]int32, error) {
	var ids []int32
	err := t.with(func(p native.Struct_SS_dsi_tokenizer) error {
		c := newCall()
		defer c.free()
		ids = make([]int32, len(text)+2)
		n := native.Dsib_tokenize(p, text, flags, ids, c.p)
		if err := c.err(); err != nil {
			return err
		}
		if int(n) > len(ids) {
			ids = make([]int32, n)
			n = native.Dsib_tokenize(p, text, flags, ids, c.p)
			if err := c.err(); err != nil {
				return err
			}
		}
		ids = ids[:n]
		return nil
	})
	return ids, err
}

// Detokenize decodes ids (skipSpecial: control tokens give no text).
func (t *Tokenizer) Detokenize(ids []int32, skipSpecial bool) (string, error) {
	var text string
	err := t.with(func(p native.Struct_SS_dsi_tokenizer) error {
		c := newCall()
		defer c.free()
		native.Dsib_detokenize(p, ids, boolFlag(skipSpecial), c.p)
		text = c.bytes()
		return c.err()
	})
	return text, err
}

// TokenID is the id of a token given by its exact text, or -1.
func (t *Tokenizer) TokenID(text string) int {
	id := -1
	_ = t.with(func(p native.Struct_SS_dsi_tokenizer) error {
		id = native.Dsib_tokenizer_token_id(p, text)
		return nil
	})
	return id
}

// Detokenizer is a streaming decoder over the tokenizer; it outlives the tokenizer.
func (t *Tokenizer) Detokenizer(skipSpecial bool) (*Detokenizer, error) {
	var d *Detokenizer
	err := t.with(func(p native.Struct_SS_dsi_tokenizer) error {
		c := newCall()
		defer c.free()
		ptr := native.Dsib_detokenizer_create(p, boolFlag(skipSpecial), c.p)
		if err := c.err(); err != nil {
			return err
		}
		d = &Detokenizer{ptr: ptr}
		runtime.SetFinalizer(d, (*Detokenizer).Close)
		return nil
	})
	return d, err
}

func boolFlag(b bool) uint {
	if b {
		return 1
	}
	return 0
}

// Detokenizer turns a stream of ids into text: only whole UTF-8 characters come out.
type Detokenizer struct {
	mu  sync.Mutex
	ptr native.Struct_SS_dsi_detokenizer
}

// Close frees the detokenizer. Idempotent.
func (d *Detokenizer) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.ptr != nil {
		native.Dsi_detokenizer_free(d.ptr)
		d.ptr = nil
	}
	return nil
}

func (d *Detokenizer) next(id int) (string, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.ptr == nil {
		return "", errClosed
	}
	return textCall(func(c native.Struct_SS_dsib_call) { native.Dsib_detokenizer_next(d.ptr, id, c) })
}

// Push feeds one id and returns the text it completed (possibly "").
func (d *Detokenizer) Push(id int32) (string, error) {
	if id < 0 {
		return "", &Error{StatusInvalidToken, "negative token id"}
	}
	return d.next(int(id))
}

// Flush ends the stream: pending bytes come out as U+FFFD.
func (d *Detokenizer) Flush() (string, error) { return d.next(-1) }

func chatFlags(thinking bool) uint { return boolFlag(thinking) }

// textCall runs f with a call record and returns the text it produced.
func textCall(f func(native.Struct_SS_dsib_call)) (string, error) {
	c := newCall()
	defer c.free()
	f(c.p)
	if err := c.err(); err != nil {
		return "", err
	}
	return c.bytes(), nil
}

// RenderChat renders a conversation (JSON {"messages": [...], "tools": [...]}) into the
// DeepSeek-V3.2 prompt text.
func RenderChat(conversationJSON string, thinking bool) (string, error) {
	return textCall(func(c native.Struct_SS_dsib_call) { native.Dsib_chat_render(conversationJSON, chatFlags(thinking), c) })
}

// ParseChat parses a whole reply into {"reasoning_content", "content", "tool_calls"} (JSON).
func ParseChat(reply string, thinking bool) (string, error) {
	return textCall(func(c native.Struct_SS_dsib_call) { native.Dsib_chat_parse(reply, chatFlags(thinking), c) })
}

// ChatParser parses a reply while it is streamed. One goroutine at a time.
type ChatParser struct {
	mu  sync.Mutex
	ptr native.Struct_SS_dsi_chat_parser
}

// NewChatParser creates an incremental parser.
func NewChatParser(thinking bool) (*ChatParser, error) {
	c := newCall()
	defer c.free()
	ptr := native.Dsib_chat_parser_create(chatFlags(thinking), c.p)
	if err := c.err(); err != nil {
		return nil, err
	}
	p := &ChatParser{ptr: ptr}
	runtime.SetFinalizer(p, (*ChatParser).Close)
	return p, nil
}

// Close frees the parser. Idempotent.
func (p *ChatParser) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ptr != nil {
		native.Dsi_chat_parser_free(p.ptr)
		p.ptr = nil
	}
	return nil
}

// Push feeds more of the reply; returns the events that became certain (a JSON array).
func (p *ChatParser) Push(text string) (string, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ptr == nil {
		return "", errClosed
	}
	return textCall(func(c native.Struct_SS_dsib_call) { native.Dsib_chat_parser_push(p.ptr, text, c) })
}

// Finish ends the reply: {"events": [...], "result": {...}} (JSON).
func (p *ChatParser) Finish() (string, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ptr == nil {
		return "", errClosed
	}
	return textCall(func(c native.Struct_SS_dsib_call) { native.Dsib_chat_parser_finish(p.ptr, c) })
}
