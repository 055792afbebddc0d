package serialize

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"math"
	"math/big"
	"strconv"
)

// sampleTensors has a tensor of every dtype, plus a scalar, an empty tensor
// and a zero-sized dimension, with recognisable values.
func sampleTensors() map[string]RawTensor {
	le16 := func(vs ...uint16) []byte {
		b := []byte{}
		for _, v := range vs {
			b = binary.LittleEndian.AppendUint16(b, v)
		}
		return b
	}
	f32 := func(vs ...float32) []byte {
		b := []byte{}
		for _, v := range vs {
			b = binary.LittleEndian.AppendUint32(b, math.Float32bits(v))
		}
		return b
	}
	i64 := func(vs ...int64) []byte {
		b := []byte{}
		for _, v := range vs {
			b = binary.LittleEndian.AppendUint64(b, uint64(v))
		}
		return b
	}
	f64 := func(vs ...float64) []byte {
		b := []byte{}
		for _, v := range vs {
			b = binary.LittleEndian.AppendUint64(b, math.Float64bits(v))
		}
		return b
	}
	i32 := func(vs ...int32) []byte {
		b := []byte{}
		for _, v := range vs {
			b = binary.LittleEndian.AppendUint32(b, uint32(v))
		}
		return b
	}
	return map[string]RawTensor{
		"vision_model.embeddings.class_embedding": {F32, []int64{2, 3}, f32(0, 1, -2, 3.5, 1e-8, float32(math.Inf(1)))},
		"half":        {F16, []int64{3}, le16(0x3c00, 0xc000, 0x7bff)}, // 1, -2, 65504
		"brain":       {BF16, []int64{1, 2}, le16(0x3f80, 0xbf80)},     // 1, -1
		"double":      {F64, []int64{2}, f64(math.Pi, -0.0)},
		"long":        {I64, []int64{3}, i64(-1, 1<<40, math.MaxInt64)},
		"int":         {I32, []int64{2, 1}, i32(-7, math.MaxInt32)},
		"short":       {I16, []int64{2}, le16(0xfffe, 300)},
		"char":        {I8, []int64{3}, []byte{0x80, 0x7f, 0}},
		"byte":        {U8, []int64{4}, []byte{0, 1, 254, 255}},
		"mask":        {BOOL, []int64{3}, []byte{1, 0, 1}},
		"scalar":      {F32, []int64{}, f32(42)},
		"empty":       {F32, []int64{0, 4}, []byte{}},
		"logit_scale": {F32, nil, f32(4.6052)},
	}
}

// summary builds the JSON tree that testdata/torch_interop.py builds from
// Python values, so that the two can be compared.
func summary(v any) any {
	switch v := v.(type) {
	case RawTensor:
		shape := make([]any, len(v.Shape))
		for i, d := range v.Shape {
			shape[i] = float64(d)
		}
		sum := sha256.Sum256(v.Data)
		return map[string]any{"tensor": map[string]any{
			"dtype": string(v.DType), "shape": shape, "sha256": hex.EncodeToString(sum[:]),
		}}
	case map[string]any:
		out := map[string]any{}
		for k, x := range v {
			out["s:"+k] = summary(x)
		}
		return map[string]any{"dict": out}
	case map[string]RawTensor:
		out := map[string]any{}
		for k, x := range v {
			out["s:"+k] = summary(x)
		}
		return map[string]any{"dict": out}
	case map[any]any:
		out := map[string]any{}
		for k, x := range v {
			var key string
			switch k := k.(type) {
			case string:
				key = "s:" + k
			case int64:
				key = "i:" + strconv.FormatInt(k, 10)
			case int:
				key = "i:" + strconv.Itoa(k)
			case bool:
				key = "b:" + strconv.FormatBool(k)
			default:
				panic(fmt.Sprintf("key %T", k))
			}
			out[key] = summary(x)
		}
		return map[string]any{"dict": out}
	case map[int64]any:
		out := map[string]any{}
		for k, x := range v {
			out["i:"+strconv.FormatInt(k, 10)] = summary(x)
		}
		return map[string]any{"dict": out}
	case []any:
		out := make([]any, len(v))
		for i, x := range v {
			out[i] = summary(x)
		}
		return map[string]any{"list": out}
	case Tuple:
		out := make([]any, len(v))
		for i, x := range v {
			out[i] = summary(x)
		}
		return map[string]any{"tuple": out}
	case nil:
		return map[string]any{"none": true}
	case bool:
		return map[string]any{"bool": v}
	case int:
		return map[string]any{"int": strconv.Itoa(v)}
	case int64:
		return map[string]any{"int": strconv.FormatInt(v, 10)}
	case *big.Int:
		return map[string]any{"int": v.String()}
	case float64:
		return map[string]any{"float": strconv.FormatUint(math.Float64bits(v), 10)}
	case string:
		return map[string]any{"str": v}
	case []byte:
		return map[string]any{"bytes": hex.EncodeToString(v)}
	}
	panic(fmt.Sprintf("summary of %T", v))
}
