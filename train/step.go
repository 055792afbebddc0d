package train

// One optimizer step: forward (with accumulation), backward, loss scaling, clipping,
// the update and the logit-scale clamp, inside a torch.Scope and torch.Try.

import (
	"fmt"
	"math"

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

// stepResult is one step's loss (of the whole batch) and outcome.
type stepResult struct {
	loss     float64
	gradNorm float64
	outcome  stepOutcome
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
// the update, as in Run.
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
// the step's scope, so they are freed with its other tensors before it returns.
func (t *trainer) stepBatch(b *dataset.Batch, lr float64) (stepResult, error) {
	if err := t.checkShare(b.Len()); err != nil {
		return stepResult{}, err
	}
	if t.feed != nil {
		if !t.feed.holds(b) {
			return stepResult{}, fmt.Errorf("train: batch %d of epoch %d did not come from the trainer's feed", b.Index, b.Epoch)
		}
		t.afterForward = t.feed.readAhead
		defer func() { t.afterForward = nil }()
		return t.stepWith(lr, t.feed.inputs)
	}
	cut, l, err := t.model.TextIDs(b.InputIDs, b.Len())
	if err != nil {
		return stepResult{}, fmt.Errorf("train: batch %d of epoch %d: %w", b.Index, b.Epoch, err)
	}
	return t.stepWith(lr, func() batchTensors {
		n, s, dev := int64(b.Len()), int64(b.Size), t.model.Device()
		return batchTensors{
			pixels: torch.FromFloat32(b.Pixels, n, 3, s, s).ToDevice(dev, false), // [B, 3, S, S]
			ids:    torch.FromInt64(cut, n, int64(l)).ToDevice(dev, false),       // [B, L]
		}
	})
}

// step runs one optimizer step on in with learning rate lr. Tensors it makes are freed
// before it returns; a tensor panic comes back as the error.
func (t *trainer) step(in batchTensors, lr float64) (stepResult, error) {
	return t.stepWith(lr, func() batchTensors { return in })
}

// stepWith opens the step's scope, makes the inputs in it with inputs and runs the step.
// Every tensor made is freed before it returns, whether the step succeeds or a tensor
// operation fails (its *torch.Error is the error returned).
func (t *trainer) stepWith(lr float64, inputs func() batchTensors) (res stepResult, err error) {
	err = torch.Try(func() {
		torch.WithScope(func() { res = t.stepInScope(inputs(), lr) })
	})
	if err != nil {
		torch.Try(t.opt.ZeroGrad) // a second failure here must not hide the first
	}
	return res, err
}

// microBatchHook, when set, runs inside each gradient-accumulation micro-batch's scope
// after its forward pass, with the micro-batch's index. Tests set it to raise a
// *torch.Error there, as a CUDA out-of-memory error would, and check that the step
// returns the error and frees every tensor. nil outside tests.
var microBatchHook func(j int)

func (t *trainer) stepInScope(in batchTensors, lr float64) stepResult {
	m := t.model
	dev := m.Device()
	n := int(in.pixels.Size(0))
	bounds := microBounds(n, t.opts.GradAccum)
	lossScale := 1.0
	if t.scaler != nil {
		lossScale = t.scaler.Scale
	}
	var res stepResult
	var pg *torch.ProcessGroup // nil: one process
	if t.dp != nil {
		pg = t.dp.PG
	}
	// lossOf is the contrastive loss of (this rank's share of) the batch; bias is
	// SigLIP's (nil: CLIP's loss).
	lossOf := func(img, txt, scale, bias *torch.Tensor) *torch.Tensor {
		if bias != nil {
			return sigLIPLossGathered(img, txt, scale, bias, pg)
		}
		if pg == nil {
			return clip.ContrastiveLoss(clip.Logits(clip.Normalized(img), clip.Normalized(txt), scale)) // [B, B] -> []
		}
		return contrastiveLossGathered(img, txt, scale, pg)
	}

	// backward runs backward of loss·lossScale unless the loss is not finite, and
	// returns the loss of the whole batch (the mean of the ranks' shares: every rank
	// decides on the same value, so all of them run backward or none does).
	backward := func(loss *torch.Tensor) (float64, bool) {
		if f := t.afterForward; f != nil { // the forward is queued: the host is free until Item
			t.afterForward = nil
			f()
		}
		v := loss.Item()
		if t.dp != nil {
			var err error
			v, err = t.dp.MeanScalar(v)
			torch.Must(err)
		}
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return v, false
		}
		loss.MulScalar(lossScale).Backward()
		m.FinishBackward() // the encoders' layers, when checkpointed
		return v, true
	}

	if len(bounds) == 2 {
		var loss *torch.Tensor
		t.opts.Precision.Run(dev, func() {
			img := m.EncodeImage(in.pixels) // [B, P]
			txt := m.EncodeText(in.ids)     // [B, P]
			loss = lossOf(img, txt, m.LogitScale, t.bias)
		})
		var ok bool
		if res.loss, ok = backward(loss); !ok {
			t.opt.ZeroGrad()
			res.outcome = stepBad
			return res
		}
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
			var v float64
			var ok bool
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
				v, ok = backward(loss)
			})
			if j == 0 {
				res.loss = v
			}
			if !ok {
				t.opt.ZeroGrad()
				res.outcome = stepBad
				return res
			}
		}
	}

	if t.dp != nil {
		torch.Must(t.dp.AverageGradients())
	}
	params := t.opt.Params()
	if t.scaler != nil {
		overflow := torch.UnscaleGrads(params, 1/lossScale).Item() != 0
		if !t.scaler.Update(overflow) {
			t.opt.ZeroGrad()
			res.outcome = stepOverflow
			return res
		}
	}
	res.gradNorm = torch.ClipGradNorm(params, t.opts.ClipGrad).Item()
	if math.IsNaN(res.gradNorm) || math.IsInf(res.gradNorm, 0) {
		t.opt.ZeroGrad()
		res.outcome = stepBad
		return res
	}
	if err := t.opt.Update(lr); err != nil {
		panic(err) // the shim's *torch.Error as it came, recovered by stepWith
	}
	t.opt.ZeroGrad()
	torch.NoGrad(func() { m.LogitScale.ClampMaxInPlace(MaxLogitScale) })
	return res
}
