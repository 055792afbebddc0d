package torch

/*
#include "goclip_torch.h"
*/
import "C"

import (
	"fmt"
	"unsafe"
)

// Copy is a host-to-device copy in flight on the device's copy stream (CopyAsync). Its
// tensors may be read only after Wait, which orders the current stream after the copy
// without blocking the host. Free releases it; both are idempotent.
type Copy struct{ h C.gt_copy }

// CopyAsync copies CPU tensors to the CUDA device dev on that device's copy stream, a
// side stream that runs beside the compute stream: the call returns at once, and the
// copies overlap the kernels already queued. The sources should be pinned (PinMemory):
// from pageable memory CUDA stages the copy and the host waits for it. The sources may
// be freed as soon as it returns (libtorch keeps pinned blocks until their copy ends).
// It returns the device tensors and the copy to Wait on before reading them; dev must be
// a CUDA device (it panics with a *Error otherwise, or without CUDA).
func CopyAsync(dev Device, ts ...*Tensor) ([]*Tensor, *Copy) {
	if !dev.IsCUDA() {
		panic(&Error{Op: "copy_async", Msg: fmt.Sprintf("device %s is not a CUDA device", dev)})
	}
	if len(ts) == 0 {
		return nil, &Copy{}
	}
	hs := make([]C.gt_tensor, len(ts))
	for i, t := range ts {
		hs[i] = t.handle("copy_async")
	}
	outs := make([]C.gt_tensor, len(ts))
	var c C.gt_copy
	must("copy_async", C.gt_copy_async((*C.gt_tensor)(unsafe.Pointer(&hs[0])), C.int(len(ts)), C.int(dev.Index),
		(*C.gt_tensor)(unsafe.Pointer(&outs[0])), &c))
	keep(ts...)
	res := make([]*Tensor, len(outs))
	for i, h := range outs {
		res[i] = wrap(h)
	}
	return res, &Copy{h: c}
}

// Wait makes the device's current stream wait for the copy (the host does not wait) and
// tells the caching allocator that the current stream uses ts (the tensors CopyAsync
// returned), so their memory is not reused before the kernels reading them have run. It
// frees the copy; a second Wait does nothing.
func (c *Copy) Wait(ts ...*Tensor) {
	if c == nil || c.h == nil {
		return
	}
	hs := make([]C.gt_tensor, len(ts)+1) // one more: never a pointer to an empty slice
	for i, t := range ts {
		hs[i] = t.handle("copy_wait")
	}
	s := C.gt_copy_wait(c.h, (*C.gt_tensor)(unsafe.Pointer(&hs[0])), C.int(len(ts)))
	keep(ts...)
	c.Free()
	must("copy_wait", s)
}

// Free releases the copy without waiting for it (a copy never waited on must not have
// its tensors read).
func (c *Copy) Free() {
	if c != nil && c.h != nil {
		C.gt_copy_free(c.h)
		c.h = nil
	}
}
