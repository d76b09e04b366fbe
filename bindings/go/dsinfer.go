// Package dsinfer runs DeepSeek-V3.2 models through libdsinfer (include/dsinfer.h).
//
// Every object has Close() (a finalizer is only a safety net) and every failure is an
// *Error carrying the library's status and message. Objects may be closed in any order:
// a context keeps its model alive. Build with the library on the linker path, e.g.
// CGO_LDFLAGS=-L/path/to/build; SWIG must be installed (go build runs it).
package dsinfer

import (
	"runtime/cgo"
	"sync"
	"sync/atomic"

	"github.com/dsinfer/dsinfer/bindings/go/internal/native"
)

// Status codes of include/dsinfer.h.
const (
	StatusOK              = 0
	StatusInvalidArgument = 1
	StatusIO              = 2
	StatusFormat          = 3
	StatusConfig          = 4
	StatusCheckpoint      = 5
	StatusUnsupported     = 6
	StatusNoMemory        = 7
	StatusContextFull     = 8
	StatusInvalidToken    = 9
	StatusCancelled       = 10
	StatusBusy            = 11
	StatusBufferTooSmall  = 12
	StatusParse           = 13
	StatusBackend         = 14
	StatusInternal        = 15
)

// Log levels.
const (
	LogDebug = 0
	LogInfo  = 1
	LogWarn  = 2
	LogError = 3
	LogNone  = 4
)

// Error is a failed call: the library's status and its message (dsi_last_error()).
type Error struct {
	Status  int
	Message string
}

func (e *Error) Error() string { return native.Dsi_status_name(e.Status) + ": " + e.Message }

// StatusName is the status' name, e.g. "DSI_ERR_IO".
func (e *Error) StatusName() string { return native.Dsi_status_name(e.Status) }

// Version is the linked library's version, "MAJOR.MINOR.PATCH".
func Version() string { return native.Dsi_version() }

// call is one native call's record: status, message and bytes, captured by the C side in
// the same cgo call as the call itself (a goroutine may change threads between calls).
type call struct{ p native.Struct_SS_dsib_call }

func newCall() call { return call{native.Dsib_call_new()} }

func (c call) free() { native.Dsib_call_free(c.p) }

func (c call) err() error {
	if st := native.Dsib_call_status(c.p); st != 0 {
		return &Error{Status: st, Message: native.Dsib_call_get(c.p, 0)}
	}
	return nil
}

func (c call) bytes() string { return native.Dsib_call_get(c.p, 1) }

// callbacks implements native.Callbacks; C holds its cgo.Handle. Reference-counted: a
// session and each of its contexts hold one, because the session's log sink is called
// while any of them lives natively. A panicking progress or abort handler cancels.
type callbacks struct {
	progress func(float32) bool
	log      func(level int, message string)
	abort    func() bool
	handle   cgo.Handle
	refs     int32
}

func newCallbacks() *callbacks {
	cb := &callbacks{refs: 1}
	cb.handle = cgo.NewHandle(native.Callbacks(cb))
	return cb
}

func (cb *callbacks) retain() *callbacks {
	atomic.AddInt32(&cb.refs, 1)
	return cb
}

func (cb *callbacks) release() {
	if atomic.AddInt32(&cb.refs, -1) == 0 {
		cb.handle.Delete()
	}
}

func (cb *callbacks) Progress(f float32) (ok bool) {
	if cb.progress == nil {
		return true
	}
	defer func() {
		if recover() != nil {
			ok = false
		}
	}()
	return cb.progress(f)
}

func (cb *callbacks) Log(level int, message string) {
	if cb.log == nil {
		return
	}
	defer func() { _ = recover() }()
	cb.log(level, message)
}

func (cb *callbacks) Abort() (stop bool) {
	if cb.abort == nil {
		return false
	}
	defer func() {
		if recover() != nil {
			stop = true
		}
	}()
	return cb.abort()
}

var (
	sinksMu sync.Mutex
	sinks   []*callbacks // every sink set: the library may still deliver to a replaced one
)

// SetLogger sets the process-wide log sink (calls without a session's own sink, and
// every failed call's message at LogError); nil turns it off.
func SetLogger(log func(level int, message string), minLevel int) error {
	sinksMu.Lock()
	defer sinksMu.Unlock()
	var h uint
	if log != nil {
		cb := newCallbacks()
		cb.log = log
		sinks = append(sinks, cb)
		h = uint(cb.handle)
	}
	c := newCall()
	defer c.free()
	native.Dsib_log_set(h, minLevel, c.p)
	return c.err()
}
