package torch

import (
	"slices"
	"strings"
	"testing"
)

// CopyAsync is for CUDA devices only: a CPU target is refused by name, and without CUDA
// (this machine, or a shim built without it) the shim's error comes back as a *Error;
// neither leaks a tensor. torch/cudatest checks the copies themselves on a GPU.
func TestCopyAsyncRefusals(t *testing.T) {
	base := Live()
	WithScope(func() {
		x := FromUint8([]uint8{1, 2, 3}, 3)
		err := Try(func() { CopyAsync(CPU, x) })
		if err == nil || !strings.Contains(err.Error(), "not a CUDA device") {
			t.Errorf("CopyAsync to the CPU: %v", err)
		}
		if !CUDAAvailable() {
			err := Try(func() { CopyAsync(CUDA(0), x) })
			if err == nil || !strings.Contains(err.Error(), "copy_async") {
				t.Errorf("CopyAsync without CUDA: %v", err)
			}
			t.Logf("without CUDA: %v", err)
		}
		var c *Copy
		c.Wait(x) // a nil copy: nothing to wait for
		c.Free()
	})
	if d := Live() - base; d != 0 {
		t.Fatalf("%d tensors leaked", d)
	}
}

// PinnedUint8 holds the values given, as a CPU uint8 tensor of the shape given (pinned
// where CUDA is present; ordinary memory here), and refuses a shape that does not fit.
func TestPinnedUint8(t *testing.T) {
	base := Live()
	WithScope(func() {
		data := []uint8{0, 1, 2, 250, 251, 255}
		x := PinnedUint8(data, 2, 3)
		if x.DType() != Uint8 || x.Device() != CPU || !slices.Equal(x.Shape(), []int64{2, 3}) || !slices.Equal(x.Bytes(), data) {
			t.Fatalf("PinnedUint8 gave %v %v %v %v", x.DType(), x.Device(), x.Shape(), x.Bytes())
		}
		if err := Try(func() { PinnedUint8(data, 4, 2) }); err == nil {
			t.Fatal("6 values for shape [4 2] were accepted")
		}
	})
	if d := Live() - base; d != 0 {
		t.Fatalf("%d tensors leaked", d)
	}
}
