package torch

/*
#include "goclip_torch.h"
*/
import "C"

import (
	"fmt"
	"unsafe"
)

// shapePtr returns a C pointer to a shape (nil for a 0-dim shape).
func shapePtr(shape []int64) *C.int64_t {
	if len(shape) == 0 {
		return nil
	}
	return (*C.int64_t)(unsafe.Pointer(&shape[0]))
}

func numel(shape []int64) int64 {
	n := int64(1)
	for _, s := range shape {
		n *= s
	}
	return n
}

// FromBytes copies raw little-endian, C-ordered element data into a new tensor on dev.
func FromBytes(data []byte, dtype DType, shape []int64, dev Device) (*Tensor, error) {
	if want := numel(shape) * int64(dtype.Size()); want != int64(len(data)) {
		return nil, fmt.Errorf("torch: %d bytes for a %v tensor of shape %v (want %d)", len(data), dtype, shape, want)
	}
	var p unsafe.Pointer
	if len(data) > 0 {
		p = unsafe.Pointer(&data[0])
	}
	var out C.gt_tensor
	err := statusErr("from_data", C.gt_from_data(p, C.int64_t(len(data)), shapePtr(shape), C.int(len(shape)),
		C.int(dtype), C.int(dev.Type), C.int(dev.Index), &out))
	if err != nil {
		return nil, err
	}
	return wrap(out), nil
}

func fromSlice[E any](data []E, dtype DType, shape []int64) *Tensor {
	return fromSliceIn(data, dtype, shape, false)
}

// fromSliceIn copies data into a new CPU tensor, in page-locked memory when pinned.
func fromSliceIn[E any](data []E, dtype DType, shape []int64, pinned bool) *Tensor {
	if len(shape) == 0 && len(data) != 1 {
		shape = []int64{int64(len(data))}
	}
	if numel(shape) != int64(len(data)) {
		panic(&Error{Op: "from_slice", Msg: fmt.Sprintf("%d values for shape %v", len(data), shape)})
	}
	var p unsafe.Pointer
	if len(data) > 0 {
		p = unsafe.Pointer(&data[0])
	}
	var out C.gt_tensor
	n := C.int64_t(len(data) * dtype.Size())
	if pinned {
		must("from_slice", C.gt_from_data_pinned(p, n, shapePtr(shape), C.int(len(shape)), C.int(dtype), &out))
	} else {
		must("from_slice", C.gt_from_data(p, n, shapePtr(shape), C.int(len(shape)), C.int(dtype), C.int(CPUDevice), 0, &out))
	}
	return wrap(out)
}

// PinnedUint8 is FromUint8 into page-locked memory (ordinary memory without CUDA), the
// source CopyAsync wants, made with one copy of data where FromUint8(...).PinMemory()
// makes two.
func PinnedUint8(data []uint8, shape ...int64) *Tensor { return fromSliceIn(data, Uint8, shape, true) }

// FromFloat32 copies values into a new CPU float32 tensor of the given shape (a vector
// when no shape is given).
func FromFloat32(data []float32, shape ...int64) *Tensor { return fromSlice(data, Float32, shape) }

// FromFloat64 copies values into a new CPU float64 tensor.
func FromFloat64(data []float64, shape ...int64) *Tensor { return fromSlice(data, Float64, shape) }

// FromInt64 copies values into a new CPU int64 tensor.
func FromInt64(data []int64, shape ...int64) *Tensor { return fromSlice(data, Int64, shape) }

// FromUint8 copies values into a new CPU uint8 tensor.
func FromUint8(data []uint8, shape ...int64) *Tensor { return fromSlice(data, Uint8, shape) }

// Scalar is a 0-dim float32 CPU tensor.
func Scalar(v float32) *Tensor { return fromSlice([]float32{v}, Float32, []int64{}) }

// Full is a tensor filled with v.
func Full(shape []int64, v float64, dtype DType, dev Device) *Tensor {
	var out C.gt_tensor
	must("full", C.gt_full(shapePtr(shape), C.int(len(shape)), C.double(v), C.int(dtype), C.int(dev.Type), C.int(dev.Index), &out))
	return wrap(out)
}

// Zeros is a tensor of zeros.
func Zeros(shape []int64, dtype DType, dev Device) *Tensor { return Full(shape, 0, dtype, dev) }

// Ones is a tensor of ones.
func Ones(shape []int64, dtype DType, dev Device) *Tensor { return Full(shape, 1, dtype, dev) }

// Rand draws from U[0, 1) with the default generator.
func Rand(shape []int64, dtype DType, dev Device) *Tensor { return random(0, shape, dtype, dev) }

// Randn draws from N(0, 1) with the default generator.
func Randn(shape []int64, dtype DType, dev Device) *Tensor { return random(1, shape, dtype, dev) }

func random(kind int, shape []int64, dtype DType, dev Device) *Tensor {
	var out C.gt_tensor
	must("random", C.gt_random(C.int(kind), shapePtr(shape), C.int(len(shape)), C.int(dtype), C.int(dev.Type), C.int(dev.Index), &out))
	return wrap(out)
}

// RandInt draws int64 values uniformly from [low, high).
func RandInt(low, high int64, shape []int64, dev Device) *Tensor {
	var out C.gt_tensor
	must("randint", C.gt_randint(C.int64_t(low), C.int64_t(high), shapePtr(shape), C.int(len(shape)), C.int(dev.Type), C.int(dev.Index), &out))
	return wrap(out)
}

// Arange is [start, start+step, ...) up to end, exclusive.
func Arange(start, end, step float64, dtype DType, dev Device) *Tensor {
	var out C.gt_tensor
	must("arange", C.gt_arange(C.double(start), C.double(end), C.double(step), C.int(dtype), C.int(dev.Type), C.int(dev.Index), &out))
	return wrap(out)
}

func (t *Tensor) to(dtype DType, dev Device, nonBlocking bool) *Tensor {
	nb := 0
	if nonBlocking {
		nb = 1
	}
	var out C.gt_tensor
	must("to", C.gt_to(t.handle("to"), C.int(dtype), C.int(dev.Type), C.int(dev.Index), C.int(nb), &out))
	keep(t)
	return wrap(out)
}

// To converts to another dtype (a new handle; the same storage when nothing changes).
func (t *Tensor) To(dtype DType) *Tensor { return t.to(dtype, t.Device(), false) }

// ToDevice copies to a device, keeping the dtype. nonBlocking overlaps a copy from
// pinned host memory with device work.
func (t *Tensor) ToDevice(dev Device, nonBlocking bool) *Tensor {
	return t.to(t.DType(), dev, nonBlocking)
}

// ToDeviceDType converts dtype and device in one copy.
func (t *Tensor) ToDeviceDType(dev Device, dtype DType, nonBlocking bool) *Tensor {
	return t.to(dtype, dev, nonBlocking)
}

// PinMemory copies a CPU tensor into page-locked memory (a plain copy without CUDA).
func (t *Tensor) PinMemory() *Tensor {
	var out C.gt_tensor
	must("pin_memory", C.gt_pin_memory(t.handle("pin_memory"), &out))
	keep(t)
	return wrap(out)
}

// Clone copies the data (recorded by autograd).
func (t *Tensor) Clone() *Tensor {
	var out C.gt_tensor
	must("clone", C.gt_clone(t.handle("clone"), &out))
	keep(t)
	return wrap(out)
}

// Alias is a second handle to the same tensor (same storage and autograd history).
func (t *Tensor) Alias() *Tensor {
	var out C.gt_tensor
	must("alias", C.gt_alias(t.handle("alias"), &out))
	keep(t)
	return wrap(out)
}
