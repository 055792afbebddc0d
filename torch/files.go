package torch

import (
	"fmt"
	"maps"
	"path/filepath"
	"slices"
	"strings"

	"goclip/torch/serialize"
)

// The file formats themselves (safetensors, torch.save's zip) are read and written by the
// pure-Go package torch/serialize; this file converts between its RawTensor and Tensor.

var toSerialDType = map[DType]serialize.DType{
	Float32: serialize.F32, Float16: serialize.F16, BFloat16: serialize.BF16, Float64: serialize.F64,
	Int64: serialize.I64, Int32: serialize.I32, Int16: serialize.I16, Int8: serialize.I8,
	Uint8: serialize.U8, Bool: serialize.BOOL,
}

// SerialDType is the safetensors name of a dtype ("F32", "BF16", ...).
func SerialDType(d DType) serialize.DType { return toSerialDType[d] }

// DTypeOf maps a safetensors dtype name to a DType.
func DTypeOf(d serialize.DType) (DType, error) {
	for k, v := range toSerialDType {
		if v == d {
			return k, nil
		}
	}
	return 0, fmt.Errorf("unsupported dtype %q", d)
}

// FromRaw copies a RawTensor into a new tensor on dev.
func FromRaw(r serialize.RawTensor, dev Device) (*Tensor, error) {
	dt, err := DTypeOf(r.DType)
	if err != nil {
		return nil, err
	}
	return FromBytes(r.Data, dt, r.Shape, dev)
}

// Raw copies the tensor's values to the host as a RawTensor.
func (t *Tensor) Raw() serialize.RawTensor {
	return serialize.RawTensor{DType: SerialDType(t.DType()), Shape: t.Shape(), Data: t.Bytes()}
}

// FromRawMap converts every RawTensor; on error, the tensors made so far are freed.
func FromRawMap(raw map[string]serialize.RawTensor, dev Device) (map[string]*Tensor, error) {
	out := make(map[string]*Tensor, len(raw))
	for _, k := range slices.Sorted(maps.Keys(raw)) {
		t, err := FromRaw(raw[k], dev)
		if err != nil {
			FreeMap(out)
			return nil, fmt.Errorf("tensor %q: %w", k, err)
		}
		out[k] = t.Owned()
	}
	return out, nil
}

// RawMap copies every tensor to the host.
func RawMap(ts map[string]*Tensor) (map[string]serialize.RawTensor, error) {
	out := make(map[string]serialize.RawTensor, len(ts))
	for _, k := range slices.Sorted(maps.Keys(ts)) {
		var r serialize.RawTensor
		if err := Try(func() { r = ts[k].Raw() }); err != nil {
			return nil, fmt.Errorf("tensor %q: %w", k, err)
		}
		out[k] = r
	}
	return out, nil
}

// FreeMap frees every tensor of a map.
func FreeMap(ts map[string]*Tensor) {
	for _, t := range ts {
		t.Free()
	}
}

// LoadTensors reads a state dict from a .safetensors file or a torch.save file (.pt,
// .bin, .pth, .ckpt) onto dev. The caller owns the tensors (FreeMap).
func LoadTensors(path string, dev Device) (map[string]*Tensor, error) {
	var raw map[string]serialize.RawTensor
	var err error
	switch strings.ToLower(filepath.Ext(path)) {
	case ".safetensors":
		raw, _, err = serialize.ReadSafetensors(path)
	case ".pt", ".bin", ".pth", ".ckpt":
		raw, err = serialize.ReadPT(path)
	default:
		return nil, fmt.Errorf("%s: unknown checkpoint format (want .safetensors, .pt, .bin or .pth)", path)
	}
	if err != nil {
		return nil, err
	}
	ts, err := FromRawMap(raw, dev)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return ts, nil
}

// SaveSafetensors writes tensors to a .safetensors file atomically.
func SaveSafetensors(path string, ts map[string]*Tensor, metadata map[string]string) error {
	raw, err := RawMap(ts)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return serialize.WriteSafetensors(path, raw, metadata)
}

// SavePT writes tensors as a state dict that torch.load(path, weights_only=True) opens,
// atomically.
func SavePT(path string, ts map[string]*Tensor) error {
	raw, err := RawMap(ts)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return serialize.WritePT(path, raw)
}
