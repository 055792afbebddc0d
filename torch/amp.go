package torch

/*
#include "goclip_torch.h"
*/
import "C"

import "runtime"

// Autocast runs f with libtorch's automatic mixed precision on for dev's type: matmuls,
// linear layers and convolutions run in dtype (BFloat16, or Float16 on CUDA) while
// parameters stay float32. The goroutine is locked to its OS thread for the region, since
// autocast state is thread-local. The previous state is restored even if f panics.
func Autocast(dev Device, dtype DType, f func()) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var prevOn, prevDT C.int
	must("autocast", C.gt_autocast_enter(C.int(dev.Type), C.int(dtype), &prevOn, &prevDT))
	defer func() { must("autocast", C.gt_autocast_exit(C.int(dev.Type), prevOn, prevDT)) }()
	f()
}

// AutocastState reports whether autocast is on for dev's type on the calling thread, and
// its dtype (code that replays a forward later, such as gradient checkpointing, records
// it). It reads the state by entering and leaving a region, which changes nothing.
func AutocastState(dev Device) (DType, bool) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var on, dt C.int
	must("autocast", C.gt_autocast_enter(C.int(dev.Type), C.int(BFloat16), &on, &dt))
	must("autocast", C.gt_autocast_exit(C.int(dev.Type), on, dt))
	return DType(dt), on != 0
}
