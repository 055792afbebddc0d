package train

// LossScaler is fp16's dynamic loss scale, kept in Go: the loss is multiplied by Scale
// before backward and the gradients divided by it after (torch.UnscaleGrads). A step
// whose gradients overflowed is skipped and the scale multiplied by Backoff; after
// GrowthInterval good steps in a row the scale is multiplied by Growth.
type LossScaler struct {
	Scale          float64
	GrowthInterval int
	Backoff        float64
	Growth         float64

	Good    int // good steps since the last change of scale
	Skipped int // steps skipped for overflow, over the run
}

// DefaultInitScale is the scale a new LossScaler starts from, torch.cuda.amp's 2^16.
const DefaultInitScale = 65536

// NewLossScaler is a LossScaler with torch.cuda.amp.GradScaler's defaults:
// GrowthInterval 2000, Backoff 0.5, Growth 2.
func NewLossScaler(scale float64) *LossScaler {
	return &LossScaler{Scale: scale, GrowthInterval: 2000, Backoff: 0.5, Growth: 2}
}

// Update records one step's overflow check and reports whether the optimizer may step.
func (s *LossScaler) Update(overflow bool) (step bool) {
	if overflow {
		s.Scale *= s.Backoff
		s.Good = 0
		s.Skipped++
		return false
	}
	s.Good++
	if s.Good >= s.GrowthInterval {
		s.Scale *= s.Growth
		s.Good = 0
	}
	return true
}
