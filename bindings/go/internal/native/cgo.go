// Package native is the SWIG-generated layer over include/dsinfer.h (bindings/dsinfer.i);
// the idiomatic API is the parent package dsinfer.
package native

// The header comes from the source tree; libdsinfer is found through CGO_LDFLAGS (-L) or
// the system's library path, as for any C library.

/*
#cgo CFLAGS: -I${SRCDIR}/../../../../include
#cgo LDFLAGS: -ldsinfer
*/
import "C"
