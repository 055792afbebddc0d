package torch

import (
	"fmt"
	"strings"
)

// DType is a tensor element type. The values are the shim's dtype codes.
type DType int

// The element types goclip uses.
const (
	Float32 DType = iota
	Float16
	BFloat16
	Float64
	Int64
	Int32
	Uint8
	Bool
	Int8
	Int16
)

var dtypeNames = [...]string{"float32", "float16", "bfloat16", "float64", "int64", "int32", "uint8", "bool", "int8", "int16"}
var dtypeSizes = [...]int{4, 2, 2, 8, 8, 4, 1, 1, 1, 2}

func (d DType) String() string {
	if d >= 0 && int(d) < len(dtypeNames) {
		return dtypeNames[d]
	}
	return fmt.Sprintf("DType(%d)", int(d))
}

// Size is the number of bytes of one element.
func (d DType) Size() int { return dtypeSizes[d] }

// IsFloat reports whether d is a floating-point type.
func (d DType) IsFloat() bool { return d == Float32 || d == Float16 || d == BFloat16 || d == Float64 }

// ParseDType accepts goclip's names ("float32", "bf16", "fp16", ...).
func ParseDType(s string) (DType, error) {
	switch strings.ToLower(s) {
	case "float32", "fp32", "f32", "float":
		return Float32, nil
	case "float16", "fp16", "f16", "half":
		return Float16, nil
	case "bfloat16", "bf16":
		return BFloat16, nil
	case "float64", "fp64", "f64", "double":
		return Float64, nil
	case "int64", "i64", "long":
		return Int64, nil
	case "int32", "i32", "int":
		return Int32, nil
	case "uint8", "u8":
		return Uint8, nil
	case "bool":
		return Bool, nil
	case "int8", "i8":
		return Int8, nil
	case "int16", "i16":
		return Int16, nil
	}
	return 0, fmt.Errorf("unknown dtype %q (want float32, float16, bfloat16, float64, int64, int32, uint8, bool, int8 or int16)", s)
}
