// Package tensortest holds test helpers that need tensors (package testutil cannot import
// torch, whose own tests use it).
package tensortest

import (
	"testing"

	"goclip/internal/testutil"
	"goclip/torch"
)

// ReadNpy reads a float32, float64 or int64 .npy file into a CPU tensor of its shape;
// float64 values become float32.
func ReadNpy(t testing.TB, path string) *torch.Tensor {
	t.Helper()
	dims, data := testutil.ReadNpy(t, path)
	shape := make([]int64, len(dims))
	for i, s := range dims {
		shape[i] = int64(s)
	}
	switch v := data.(type) {
	case []int64:
		return torch.FromInt64(v, shape...)
	case []float64:
		return torch.FromFloat64(v, shape...).To(torch.Float32)
	default:
		return torch.FromFloat32(v.([]float32), shape...)
	}
}
