package train

import (
	"context"
	"encoding/json"
	"errors"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"goclip/dataset"
)

// TestResumeEquivalence interrupts a run mid-epoch (as SIGINT does, by cancelling its
// context), resumes it, and expects the validation loss of an uninterrupted run.
func TestResumeEquivalence(t *testing.T) {
	f := synthData(t, 120, "base")
	cfg := tinyConfig(t, f.tok)
	opts := Options{Epochs: 2, BatchSize: 16, LR: 1e-3, Warmup: 3, LogEvery: 2, Workers: 2, WeightDecay: 0.1, ClipGrad: 1}

	full := opts
	full.Out = t.TempDir()
	ref, err := runJob(t, f, newModel(t, cfg, 42), full)
	if err != nil {
		t.Fatal(err)
	}
	perEpoch := ref.Steps / 2

	cut := opts
	cut.Out = t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stopAt := perEpoch + 2 // mid second epoch
	cut.AfterStep = func(step int, _ float64) {
		if step == stopAt {
			cancel()
		}
	}
	m := newModel(t, cfg, 42)
	job := Job{Model: m, Tokenizer: f.tok, Train: f.ds.Split(dataset.Train), Val: f.ds.Split(dataset.Val)}
	cut.SkipExport = true
	_, err = Run(ctx, job, cut)
	var ie *InterruptedError
	if !errors.As(err, &ie) || ie.Step != stopAt {
		t.Fatalf("interrupted run returned %v, want an InterruptedError at step %d", err, stopAt)
	}
	// Resume into a fresh model (as a new process would), with a different init.
	cut.AfterStep = nil
	cut.Resume = true
	job.Model = newModel(t, cfg, 999)
	got, err := Run(context.Background(), job, cut)
	if err != nil {
		t.Fatal(err)
	}
	d := math.Abs(got.Val.Loss - ref.Val.Loss)
	t.Logf("uninterrupted: %d steps, val loss %.7f; interrupted at step %d and resumed: %d steps, val loss %.7f; difference %.2g",
		ref.Steps, ref.Val.Loss, stopAt, got.Steps, got.Val.Loss, d)
	if got.Steps != ref.Steps || d > 1e-5 {
		t.Fatalf("resumed run: %d steps, val loss %.7f; uninterrupted %d steps, %.7f", got.Steps, got.Val.Loss, ref.Steps, ref.Val.Loss)
	}
	// metrics.jsonl holds each step once.
	data, err := os.ReadFile(filepath.Join(cut.Out, MetricsFile))
	if err != nil {
		t.Fatal(err)
	}
	seen := map[int]int{}
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		var row map[string]any
		if err := json.Unmarshal([]byte(line), &row); err != nil {
			t.Fatal(err)
		}
		if _, ok := row["train_loss"]; ok {
			seen[int(row["step"].(float64))]++
		}
	}
	for step, n := range seen {
		if n != 1 {
			t.Errorf("metrics.jsonl has %d training rows for step %d", n, step)
		}
	}
	for _, name := range []string{"config.json", "args.json", CurveFile, "checkpoints/last.pt", "checkpoints/best.pt"} {
		if _, err := os.Stat(filepath.Join(cut.Out, name)); err != nil {
			t.Errorf("run folder: %v", err)
		}
	}
}
