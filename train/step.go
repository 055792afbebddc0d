package train

// One optimizer step: forward (with accumulation), backward, loss scaling, clipping,
// the update and the logit-scale clamp, inside a torch.Scope and torch.Try.

import (
	"errors"
	"fmt"

	"goclip/clip"
	"goclip/dataset"
	"goclip/nn"
	"goclip/torch"
)

// MaxLogitScale is the clamp of logit_scale after each step: ln(100).
const MaxLogitScale = 4.605170185988092

// stepOutcome says what became of one step.
type stepOutcome int

const (
	stepDone     stepOutcome = iota // the optimizer updated the parameters
	stepOverflow                    // fp16 overflow: skipped, loss scale backed off
	stepBad                         // non-finite loss or gradient norm: skipped
)

// stepResult is one step's loss (of the whole batch) and outcome, read on the host.
type stepResult struct {
	loss      float64
	gradNorm  float64 // 0 for a step whose loss was not finite or whose fp16 gradients overflowed
	outcome   stepOutcome
	lossScale float64 // fp16's loss scale after the step (0 without a scaler)
}

// The values of a step's stats tensor, what stepInScope leaves on the device: the step
// decides and applies (or skips) its update there, and the host reads these at the next
// log boundary (see trainer.sync).
const (
	statLoss = iota
	statGradNorm
	statOutcome
	statLossScale
	nStats
)

// readStats is the stepResult of stats values (nStats of them).
func readStats(v []float64) stepResult {
	return stepResult{loss: v[statLoss], gradNorm: v[statGradNorm], outcome: stepOutcome(v[statOutcome]), lossScale: v[statLossScale]}
}

// microBounds splits n samples into accum nearly equal consecutive parts.
func microBounds(n, accum int) []int {
	accum = max(1, min(accum, n))
	b := make([]int, accum+1)
	for j := range b {
		b[j] = j * n / accum
	}
	return b
}

// batchTensors are one batch's inputs on the device.
type batchTensors struct {
	pixels *torch.Tensor // [B, 3, S, S]
	ids    *torch.Tensor // [B, T]
}

// Stepper takes optimizer steps with the training loop's own step (forward with
// accumulation, loss, backward, loss scaling, clipping, AdamW, the logit-scale clamp).
// `goclip bench` times it.
type Stepper struct{ t *trainer }

// NewStepper builds the optimizer over params (nil: every parameter of m) as Run does,
// with opts' optimizer, precision and accumulation settings.
func NewStepper(m *clip.Model, params []nn.Named, opts Options) (*Stepper, error) {
	t, err := newTrainer(Job{Model: m, params: params}, opts)
	if err != nil {
		return nil, err
	}
	return &Stepper{t: t}, nil
}

// Step takes one step on a batch (pixels [B, 3, S, S], ids [B, T]) at the options' peak
// learning rate and returns the batch's loss. A non-finite loss or an fp16 overflow skips
// the update, as in Run. Step reads the loss, so it waits for the device.
func (s *Stepper) Step(pixels, ids *torch.Tensor) (float64, error) {
	res, err := s.t.step(batchTensors{pixels: pixels, ids: ids}, s.t.opts.LR)
	return res.loss, err
}

// Free releases the optimizer state.
func (s *Stepper) Free() { s.t.free() }

// stepBatch takes one optimizer step with learning rate lr on a loaded batch: the batch
// the trainer's feed returned last (its tensors already on the device, normalised in the
// step), or one the loader normalised on the host (Options.HostInput), copied to the
// model's device here with its ids trimmed by Model.TextIDs. The input tensors are made in
// the step's scope, so they are freed with its other tensors before it returns. It returns
// the step's stats tensor ([nStats] float64 on the device, owned by the caller) without
// waiting for the device.
func (t *trainer) stepBatch(b *dataset.Batch, lr float64) (*torch.Tensor, error) {
	if err := t.checkShare(b.Len()); err != nil {
		return nil, err
	}
	if t.feed != nil {
		if !t.feed.holds(b) {
			return nil, fmt.Errorf("train: batch %d of epoch %d did not come from the trainer's feed", b.Index, b.Epoch)
		}
		t.afterForward = t.feed.readAhead
		defer func() { t.afterForward = nil }()
		return t.stepWith(lr, t.feed.inputs)
	}
	cut, l, err := t.model.TextIDs(b.InputIDs, b.Len())
	if err != nil {
		return nil, fmt.Errorf("train: batch %d of epoch %d: %w", b.Index, b.Epoch, err)
	}
	return t.stepWith(lr, func() batchTensors {
		n, s, dev := int64(b.Len()), int64(b.Size), t.model.Device()
		return batchTensors{
			pixels: torch.FromFloat32(b.Pixels, n, 3, s, s).ToDevice(dev, false), // [B, 3, S, S]
			ids:    torch.FromInt64(cut, n, int64(l)).ToDevice(dev, false),       // [B, L]
		}
	})
}

// step runs one optimizer step on in with learning rate lr and reads its result (a host
// wait). Tensors it makes are freed before it returns; a tensor panic comes back as the
// error.
func (t *trainer) step(in batchTensors, lr float64) (stepResult, error) {
	stats, err := t.stepWith(lr, func() batchTensors { return in })
	if err != nil {
		return stepResult{}, err
	}
	defer stats.Free()
	var v []float64
	if err := torch.Try(func() { v = stats.Float64s() }); err != nil {
		return stepResult{}, err
	}
	res := readStats(v)
	if t.scaler != nil {
		if err := t.scaler.sync(); err != nil {
			return res, err
		}
	}
	return res, nil
}

// stepWith opens the step's scope, makes the inputs in it with inputs and runs the step,
// returning its stats tensor (owned by the caller). Every other tensor made is freed
// before it returns, whether the step succeeds or a tensor operation fails (its
// *torch.Error is the error returned).
func (t *trainer) stepWith(lr float64, inputs func() batchTensors) (stats *torch.Tensor, err error) {
	var shareErr error
	err = torch.Try(func() {
		torch.WithScope(func() {
			in := inputs()
			var start int64 // where this rank's rows start in the global batch
			if t.dp != nil {
				if start, shareErr = rowOffset(t.dp.PG, in.pixels.Size(0), in.pixels.Device()); shareErr != nil {
					return
				}
			}
			stats = t.stepInScope(in, start, lr).Owned()
		})
	})
	err = errors.Join(shareErr, err)
	if err != nil {
		stats.Free()
		torch.Try(t.opt.ZeroGrad) // a second failure here must not hide the first
		return nil, err
	}
	return stats, nil
}

// microBatchHook, when set, runs inside each gradient-accumulation micro-batch's scope
// after its forward pass, with the micro-batch's index. Tests set it to raise a
// *torch.Error there, as a CUDA out-of-memory error would, and check that the step
// returns the error and frees every tensor. nil outside tests.
var microBatchHook func(j int)

// stepInScope is one step, queued on the device without a host wait: forward, loss and
// backward (per micro-batch with accumulation), the data-parallel gradient average, fp16
// unscaling and the loss scaler's update, clipping, and AdamW, whose update is skipped
// on the device when the step is not good. The step is bad when a loss (the mean over
// the ranks, so that every rank decides alike) or the gradient norm is not finite, and
// an overflow when, its loss finite, fp16's gradients are not; what it returns is its
// [nStats] float64 stats tensor. Backward runs whatever the loss: a skipped step's
// gradients are cleared with the others. start is where this rank's rows begin in the
// global batch (rowOffset, once per step; 0 in one process).
func (t *trainer) stepInScope(in batchTensors, start int64, lr float64) *torch.Tensor {
	m := t.model
	dev := m.Device()
	n := int(in.pixels.Size(0))
	bounds := microBounds(n, t.opts.GradAccum)
	var sc *deviceScaler // nil: no loss scaling
	if t.scaler != nil {
		sc = t.scaler.device(dev)
	}
	var pg *torch.ProcessGroup // nil: one process
	if t.dp != nil {
		pg = t.dp.PG
	}
	// lossOf is the contrastive loss of (this rank's share of) the batch; bias is
	// SigLIP's (nil: CLIP's loss).
	lossOf := func(img, txt, scale, bias *torch.Tensor) *torch.Tensor {
		if bias != nil {
			return sigLIPLossGathered(img, txt, scale, bias, pg, start)
		}
		if pg == nil {
			return clip.ContrastiveLoss(clip.Logits(clip.Normalized(img), clip.Normalized(txt), scale)) // [B, B] -> []
		}
		return contrastiveLossGathered(img, txt, scale, pg, start)
	}

	// backward runs backward of loss·scale and records, in firstLoss, the first pass's
	// loss of the whole batch (the mean of the ranks' shares, in float64 as the host's
	// mean was) and, in anyBad, whether any pass's loss was not finite. Both live in the
	// step's scope; a micro-batch's own scope frees the rest.
	firstLoss, anyBad := torch.Zeros(nil, torch.Float64, dev), torch.Zeros(nil, torch.Float64, dev) // [], []: 0 or 1
	backward := func(loss *torch.Tensor, j int) {
		if f := t.afterForward; f != nil { // the forward is queued: the host is free from here
			t.afterForward = nil
			f()
		}
		v := loss.Detach().To(torch.Float64) // []
		if t.dp != nil {
			torch.Must(t.dp.PG.AllReduceOp(torch.ReduceAvg, v))
		}
		if j == 0 {
			firstLoss.CopyFrom(v)
		}
		anyBad.CopyFrom(anyBad.Maximum(v.IsFinite().LogicalNot().To(torch.Float64)))
		if sc != nil {
			loss = loss.Mul(sc.scale.To(loss.DType()))
		}
		loss.Backward()
		m.FinishBackward() // the encoders' layers, when checkpointed
	}

	if len(bounds) == 2 {
		var loss *torch.Tensor
		t.opts.Precision.Run(dev, func() {
			img := m.EncodeImage(in.pixels) // [B, P]
			txt := m.EncodeText(in.ids)     // [B, P]
			loss = lossOf(img, txt, m.LogitScale, t.bias)
		})
		backward(loss, 0)
	} else {
		// Embed every micro-batch without gradients, then back-propagate the whole
		// batch's loss through each micro-batch's recomputed embeddings in turn.
		k := len(bounds) - 1
		imgs := make([]*torch.Tensor, k)
		txts := make([]*torch.Tensor, k)
		micro := func(x *torch.Tensor, j int) *torch.Tensor {
			return x.Narrow(0, int64(bounds[j]), int64(bounds[j+1]-bounds[j]))
		}
		torch.NoGrad(func() {
			t.opts.Precision.Run(dev, func() {
				for j := 0; j < k; j++ {
					imgs[j] = m.EncodeImage(micro(in.pixels, j)).To(torch.Float32) // [b, P]
					txts[j] = m.EncodeText(micro(in.ids, j)).To(torch.Float32)     // [b, P]
				}
			})
		})
		for j := 0; j < k; j++ {
			torch.WithScope(func() { // this micro-batch's graph is freed after its backward
				var loss *torch.Tensor
				t.opts.Precision.Run(dev, func() {
					img := append([]*torch.Tensor(nil), imgs...)
					txt := append([]*torch.Tensor(nil), txts...)
					img[j] = m.EncodeImage(micro(in.pixels, j)) // [b, P], with gradients
					txt[j] = m.EncodeText(micro(in.ids, j))     // [b, P]
					scale, bias := m.LogitScale, t.bias
					if j > 0 {
						scale = scale.Detach() // autograd-detached: its gradient comes from the first pass only
						if bias != nil {
							bias = bias.Detach()
						}
					}
					loss = lossOf(torch.Cat(img, 0), torch.Cat(txt, 0), scale, bias)
				})
				if microBatchHook != nil {
					microBatchHook(j)
				}
				backward(loss, j)
			})
		}
	}

	if t.dp != nil {
		torch.Must(t.dp.AverageGradients())
	}
	params := t.opt.Params()
	lossBad := anyBad.NeScalar(0)      // [] bool
	noOverflow := lossBad.LogicalNot() // [] bool: no fp16 overflow to report (or no scaler)
	if sc != nil {
		overflow := torch.UnscaleGrads(params, sc.inverse()).NeScalar(0) // [] bool
		sc.update(overflow, noOverflow)                                  // only a finite loss counts
		noOverflow = overflow.LogicalNot().LogicalAnd(noOverflow)
	}
	norm := torch.ClipGradNorm(params, t.opts.ClipGrad).To(torch.Float64) // []
	zero, one, two := torch.Zeros(nil, torch.Float64, dev), torch.Ones(nil, torch.Float64, dev), torch.Full(nil, 2, torch.Float64, dev)
	outcome := torch.Where(lossBad, two, torch.Where(noOverflow, torch.Where(norm.IsFinite(), zero, two), one)) // []: a stepOutcome
	skip := outcome.NeScalar(0)                                                                                 // [] bool
	if err := t.opt.Update(lr, skip); err != nil {
		panic(err) // the shim's *torch.Error as it came, recovered by stepWith
	}
	t.opt.ZeroGrad()
	torch.NoGrad(func() {
		ls := m.LogitScale
		ls.CopyFrom(torch.Where(skip, ls, ls.ClampMax(MaxLogitScale))) // a skipped step leaves it as it was
	})
	scale := zero
	if sc != nil {
		scale = sc.scale
	}
	gradNorm := torch.Where(noOverflow, norm, zero)                                       // today's 0 for a bad loss or an overflow
	return torch.Stack([]*torch.Tensor{firstLoss, gradNorm, outcome, scale.Reshape()}, 0) // [nStats]
}
