package native

// The C trampolines of dsinfer.i call these with the runtime/cgo.Handle that was passed as
// the callback's user_data: no Go pointer is ever stored in C.

/*
#include <stddef.h>
#include <stdint.h>
*/
import "C"

import "runtime/cgo"

// Callbacks receives what the library calls back; one value per session, context or
// process-wide log sink, kept in a cgo.Handle while C may call it.
type Callbacks interface {
	Progress(fraction float32) bool
	Log(level int, message string)
	Abort() bool
}

//export dsibGoProgress
func dsibGoProgress(fraction C.float, handle C.uintptr_t) C.int {
	if cgo.Handle(handle).Value().(Callbacks).Progress(float32(fraction)) {
		return 1
	}
	return 0
}

//export dsibGoLog
func dsibGoLog(level C.int, message *C.char, length C.size_t, handle C.uintptr_t) {
	text := C.GoStringN(message, C.int(length))
	cgo.Handle(handle).Value().(Callbacks).Log(int(level), text)
}

//export dsibGoAbort
func dsibGoAbort(handle C.uintptr_t) C.int {
	if cgo.Handle(handle).Value().(Callbacks).Abort() {
		return 1
	}
	return 0
}
