package torch

import (
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
