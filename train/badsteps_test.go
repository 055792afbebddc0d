package train

import (
	"errors"
	"math"
	"path/filepath"
	"testing"

	"goclip/torch"
	"goclip/torch/serialize"
)

// TestBadStepStreak poisons logit_scale mid-run: every later loss is NaN, the run stops
// after MaxBadSteps+1 of them with a BadStepsError, and last.pt is the last good state.
func TestBadStepStreak(t *testing.T) {
	f := synthData(t, 120, "base")
	m := newModel(t, tinyConfig(t, f.tok), 4)
	out := t.TempDir()
	opts := Options{Out: out, Epochs: 3, BatchSize: 8, SaveEvery: 2, MaxBadSteps: 3, LogEvery: 1}
	opts.AfterStep = func(step int, _ float64) {
		if step == 3 {
			torch.NoGrad(func() { m.LogitScale.Fill(math.NaN()) })
		}
	}
	_, err := runJob(t, f, m, opts)
	var be *BadStepsError
	if !errors.As(err, &be) {
		t.Fatalf("run returned %v, want a BadStepsError", err)
	}
	t.Logf("error: %v", err)
	if be.Step != 7 || be.Streak != 4 || be.Checkpoint != filepath.Join(out, "checkpoints", LastCheckpoint) {
		t.Fatalf("stopped at step %d after %d bad steps, checkpoint %q; want step 7, 4, last.pt", be.Step, be.Streak, be.Checkpoint)
	}
	obj, err := serialize.ReadPTObject(be.Checkpoint)
	if err != nil {
		t.Fatal(err)
	}
	top := obj.(map[string]any)
	if step := top["schedule"].(map[string]any)["step"].(int64); step != 2 {
		t.Fatalf("last.pt is from step %d, want 2 (the last good save)", step)
	}
	ls := top["model"].(map[string]any)["logit_scale"].(serialize.RawTensor)
	if v := math.Float32frombits(uint32(ls.Data[0]) | uint32(ls.Data[1])<<8 | uint32(ls.Data[2])<<16 | uint32(ls.Data[3])<<24); math.IsNaN(float64(v)) {
		t.Fatal("last.pt holds the poisoned logit_scale")
	}
}
