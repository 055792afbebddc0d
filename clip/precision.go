package clip

import (
	"fmt"
	"strings"

	"goclip/torch"
)

// Precision is the arithmetic of the forward and backward passes. Weights, gradients and
// optimizer state stay float32 in every case.
type Precision string

// The precisions.
const (
	FP32 Precision = "fp32" // float32 throughout
	BF16 Precision = "bf16" // bfloat16 autocast
	FP16 Precision = "fp16" // float16 autocast with dynamic loss scaling (CUDA)
)

// ParsePrecision reads a --precision value; "" is the default for dev (bf16 on CUDA,
// fp32 on the CPU).
func ParsePrecision(s string, dev torch.Device) (Precision, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "":
		if dev.Type == torch.CUDADevice {
			return BF16, nil
		}
		return FP32, nil
	case "fp32", "float32":
		return FP32, nil
	case "bf16", "bfloat16":
		return BF16, nil
	case "fp16", "float16", "half":
		return FP16, nil
	}
	return "", fmt.Errorf("precision %q: want fp32, bf16 or fp16", s)
}

// autocast is the autocast dtype, and whether autocast is on.
func (p Precision) autocast() (torch.DType, bool) {
	switch p {
	case BF16:
		return torch.BFloat16, true
	case FP16:
		return torch.Float16, true
	}
	return torch.Float32, false
}

// Run runs f on dev under p's autocast.
func (p Precision) Run(dev torch.Device, f func()) {
	if dt, on := p.autocast(); on {
		torch.Autocast(dev, dt, f)
		return
	}
	f()
}
