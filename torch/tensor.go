package torch

/*
#include <stdlib.h>
#include "goclip_torch.h"
*/
import "C"

import (
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"unsafe"
)

// Tensor is a handle to a libtorch tensor. The zero value is not usable; tensors come
// from the creation functions and operations of this package.
type Tensor struct {
	h     C.gt_tensor
	owner *Scope // the scope that frees it, nil when the caller owns it
}

var live atomic.Int64

// Live is the number of tensor handles created and not yet freed.
func Live() int64 { return live.Load() }

// wrap takes ownership of a handle the shim returned and registers it with the
// innermost open scope.
func wrap(h C.gt_tensor) *Tensor {
	if h == nil {
		return nil
	}
	live.Add(1)
	t := &Tensor{h: h}
	scopes.mu.Lock()
	if s := scopes.top; s != nil {
		t.owner = s
		s.tensors = append(s.tensors, t)
	}
	scopes.mu.Unlock()
	return t
}

// keep keeps Go values reachable until after a C call that used their handles.
func keep(ts ...*Tensor) { runtime.KeepAlive(ts) }

// Free releases the tensor's memory. It is idempotent and safe on nil.
func (t *Tensor) Free() {
	if t == nil || t.h == nil {
		return
	}
	C.gt_free(t.h)
	t.h = nil
	live.Add(-1)
}

// Assign makes t the tensor src is (its dtype, device, values and autograd state), as
// PyTorch's `p.data = src` does for a parameter, and frees src: whatever holds t (a
// module's field, an optimizer's list) sees the new tensor from then on. t's previous
// tensor is released, its memory with it unless another handle shares the storage. t
// keeps its owner (scope or caller).
func (t *Tensor) Assign(src *Tensor) {
	t.handle("assign")
	src.handle("assign")
	if t == src {
		return
	}
	t.h, src.h = src.h, t.h
	src.Free()
}

// Freed reports whether Free has been called.
func (t *Tensor) Freed() bool { return t == nil || t.h == nil }

func (t *Tensor) handle(op string) C.gt_tensor {
	if t == nil || t.h == nil {
		panic(&Error{Op: op, Msg: "use of a nil or freed tensor"})
	}
	return t.h
}

// Scope frees the tensors created while it is the innermost open scope. Scopes form one
// stack for the process; see the package doc, Memory, for the rule that callers follow.
type Scope struct {
	parent  *Scope
	tensors []*Tensor
	closed  bool
}

var scopes struct {
	mu  sync.Mutex
	top *Scope
}

// NewScope opens a scope nested in the current one. Close it with defer on the next
// line (or use [WithScope]), on the goroutine that opened it.
func NewScope() *Scope {
	scopes.mu.Lock()
	defer scopes.mu.Unlock()
	s := &Scope{parent: scopes.top}
	scopes.top = s
	return s
}

// WithScope runs f inside a new scope and closes it when f returns or panics: every
// tensor f creates is freed then, unless f moved it out with Keep or Owned. A panic of
// f propagates after the scope is closed.
func WithScope(f func()) {
	s := NewScope()
	defer s.Close()
	f()
}

// Keep moves tensors out of the scope: to the enclosing scope, or to the caller when
// there is none. It returns its first argument for chaining.
func (s *Scope) Keep(ts ...*Tensor) *Tensor {
	scopes.mu.Lock()
	defer scopes.mu.Unlock()
	for _, t := range ts {
		if t == nil || t.owner != s {
			continue
		}
		t.owner = s.parent
		if s.parent != nil {
			s.parent.tensors = append(s.parent.tensors, t)
		}
	}
	if len(ts) == 0 {
		return nil
	}
	return ts[0]
}

// Close frees every tensor the scope still owns and makes the enclosing scope current.
// Scopes opened inside s and still open (an inner scope that a panic skipped, or one
// never closed) are closed first, innermost first: closing a scope unwinds the stack
// down to it. Close is idempotent, and a scope already closed by the unwinding of an
// enclosing one is left as it is. It never panics.
func (s *Scope) Close() {
	scopes.mu.Lock()
	if s.closed {
		scopes.mu.Unlock()
		return
	}
	s.closed = true
	onStack := false
	for c := scopes.top; c != nil && !onStack; c = c.parent {
		onStack = c == s
	}
	if !onStack { // a zero Scope, never opened by NewScope
		scopes.mu.Unlock()
		return
	}
	var ts []*Tensor
	for {
		top := scopes.top
		scopes.top = top.parent
		top.closed = true
		for _, t := range top.tensors {
			if t.owner == top {
				t.owner = nil
				ts = append(ts, t)
			}
		}
		top.tensors = nil
		if top == s {
			break
		}
	}
	scopes.mu.Unlock()
	for _, t := range ts {
		t.Free()
	}
}

// Detach returns a new handle sharing t's data but cut from the autograd graph (no
// gradient flows through it). Like any op result, it belongs to the current scope.
func (t *Tensor) Detach() *Tensor {
	var out C.gt_tensor
	must("detach", C.gt_detach(t.handle("detach"), &out))
	keep(t)
	return wrap(out)
}

// Owned takes t out of its scope: the caller now frees it. Used for parameters and
// other long-lived tensors created inside a scope.
func (t *Tensor) Owned() *Tensor {
	scopes.mu.Lock()
	t.owner = nil
	scopes.mu.Unlock()
	return t
}

// Shape is the tensor's size in each dimension.
func (t *Tensor) Shape() []int64 {
	var nd C.int
	var sizes [16]C.int64_t
	must("shape", C.gt_shape(t.handle("shape"), &nd, &sizes[0]))
	keep(t)
	out := make([]int64, int(nd))
	for i := range out {
		out[i] = int64(sizes[i])
	}
	return out
}

// Dim is the number of dimensions.
func (t *Tensor) Dim() int { return len(t.Shape()) }

// Size is the size of dimension d (negative counts from the end).
func (t *Tensor) Size(d int) int64 {
	s := t.Shape()
	if d < 0 {
		d += len(s)
	}
	if d < 0 || d >= len(s) {
		panic(&Error{Op: "size", Msg: fmt.Sprintf("dimension %d out of range for shape %v", d, s)})
	}
	return s[d]
}

// Numel is the number of elements.
func (t *Tensor) Numel() int64 {
	n := int64(1)
	for _, s := range t.Shape() {
		n *= s
	}
	return n
}

type info struct {
	dtype        DType
	device       Device
	requiresGrad bool
}

func (t *Tensor) info() info {
	var dt, dv, di, rg C.int
	must("info", C.gt_info(t.handle("info"), &dt, &dv, &di, &rg))
	keep(t)
	return info{DType(dt), Device{DeviceType(dv), int(di)}, rg != 0}
}

// DType is the element type.
func (t *Tensor) DType() DType { return t.info().dtype }

// Device is where the tensor lives.
func (t *Tensor) Device() Device { return t.info().device }

// RequiresGrad reports whether autograd records operations on t.
func (t *Tensor) RequiresGrad() bool { return t.info().requiresGrad }

func (t *Tensor) String() string {
	if t == nil || t.h == nil {
		return "Tensor(freed)"
	}
	i := t.info()
	return fmt.Sprintf("Tensor(%v, %v, %v)", t.Shape(), i.dtype, i.device)
}

// hostReads counts the reads of tensor values into Go (HostReads).
var hostReads atomic.Int64

// HostReads is the number of reads of tensor values into Go memory so far (Item, Bytes,
// Float32s, Float64s, Int64s), each one a host wait for a device tensor. Tests count
// them to check how often a loop waits for the device.
func HostReads() int64 { return hostReads.Load() }

// Item is the value of a one-element tensor as float64 (synchronises with the device).
func (t *Tensor) Item() float64 {
	hostReads.Add(1)
	var v C.double
	must("item", C.gt_item(t.handle("item"), &v))
	keep(t)
	return float64(v)
}

// Bytes copies the tensor's elements, in C order, into a new byte slice.
func (t *Tensor) Bytes() []byte {
	hostReads.Add(1)
	n := int(t.Numel()) * t.DType().Size()
	buf := make([]byte, n)
	var p unsafe.Pointer
	if n > 0 {
		p = unsafe.Pointer(&buf[0])
	}
	must("to_host", C.gt_to_host(t.handle("to_host"), p, C.int64_t(n)))
	keep(t)
	return buf
}

// Float32s copies the values to a Go slice, converting to float32 first if needed.
func (t *Tensor) Float32s() []float32 {
	hostReads.Add(1)
	src := t
	if t.DType() != Float32 {
		src = t.To(Float32)
		defer src.Free()
	}
	n := int(src.Numel())
	out := make([]float32, n)
	if n > 0 {
		must("to_host", C.gt_to_host(src.h, unsafe.Pointer(&out[0]), C.int64_t(4*n)))
	}
	keep(src)
	return out
}

// Float64s copies the values to a Go slice, converting to float64 first if needed.
func (t *Tensor) Float64s() []float64 {
	hostReads.Add(1)
	src := t
	if t.DType() != Float64 {
		src = t.To(Float64)
		defer src.Free()
	}
	n := int(src.Numel())
	out := make([]float64, n)
	if n > 0 {
		must("to_host", C.gt_to_host(src.h, unsafe.Pointer(&out[0]), C.int64_t(8*n)))
	}
	keep(src)
	return out
}

// Int64s copies the values to a Go slice, converting to int64 first if needed.
func (t *Tensor) Int64s() []int64 {
	hostReads.Add(1)
	src := t
	if t.DType() != Int64 {
		src = t.To(Int64)
		defer src.Free()
	}
	n := int(src.Numel())
	out := make([]int64, n)
	if n > 0 {
		must("to_host", C.gt_to_host(src.h, unsafe.Pointer(&out[0]), C.int64_t(8*n)))
	}
	keep(src)
	return out
}
