package train

import (
	"fmt"
	"math"
)

// Schedule kinds.
const (
	Cosine   = "cosine"   // linear warmup, then cosine decay to MinLR
	Constant = "constant" // linear warmup, then the base rate
)

// Schedule is the learning rate as a function of the optimizer step: linear warmup from
// Base/Warmup to Base over the first Warmup steps, then a cosine decay from Base to MinLR
// at step Total (Cosine) or Base held (Constant).
type Schedule struct {
	Kind   string
	Base   float64
	MinLR  float64
	Warmup int // steps of linear warmup
	Total  int // optimizer steps of the whole run
}

// Validate reports a schedule that cannot be used.
func (s Schedule) Validate() error {
	switch {
	case s.Kind != Cosine && s.Kind != Constant:
		return fmt.Errorf("schedule %q: want %s or %s", s.Kind, Cosine, Constant)
	case s.Base <= 0 || math.IsNaN(s.Base) || math.IsInf(s.Base, 0):
		return fmt.Errorf("learning rate must be positive, got %g", s.Base)
	case s.Warmup < 0:
		return fmt.Errorf("warmup must be at least 0 steps, got %d", s.Warmup)
	case s.MinLR < 0 || s.MinLR > s.Base:
		return fmt.Errorf("minimum learning rate %g outside [0, %g]", s.MinLR, s.Base)
	}
	return nil
}

// At is the learning rate of optimizer step step (0-based: the rate the step-th update
// uses).
func (s Schedule) At(step int) float64 {
	if step < s.Warmup {
		return s.Base * float64(step+1) / float64(s.Warmup)
	}
	if s.Kind == Constant {
		return s.Base
	}
	decay := s.Total - s.Warmup
	if decay <= 0 {
		return s.Base
	}
	p := math.Min(float64(step-s.Warmup)/float64(decay), 1)
	return s.MinLR + (s.Base-s.MinLR)*0.5*(1+math.Cos(math.Pi*p))
}
