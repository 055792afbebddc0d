package train

import "goclip/torch"

// LossScaler is fp16's dynamic loss scale: the loss is multiplied by Scale before
// backward and the gradients divided by it after (torch.UnscaleGrads). A step whose
// gradients overflowed is skipped and the scale multiplied by Backoff; after
// GrowthInterval good steps in a row the scale is multiplied by Growth.
//
// During a run the scale lives on the device and is updated there, as torch's
// GradScaler does it (_amp_update_scale_), so that a step never waits for the host: the
// exported fields are the host's copy, read into the device at the first step and
// written back from it when the trainer reads a step's results (at each log boundary,
// before a checkpoint, and after every Stepper step). All values are float64, as the
// host's arithmetic was; the loss is scaled by Scale as float32.
type LossScaler struct {
	Scale          float64
	GrowthInterval int
	Backoff        float64
	Growth         float64

	Good    int // good steps since the last change of scale
	Skipped int // steps skipped for overflow, over the run

	dev *deviceScaler // the device's copy (nil until the first step)
}

// deviceScaler is a LossScaler's state on the device, [] float64 tensors.
type deviceScaler struct {
	s                    *LossScaler
	scale, good, skipped *torch.Tensor
}

// DefaultInitScale is the scale a new LossScaler starts from, torch.cuda.amp's 2^16.
const DefaultInitScale = 65536

// NewLossScaler is a LossScaler with torch.cuda.amp.GradScaler's defaults:
// GrowthInterval 2000, Backoff 0.5, Growth 2.
func NewLossScaler(scale float64) *LossScaler {
	return &LossScaler{Scale: scale, GrowthInterval: 2000, Backoff: 0.5, Growth: 2}
}

// Update records one step's overflow check and reports whether the optimizer may step
// (the device update on the CPU, read back at once).
func (s *LossScaler) Update(overflow bool) (step bool) {
	err := torch.Try(func() {
		torch.WithScope(func() {
			x := 0.0
			if overflow {
				x = 1
			}
			d := s.device(torch.CPU)
			dev := d.scale.Device()
			d.update(torch.Full(nil, x, torch.Float64, dev).NeScalar(0), torch.Ones(nil, torch.Float64, dev).NeScalar(0))
		})
	})
	if err == nil {
		err = s.sync()
	}
	if err != nil {
		panic(err) // CPU tensor maths on scalars
	}
	return !overflow
}

// device is the scaler's state on dev, made from the host's fields at the first call.
func (s *LossScaler) device(dev torch.Device) *deviceScaler {
	if s.dev == nil {
		f := func(v float64) *torch.Tensor { return torch.Full(nil, v, torch.Float64, dev).Owned() }
		s.dev = &deviceScaler{s: s, scale: f(s.Scale), good: f(float64(s.Good)), skipped: f(float64(s.Skipped))}
	}
	return s.dev
}

// inverse is 1/scale ([] float64, in the current scope).
func (d *deviceScaler) inverse() *torch.Tensor {
	return torch.Ones(nil, torch.Float64, d.scale.Device()).Div(d.scale)
}

// update is one step's update on the device: with apply ([] bool) false, nothing
// changes (a step whose loss was not finite); else an overflow ([] bool) backs the scale
// off and counts a skipped step, and no overflow counts a good step, growing the scale
// after GrowthInterval of them.
func (d *deviceScaler) update(overflow, apply *torch.Tensor) {
	s := d.s
	over := overflow.LogicalAnd(apply)            // []
	ok := overflow.LogicalNot().LogicalAnd(apply) // []
	good1 := d.good.AddScalar(1)                  // []
	dev := d.scale.Device()
	grow := ok.LogicalAnd(good1.Ge(torch.Full(nil, float64(s.GrowthInterval), torch.Float64, dev))) // []
	scale := torch.Where(over, d.scale.MulScalar(s.Backoff), torch.Where(grow, d.scale.MulScalar(s.Growth), d.scale))
	good := torch.Where(over.LogicalOr(grow), torch.Zeros(nil, torch.Float64, dev), torch.Where(ok, good1, d.good))
	d.scale.CopyFrom(scale)
	d.good.CopyFrom(good)
	d.skipped.AddInPlace(over.To(torch.Float64), 1)
}

// values are the tensors sync reads, in order: scale, good, skipped.
func (d *deviceScaler) values() []*torch.Tensor {
	return []*torch.Tensor{d.scale.Reshape(1), d.good.Reshape(1), d.skipped.Reshape(1)}
}

// set writes values read from the device (values' order) into the host's fields.
func (s *LossScaler) set(v []float64) {
	s.Scale, s.Good, s.Skipped = v[0], int(v[1]), int(v[2])
}

// sync reads the device's state into the host's fields (a host wait).
func (s *LossScaler) sync() error {
	if s.dev == nil {
		return nil
	}
	return torch.Try(func() {
		torch.WithScope(func() { s.set(torch.Cat(s.dev.values(), 0).Float64s()) })
	})
}

// free releases the device's copy (the host's fields stay).
func (s *LossScaler) free() {
	if s != nil && s.dev != nil {
		s.dev.scale.Free()
		s.dev.good.Free()
		s.dev.skipped.Free()
		s.dev = nil
	}
}
