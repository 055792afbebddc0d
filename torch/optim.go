package torch

/*
#include "goclip_torch.h"
*/
import "C"

import (
	"fmt"
	"unsafe"
)

func handles(op string, ts []*Tensor) []C.gt_tensor {
	hs := make([]C.gt_tensor, len(ts))
	for i, t := range ts {
		hs[i] = t.handle(op)
	}
	return hs
}

func first(hs []C.gt_tensor) *C.gt_tensor {
	if len(hs) == 0 {
		return nil
	}
	return (*C.gt_tensor)(unsafe.Pointer(&hs[0]))
}

// AdamWGroup is a set of parameters sharing a weight decay, with their moment estimates.
type AdamWGroup struct {
	Params      []*Tensor
	WeightDecay float64
	ExpAvg      []*Tensor // first moments, same shapes as Params
	ExpAvgSq    []*Tensor // second moments
}

// AdamW is torch.optim.AdamW (decoupled weight decay, no amsgrad) over parameter groups.
// Its state (the step counter and the moment tensors) can be read and restored exactly
// for checkpoints. The step counter is a tensor on the parameters' device, counting the
// updates applied: a step skipped on the device (Update's foundInf) leaves it, and with it
// the bias correction of the next update, as it was, without the host waiting.
type AdamW struct {
	Groups []*AdamWGroup
	Beta1  float64
	Beta2  float64
	Eps    float64
	Fused  bool // use fused kernels where the build and device have them

	steps *Tensor // [] float32 on the parameters' device: completed updates
}

// NewAdamW creates the optimizer with zeroed moments. groups[i] lists parameters that
// share decays[i].
func NewAdamW(groups [][]*Tensor, decays []float64, beta1, beta2, eps float64) *AdamW {
	o := &AdamW{Beta1: beta1, Beta2: beta2, Eps: eps, Fused: true}
	dev := CPU
	found := false
	for i, ps := range groups {
		g := &AdamWGroup{Params: ps, WeightDecay: decays[i]}
		for _, p := range ps {
			if !found {
				dev, found = p.Device(), true
			}
			g.ExpAvg = append(g.ExpAvg, zerosLike(p))
			g.ExpAvgSq = append(g.ExpAvgSq, zerosLike(p))
		}
		o.Groups = append(o.Groups, g)
	}
	o.steps = Zeros(nil, Float32, dev).Owned()
	return o
}

func zerosLike(p *Tensor) *Tensor {
	i := p.info()
	return Zeros(p.Shape(), i.dtype, i.device).Owned()
}

// Steps is the number of updates applied (a host read of the device's counter: it waits
// for the device).
func (o *AdamW) Steps() int64 { return int64(o.steps.Item()) }

// Update applies one step with learning rate lr to every parameter that has a gradient.
// foundInf (nil: none) is a one-value tensor on the parameters' device: non-zero skips
// the update on the device, leaving the parameters, the moments and the step counter as
// they were. Neither case waits for the device on CUDA with the fused kernel.
func (o *AdamW) Update(lr float64, foundInf *Tensor) error {
	// inc is what this update adds to the step counter: 1, or 0 when it is skipped.
	var inc *Tensor
	if err := Try(func() {
		WithScope(func() {
			if foundInf == nil {
				inc = Ones(nil, Float32, o.steps.Device()).Owned()
			} else {
				inc = foundInf.EqScalar(0).To(Float32).Reshape().Owned()
			}
		})
		o.steps.AddInPlace(inc, 1)
	}); err != nil {
		inc.Free()
		return err
	}
	defer inc.Free()
	var fh C.gt_tensor
	if foundInf != nil {
		fh = foundInf.handle("adamw")
	}
	for _, g := range o.Groups {
		if len(g.Params) == 0 {
			continue
		}
		ps, ms, vs := handles("adamw", g.Params), handles("adamw", g.ExpAvg), handles("adamw", g.ExpAvgSq)
		err := statusErr("adamw", C.gt_adamw_step(first(ps), first(ms), first(vs), C.int(len(ps)), C.double(lr),
			C.double(o.Beta1), C.double(o.Beta2), C.double(o.Eps), C.double(g.WeightDecay), o.steps.handle("adamw"), fh, cbool(o.Fused)))
		keep(g.Params...)
		keep(g.ExpAvg...)
		keep(g.ExpAvgSq...)
		keep(foundInf, o.steps)
		if err != nil {
			// A failed group takes the counter back (the groups before it may have
			// stepped, as they always could).
			Try(func() { o.steps.AddInPlace(inc, -1) })
			return err
		}
	}
	return nil
}

// ZeroGrad clears the gradients of every parameter.
func (o *AdamW) ZeroGrad() {
	for _, g := range o.Groups {
		for _, p := range g.Params {
			p.ZeroGrad()
		}
	}
}

// Params lists every parameter in group order.
func (o *AdamW) Params() []*Tensor {
	var ps []*Tensor
	for _, g := range o.Groups {
		ps = append(ps, g.Params...)
	}
	return ps
}

// Free releases the moment tensors and the step counter.
func (o *AdamW) Free() {
	o.steps.Free()
	for _, g := range o.Groups {
		for i := range g.ExpAvg {
			g.ExpAvg[i].Free()
			g.ExpAvgSq[i].Free()
		}
	}
}

// LoadState copies saved moments into the optimizer (shapes must match).
func (o *AdamW) LoadState(step int64, expAvg, expAvgSq [][]*Tensor) error {
	if len(expAvg) != len(o.Groups) || len(expAvgSq) != len(o.Groups) {
		return fmt.Errorf("optimizer state has %d/%d groups, optimizer %d", len(expAvg), len(expAvgSq), len(o.Groups))
	}
	for gi, g := range o.Groups {
		if len(expAvg[gi]) != len(g.Params) || len(expAvgSq[gi]) != len(g.Params) {
			return fmt.Errorf("optimizer group %d: state for %d parameters, group has %d", gi, len(expAvg[gi]), len(g.Params))
		}
		for i := range g.Params {
			if err := Try(func() { g.ExpAvg[i].CopyFrom(expAvg[gi][i]); g.ExpAvgSq[i].CopyFrom(expAvgSq[gi][i]) }); err != nil {
				return fmt.Errorf("optimizer group %d parameter %d: %w", gi, i, err)
			}
		}
	}
	if err := Try(func() { o.steps.Fill(float64(step)) }); err != nil {
		return fmt.Errorf("optimizer step: %w", err)
	}
	return nil
}

// ClipGradNorm scales the gradients so that their total 2-norm is at most maxNorm
// (maxNorm <= 0: only measure). It returns the norm before clipping as a 0-dim tensor,
// without synchronising with the device.
func ClipGradNorm(params []*Tensor, maxNorm float64) *Tensor {
	hs := handles("clip_grad_norm", params)
	var out C.gt_tensor
	must("clip_grad_norm", C.gt_clip_grad_norm(first(hs), C.int(len(hs)), C.double(maxNorm), &out))
	keep(params...)
	return wrap(out)
}

// UnscaleGrads multiplies every gradient by invScale (a one-value tensor, applied as
// float32) and returns a 0-dim float tensor that is 1 when any gradient held an inf or NaN
// (the loss-scaling check), else 0. It does not wait for the device.
func UnscaleGrads(params []*Tensor, invScale *Tensor) *Tensor {
	hs := handles("unscale_grads", params)
	var out C.gt_tensor
	must("unscale_grads", C.gt_unscale_grads(first(hs), C.int(len(hs)), invScale.handle("unscale_grads"), &out))
	keep(params...)
	keep(invScale)
	return wrap(out)
}
