package torch

// The shim is built by CMake into ../build/shim/lib (make shim). At run time the dynamic
// loader finds it through the rpath below, or through LD_LIBRARY_PATH where the tree was
// moved (the GPU check and the Docker image set it).

/*
#cgo CFLAGS: -I${SRCDIR}/csrc
#cgo LDFLAGS: -L${SRCDIR}/../build/shim/lib -lgoclip_torch -Wl,-rpath,${SRCDIR}/../build/shim/lib
#include <stdlib.h>
#include "goclip_torch.h"
*/
import "C"

import "unsafe"

// Error is a failure reported by libtorch (or by the shim's argument checks).
type Error struct {
	Op  string // the goclip operation, e.g. "matmul"
	Msg string // libtorch's message
}

func (e *Error) Error() string { return "torch: " + e.Op + ": " + e.Msg }

// statusErr converts a shim status into an error, freeing the C string at once.
func statusErr(op string, s C.gt_status) error {
	if s == nil {
		return nil
	}
	msg := C.GoString(s)
	C.free(unsafe.Pointer(s))
	return &Error{Op: op, Msg: msg}
}

// must panics with a *Error when the shim reported a failure.
func must(op string, s C.gt_status) {
	if s != nil {
		panic(statusErr(op, s))
	}
}

// Try runs f and returns the *Error it panicked with, if any. Other panics propagate.
func Try(f func()) (err error) {
	defer func() {
		if r := recover(); r != nil {
			if e, ok := r.(*Error); ok {
				err = e
				return
			}
			panic(r)
		}
	}()
	f()
	return nil
}

// Version is the version of the libtorch the shim was built against, e.g. "2.11.0".
func Version() string {
	buf := make([]byte, 64)
	must("version", C.gt_version((*C.char)(unsafe.Pointer(&buf[0])), C.int(len(buf))))
	return C.GoString((*C.char)(unsafe.Pointer(&buf[0])))
}

// SetThreads sets libtorch's intra-op thread count for the process: for every OS thread
// that calls into libtorch, not only the calling one. (OpenMP keeps the count per OS
// thread and a goroutine's calls may run on any of them: the shim applies the count on
// each thread's next call.) n must be at least 1.
func SetThreads(n int) error {
	return statusErr("set_num_threads", C.gt_set_num_threads(C.int(n)))
}

// Threads is libtorch's intra-op thread count.
func Threads() int {
	var n C.int
	must("get_num_threads", C.gt_get_num_threads(&n))
	return int(n)
}

// ManualSeed seeds every default generator (CPU and CUDA).
func ManualSeed(seed uint64) { must("manual_seed", C.gt_manual_seed(C.uint64_t(seed))) }

// RNGState returns a copy of the state of a device's default generator (uint8 CPU tensor).
func RNGState(d Device) *Tensor {
	var out C.gt_tensor
	must("rng_state", C.gt_rng_state(C.int(d.Type), C.int(d.Index), &out))
	return wrap(out)
}

// SetRNGState restores a state returned by RNGState.
func SetRNGState(d Device, state *Tensor) error {
	err := statusErr("set_rng_state", C.gt_set_rng_state(C.int(d.Type), C.int(d.Index), state.h))
	keep(state)
	return err
}
