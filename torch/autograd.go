package torch

/*
#include "goclip_torch.h"
*/
import "C"

import "runtime"

// SetRequiresGrad turns gradient recording for t on or off and returns t.
func (t *Tensor) SetRequiresGrad(on bool) *Tensor {
	must("requires_grad_", C.gt_set_requires_grad(t.handle("requires_grad_"), cbool(on)))
	keep(t)
	return t
}

// Grad is t's accumulated gradient (a new handle), or nil when there is none.
func (t *Tensor) Grad() *Tensor {
	var out C.gt_tensor
	must("grad", C.gt_grad(t.handle("grad"), &out))
	keep(t)
	return wrap(out)
}

// SetGrad replaces t's gradient; nil clears it.
func (t *Tensor) SetGrad(g *Tensor) {
	must("set_grad", C.gt_set_grad(t.handle("set_grad"), optHandle(g, "set_grad")))
	keep(t, g)
}

// ZeroGrad clears t's gradient (set to none, as optimizer.zero_grad(set_to_none=True)).
func (t *Tensor) ZeroGrad() { t.SetGrad(nil) }

// Backward accumulates d t / d leaf into every leaf's gradient. t must be a scalar.
func (t *Tensor) Backward() { t.BackwardWith(nil, false) }

// BackwardWith runs backward with an explicit output gradient (nil for a scalar t).
func (t *Tensor) BackwardWith(grad *Tensor, retainGraph bool) {
	must("backward", C.gt_backward(t.handle("backward"), optHandle(grad, "backward"), cbool(retainGraph)))
	keep(t, grad)
}

// GradEnabled reports whether autograd records operations on this thread.
func GradEnabled() bool {
	var v C.int
	must("grad_enabled", C.gt_grad_enabled(&v))
	return v != 0
}

// NoGrad runs f with gradient recording off, on a locked OS thread (grad mode is
// thread-local in libtorch), and restores the previous mode even if f panics.
func NoGrad(f func()) { withGradMode(false, f) }

// WithGrad runs f with gradient recording on.
func WithGrad(f func()) { withGradMode(true, f) }

func withGradMode(on bool, f func()) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	prev := GradEnabled()
	must("set_grad_enabled", C.gt_set_grad_enabled(cbool(on)))
	defer func() { must("set_grad_enabled", C.gt_set_grad_enabled(cbool(prev))) }()
	f()
}
