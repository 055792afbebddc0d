package lora

import (
	"fmt"
	"math"

	"goclip/clip"
	"goclip/nn"
	"goclip/torch"
)

// Linear is a LoRA layer (peft's lora.Linear): a frozen base linear map plus a trainable
// low-rank update, y = base(x) + Scaling * B(A(dropout(x))). It implements
// nn.Projection, so it stands in a model's projection slot, and nn.Trainer, so dropout
// follows the model's train/eval mode.
type Linear struct {
	Layer   *nn.Linear    // base_layer: W [out, in], b [out]
	A       *torch.Tensor // lora_A.weight [r, in]
	B       *torch.Tensor // lora_B.weight [out, r]
	Scaling float64       // alpha / r, or alpha / sqrt(r) with rsLoRA
	Dropout float64       // on the LoRA branch's input, in training mode only
	train   bool
	merged  bool
}

// Scaling is the factor of the low-rank update: alpha/r, or alpha/sqrt(r) with rsLoRA.
func Scaling(r int, alpha float64, rslora bool) float64 {
	if rslora {
		return alpha / math.Sqrt(float64(r))
	}
	return alpha / float64(r)
}

// NewLinear wraps base with a rank-r update initialised as peft's default
// (init_lora_weights=True): A from Kaiming-uniform with a = sqrt(5) over fan_in = in,
// i.e. U(-1/sqrt(in), 1/sqrt(in)), and B zero, so the layer starts equal to base. A and B
// are Owned, require grad, and live beside base.Weight (same device and dtype). The
// layer starts in training mode (dropout on, when Dropout > 0).
func NewLinear(base *nn.Linear, r int, alpha, dropout float64, rslora bool) *Linear {
	w := base.Weight
	s := w.Shape() // [out, in]
	dt, dev := w.DType(), w.Device()
	a := torch.Zeros([]int64{int64(r), s[1]}, dt, dev).Owned() // [r, in]
	bound := 1 / math.Sqrt(float64(s[1]))
	a.UniformInPlace(-bound, bound)
	b := torch.Zeros([]int64{s[0], int64(r)}, dt, dev).Owned() // [out, r]
	return &Linear{
		Layer:   base,
		A:       a.SetRequiresGrad(true),
		B:       b.SetRequiresGrad(true),
		Scaling: Scaling(r, alpha, rslora),
		Dropout: dropout,
		train:   true,
	}
}

// Rank is r, the inner dimension of the update.
func (l *Linear) Rank() int { return int(l.A.Size(0)) }

// Forward maps x [..., in] to [..., out]. A merged layer computes base(x) only: its base
// weight already holds the update.
func (l *Linear) Forward(x *torch.Tensor) *torch.Tensor {
	y := l.Layer.Forward(x) // [..., out]
	if u := l.LowRankTerm(x); u != nil {
		return y.Add(u) // [..., out]
	}
	return y
}

// LowRankTerm is the update's share of Forward, Scaling * B(A(dropout(x))) [..., out] for
// x [..., in], or nil on a merged layer (nn.LowRank: attention adds it to its slice of
// the fused q/k/v product).
func (l *Linear) LowRankTerm(x *torch.Tensor) *torch.Tensor {
	if l.merged {
		return nil
	}
	h := x
	if l.train && l.Dropout > 0 {
		h = x.Dropout(l.Dropout, true) // [..., in]
	}
	u := torch.Linear(torch.Linear(h, l.A, nil), l.B, nil) // [..., r] -> [..., out]
	return u.MulScalar(l.Scaling)                          // [..., out]
}

// NamedParameters lists the base layer's prefix.weight and prefix.bias, then
// prefix.lora_A.weight and prefix.lora_B.weight.
func (l *Linear) NamedParameters(prefix string) []nn.Named {
	return append(l.Layer.NamedParameters(prefix),
		nn.Named{Name: nn.Join(prefix, "lora_A.weight"), T: l.A},
		nn.Named{Name: nn.Join(prefix, "lora_B.weight"), T: l.B})
}

// Base is the wrapped linear layer.
func (l *Linear) Base() *nn.Linear { return l.Layer }

// SetTrain turns dropout on the LoRA branch on (train) or off.
func (l *Linear) SetTrain(train bool) { l.train = train }

// Free releases the base layer's parameters and the LoRA matrices (idempotent).
func (l *Linear) Free() {
	l.Layer.Free()
	l.freeLoRA()
}

func (l *Linear) freeLoRA() {
	l.A.Free()
	l.B.Free()
}

// Delta is the update Scaling * B @ A [out, in] as a new tensor outside autograd
// (owned by the caller's innermost scope, or by the caller when none is open).
func (l *Linear) Delta() *torch.Tensor {
	s := torch.NewScope()
	defer s.Close()
	var d *torch.Tensor
	torch.NoGrad(func() { d = l.B.Matmul(l.A).MulScalar(l.Scaling) }) // [out, in]
	return s.Keep(d)
}

// Merge adds the update to the base weight (W += Scaling * B @ A, outside autograd);
// Forward then skips the LoRA branch. It does nothing on a merged layer.
func (l *Linear) Merge() {
	if l.merged {
		return
	}
	l.addDelta(1)
	l.merged = true
}

// Unmerge subtracts the update from the base weight again (exact up to rounding). It
// does nothing on a layer that is not merged.
func (l *Linear) Unmerge() {
	if !l.merged {
		return
	}
	l.addDelta(-1)
	l.merged = false
}

// Merged reports whether the base weight holds the update.
func (l *Linear) Merged() bool { return l.merged }

func (l *Linear) addDelta(sign float64) {
	d := l.Delta()
	defer d.Free()
	torch.NoGrad(func() { l.Layer.Weight.AddInPlace(d, sign) })
}

// LowPrecisionBase is a frozen base kept in a lower precision on the device (KeepBaseIn)
// with its float32 values on the host, to restore before a merge or an export.
type LowPrecisionBase struct {
	params []*torch.Tensor // the converted parameters, in the model's order
	host   []*torch.Tensor // their float32 values on the CPU (Owned), nil once restored
	dev    torch.Device
}

// KeepBaseIn converts the frozen weights that autocast to dtype computes in dtype anyway
// (every projection's base weight and bias, and the patch embedding's convolution) to
// dtype on the model's device, so that a LoRA step under autocast neither casts them nor
// keeps them in float32: the forward is the autocast one, operand for operand. Layer
// norms, embeddings, logit_scale and every parameter that requires grad (the adapters,
// the modules to save) stay float32. The float32 values move to the host (on the CPU
// they are the old tensors themselves), and Restore puts them back.
//
// Outside autocast the converted layers fail with a dtype mismatch: run every forward
// of the model under autocast to dtype until Restore.
func KeepBaseIn(m *clip.Model, dtype torch.DType) (*LowPrecisionBase, error) {
	lb := &LowPrecisionBase{dev: m.Device()}
	var cands []*torch.Tensor
	for _, s := range m.Projections() {
		base := (*s.Ptr).Base()
		cands = append(cands, base.Weight, base.Bias)
	}
	cands = append(cands, m.VisionModel.Embeddings.PatchEmbedding.Weight)
	err := torch.Try(func() {
		for _, p := range cands {
			if p == nil || p.RequiresGrad() || p.DType() != torch.Float32 {
				continue
			}
			torch.WithScope(func() {
				lb.host = append(lb.host, p.ToDevice(torch.CPU, false).Owned()) // [same], float32
				lb.params = append(lb.params, p)
				p.Assign(p.To(dtype))
			})
		}
	})
	if err != nil {
		if rerr := lb.Restore(); rerr != nil {
			return nil, fmt.Errorf("lora: keeping the base in %s: %w (and restoring it: %v)", dtype, err, rerr)
		}
		return nil, fmt.Errorf("lora: keeping the base in %s: %w", dtype, err)
	}
	return lb, nil
}

// Free drops the float32 copies without restoring them (a model about to be freed).
func (lb *LowPrecisionBase) Free() {
	if lb == nil {
		return
	}
	for _, h := range lb.host {
		h.Free()
	}
	lb.params, lb.host = nil, nil
}

// Len is the number of parameters converted.
func (lb *LowPrecisionBase) Len() int { return len(lb.params) }

// Restore puts the float32 values back on the device, bit for bit those KeepBaseIn
// found. It is idempotent; on an error the parameters not yet restored keep dtype and
// a later Restore retries them.
func (lb *LowPrecisionBase) Restore() error {
	if lb == nil {
		return nil
	}
	for len(lb.params) > 0 {
		p, h := lb.params[len(lb.params)-1], lb.host[len(lb.host)-1]
		if err := torch.Try(func() {
			torch.WithScope(func() { p.Assign(h.ToDevice(lb.dev, false)) })
		}); err != nil {
			return fmt.Errorf("lora: restoring the float32 base: %w", err)
		}
		h.Free()
		lb.params, lb.host = lb.params[:len(lb.params)-1], lb.host[:len(lb.host)-1]
	}
	return nil
}
