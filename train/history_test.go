package train

import (
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"goclip/internal/rundir"
	"goclip/torch/serialize"
)

// checkpointStep is the schedule step recorded in the checkpoint at path.
func checkpointStep(t *testing.T, path string) int {
	t.Helper()
	obj, err := serialize.ReadPTObject(path)
	if err != nil {
		t.Fatal(err)
	}
	sched, _ := obj.(map[string]any)["schedule"].(map[string]any)
	switch v := sched["step"].(type) {
	case int64:
		return int(v)
	case int:
		return v
	}
	t.Fatalf("%s: schedule step %v (%T)", path, sched["step"], sched["step"])
	return 0
}

// TestCheckpointHistory: --save-every 3 keeps checkpoints/step-3/6/9/12.pt, each
// holding its own step; resuming from step-6 (with --keep 2) removes the later ones,
// redoes steps 7 to 12, keeps only step-9 and step-12, and ends at the validation loss
// of the run that was never resumed.
func TestCheckpointHistory(t *testing.T) {
	f := synthData(t, 48, "base")
	cfg := tinyConfig(t, f.tok)
	opts := Options{MaxSteps: 12, BatchSize: 8, LR: 1e-3, Warmup: 2, LogEvery: 2, SaveEvery: 3, Workers: 2, Out: t.TempDir()}
	ref, err := runJob(t, f, newModel(t, cfg, 42), opts)
	if err != nil {
		t.Fatal(err)
	}
	if ref.Steps != 12 {
		t.Fatalf("the run took %d steps, want 12 (--max-steps)", ref.Steps)
	}
	ckpts := filepath.Join(opts.Out, "checkpoints")
	steps, err := StepCheckpoints(ckpts)
	if err != nil || !reflect.DeepEqual(steps, []int{3, 6, 9, 12}) {
		t.Fatalf("step checkpoints %v (%v), want 3, 6, 9, 12", steps, err)
	}
	for _, s := range steps {
		if got := checkpointStep(t, filepath.Join(ckpts, StepCheckpoint(s))); got != s {
			t.Errorf("%s holds step %d", StepCheckpoint(s), got)
		}
	}
	from, err := ResolveCheckpoint(opts.Out, "step-6")
	if err != nil || from != filepath.Join(ckpts, "step-6.pt") {
		t.Fatalf("ResolveCheckpoint(step-6) = %q, %v", from, err)
	}
	var log strings.Builder
	opts.Resume, opts.ResumeFrom, opts.Keep, opts.Log = true, from, 2, &log
	got, err := runJob(t, f, newModel(t, cfg, 7), opts)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(log.String(), "removed the step checkpoints after step 6: step-9.pt, step-12.pt") {
		t.Errorf("the resume's log does not name the step checkpoints it removed:\n%s", log.String())
	}
	steps, _ = StepCheckpoints(ckpts)
	if !reflect.DeepEqual(steps, []int{9, 12}) {
		t.Errorf("after the resume with --keep 2: step checkpoints %v, want 9, 12", steps)
	}
	d := math.Abs(got.Val.Loss - ref.Val.Loss)
	t.Logf("run: val loss %.7f; resumed from step 6: %d steps, val loss %.7f (difference %.2g)", ref.Val.Loss, got.Steps, got.Val.Loss, d)
	if got.Steps != 12 || d > 1e-5 {
		t.Errorf("resumed from step-6.pt: %d steps, val loss %.7f; the run: 12 steps, %.7f", got.Steps, got.Val.Loss, ref.Val.Loss)
	}
	if s := checkpointStep(t, filepath.Join(ckpts, LastCheckpoint)); s != 12 {
		t.Errorf("last.pt holds step %d, want 12", s)
	}
}

// TestResolveCheckpoint maps latest, best, step-N and paths, and names what exists
// when the checkpoint does not.
func TestResolveCheckpoint(t *testing.T) {
	run := t.TempDir()
	ck := filepath.Join(run, "checkpoints")
	if err := os.MkdirAll(ck, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{LastCheckpoint, BestCheckpoint, "step-20.pt", "step-100.pt"} {
		if err := os.WriteFile(filepath.Join(ck, n), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	other := filepath.Join(t.TempDir(), "x.pt")
	os.WriteFile(other, nil, 0o644)
	for spec, want := range map[string]string{"": filepath.Join(ck, LastCheckpoint), "latest": filepath.Join(ck, LastCheckpoint),
		"best": filepath.Join(ck, BestCheckpoint), "step-100": filepath.Join(ck, "step-100.pt"), other: other} {
		if got, err := ResolveCheckpoint(run, spec); err != nil || got != want {
			t.Errorf("ResolveCheckpoint(%q) = %q, %v; want %q", spec, got, err, want)
		}
	}
	_, err := ResolveCheckpoint(run, "step-30")
	if err == nil || !strings.Contains(err.Error(), "--resume-from step-30") || !strings.Contains(err.Error(), "step-20, step-100") {
		t.Errorf("a missing step checkpoint gave %v, want an error naming --resume-from and the steps there", err)
	}
	if _, err := ResolveCheckpoint(run, ck); err == nil || !strings.Contains(err.Error(), "not a file") {
		t.Errorf("a folder gave %v", err)
	}
	if n, ok := rundir.StepOf("step-007.pt"); ok {
		t.Errorf("step-007.pt parsed as step %d", n)
	}
}
