package train

import (
	"math"
	"testing"
)

func TestScheduleValues(t *testing.T) {
	s := Schedule{Kind: Cosine, Base: 1e-3, MinLR: 1e-5, Warmup: 10, Total: 110}
	if err := s.Validate(); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		step int
		want float64
	}{
		{0, 1e-4},     // first warmup step: base/warmup
		{4, 5e-4},     // (4+1)/10
		{9, 1e-3},     // warmup ends at the base rate
		{10, 1e-3},    // cosine starts at the base rate
		{60, 5.05e-4}, // half way: min + (base-min)/2
		{110, 1e-5},   // the end: min
		{500, 1e-5},   // beyond the end: min
	}
	for _, c := range cases {
		if got := s.At(c.step); math.Abs(got-c.want) > 1e-12 {
			t.Errorf("cosine At(%d) = %g, want %g", c.step, got, c.want)
		}
	}
	// A quarter of the decay: min + (base-min)(1+cos(pi/4))/2.
	if got, want := s.At(35), 1e-5+(1e-3-1e-5)*0.5*(1+math.Cos(math.Pi/4)); math.Abs(got-want) > 1e-12 {
		t.Errorf("cosine At(35) = %g, want %g", got, want)
	}
	c := Schedule{Kind: Constant, Base: 2e-4, Warmup: 4, Total: 100}
	for step, want := range map[int]float64{0: 5e-5, 3: 2e-4, 50: 2e-4, 99: 2e-4} {
		if got := c.At(step); math.Abs(got-want) > 1e-15 {
			t.Errorf("constant At(%d) = %g, want %g", step, got, want)
		}
	}
	if (Schedule{Kind: "linear", Base: 1}).Validate() == nil {
		t.Error("unknown schedule kind accepted")
	}
}
