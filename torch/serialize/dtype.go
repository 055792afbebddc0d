package serialize

import (
	"fmt"
	"math/bits"
)

// DType is an element type, spelled as safetensors spells it.
type DType string

// The element types this package reads and writes.
const (
	F32  DType = "F32"
	F16  DType = "F16"
	BF16 DType = "BF16"
	F64  DType = "F64"
	I64  DType = "I64"
	I32  DType = "I32"
	I16  DType = "I16"
	I8   DType = "I8"
	U8   DType = "U8"
	BOOL DType = "BOOL"
)

// dtypeInfo holds what each format needs to know about a dtype.
type dtypeInfo struct {
	size int
	// rank orders dtypes as the safetensors reference orders them when it
	// lays out a file (higher first): its Dtype enum order.
	rank int
	// storage is torch's legacy storage class in module "torch".
	storage string
}

var dtypes = map[DType]dtypeInfo{
	BOOL: {1, 0, "BoolStorage"},
	U8:   {1, 1, "ByteStorage"},
	I8:   {1, 2, "CharStorage"},
	I16:  {2, 5, "ShortStorage"},
	F16:  {2, 7, "HalfStorage"},
	BF16: {2, 8, "BFloat16Storage"},
	I32:  {4, 9, "IntStorage"},
	F32:  {4, 11, "FloatStorage"},
	F64:  {8, 12, "DoubleStorage"},
	I64:  {8, 13, "LongStorage"},
}

// dtypeOfStorage maps torch's storage class names back to dtypes.
var dtypeOfStorage = func() map[string]DType {
	m := make(map[string]DType, len(dtypes))
	for d, info := range dtypes {
		m[info.storage] = d
	}
	return m
}()

// Size is the size of one element in bytes, or 0 for an unknown dtype.
func (d DType) Size() int { return dtypes[d].size }

// Valid reports whether d is one of the dtypes this package knows.
func (d DType) Valid() bool { _, ok := dtypes[d]; return ok }

// RawTensor is a tensor as bytes: its elements little-endian, in C-contiguous
// (row-major) order. A scalar has an empty Shape and one element.
type RawTensor struct {
	DType DType
	Shape []int64
	Data  []byte
}

// NumElements is the product of the shape (1 for a scalar).
func (t RawTensor) NumElements() int64 {
	n, _ := numElements(t.Shape)
	return n
}

// Validate checks that the dtype is known, no dimension is negative, and Data
// holds exactly numel*size bytes.
func (t RawTensor) Validate() error {
	if !t.DType.Valid() {
		return fmt.Errorf("unknown dtype %q", string(t.DType))
	}
	want, err := byteLength(t.DType, t.Shape)
	if err != nil {
		return err
	}
	if int64(len(t.Data)) != want {
		return fmt.Errorf("%s%v needs %d bytes, data holds %d", t.DType, t.Shape, want, len(t.Data))
	}
	return nil
}

// numElements multiplies the dimensions, failing on a negative dimension or
// an overflow of int64.
func numElements(shape []int64) (int64, error) {
	n := uint64(1)
	for _, d := range shape {
		if d < 0 {
			return 0, fmt.Errorf("negative dimension in shape %v", shape)
		}
		hi, lo := bits.Mul64(n, uint64(d))
		if hi != 0 || lo > 1<<62 {
			return 0, fmt.Errorf("shape %v has too many elements", shape)
		}
		n = lo
	}
	return int64(n), nil
}

// byteLength is numel*size for a known dtype, checked for overflow.
func byteLength(d DType, shape []int64) (int64, error) {
	n, err := numElements(shape)
	if err != nil {
		return 0, err
	}
	size := int64(d.Size())
	if size == 0 {
		return 0, fmt.Errorf("unknown dtype %q", string(d))
	}
	if n > (1<<62)/size {
		return 0, fmt.Errorf("shape %v of %s is too large", shape, d)
	}
	return n * size, nil
}

// contiguousStrides are the element strides of a C-contiguous tensor.
func contiguousStrides(shape []int64) []int64 {
	strides := make([]int64, len(shape))
	s := int64(1)
	for i := len(shape) - 1; i >= 0; i-- {
		strides[i] = s
		s *= max(shape[i], 1)
	}
	return strides
}
