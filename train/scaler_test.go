package train

import (
	"testing"
)

func TestLossScaler(t *testing.T) {
	s := NewLossScaler(1024)
	s.GrowthInterval = 3
	if !s.Update(false) || !s.Update(false) || s.Scale != 1024 {
		t.Fatalf("scale changed before the interval: %g", s.Scale)
	}
	if s.Update(true) || s.Scale != 512 || s.Skipped != 1 || s.Good != 0 {
		t.Fatalf("overflow: scale %g skipped %d good %d, want 512 1 0", s.Scale, s.Skipped, s.Good)
	}
	for i := 0; i < 3; i++ {
		s.Update(false)
	}
	if s.Scale != 1024 || s.Good != 0 {
		t.Fatalf("after the growth interval: scale %g good %d, want 1024 0", s.Scale, s.Good)
	}
	d := NewLossScaler(DefaultInitScale)
	if d.GrowthInterval != 2000 || d.Backoff != 0.5 || d.Growth != 2 || d.Scale != 65536 {
		t.Fatalf("defaults %+v", d)
	}
}

// TestForcedOverflow runs real steps with a loss scale that overflows float32: the step
// is skipped, the parameters are untouched and the scale is halved.
func TestForcedOverflow(t *testing.T) {
	f := synthData(t, 120, "base")
	m := newModel(t, microConfig(t, f.tok), 3)
	tr, err := newTrainer(Job{Model: m}, Options{LR: 1e-2})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.free()
	tr.scaler = NewLossScaler(1e39) // inf in float32
	in := randomInputs(m.Config, 4, 11)
	defer in.free()
	before := snapshot(m)
	res, err := tr.step(in, 1e-2)
	if err != nil {
		t.Fatal(err)
	}
	if res.outcome != stepOverflow || tr.scaler.Scale != 5e38 || tr.scaler.Skipped != 1 || tr.opt.Steps() != 0 {
		t.Fatalf("outcome %v, scale %g, skipped %d, optimizer step %d; want overflow, 5e38, 1, 0",
			res.outcome, tr.scaler.Scale, tr.scaler.Skipped, tr.opt.Steps())
	}
	if d := maxDiff(before, snapshot(m)); d != 0 {
		t.Fatalf("a skipped step changed the parameters by %g", d)
	}
	// A finite scale steps, and the update is the unscaled one.
	tr.scaler = NewLossScaler(1024)
	tr.scaler.GrowthInterval = 1
	if res, err = tr.step(in, 1e-2); err != nil || res.outcome != stepDone {
		t.Fatalf("outcome %v err %v", res.outcome, err)
	}
	if tr.scaler.Scale != 2048 {
		t.Fatalf("scale %g after a good step with interval 1, want 2048", tr.scaler.Scale)
	}
	if maxDiff(before, snapshot(m)) == 0 {
		t.Fatal("a good step changed nothing")
	}
}
