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
	"goclip/lora"
	"goclip/torch"
	"goclip/torch/serialize"
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

// TestLoRAImprovesShiftedRecall trains a small base model on the base domain, then
// LoRA-fine-tunes it on the shifted domain: recall on the shifted test split must rise.
func TestLoRAImprovesShiftedRecall(t *testing.T) {
	base := synthData(t, 120, "base")
	shifted := synthSplit(t, 200, "shifted", 8, 32)
	cfg := tinyConfig(t, base.tok)
	m := newModel(t, cfg, 8)
	if _, err := runJob(t, base, m, Options{Out: t.TempDir(), Epochs: 3, BatchSize: 16, LR: 1e-3, Warmup: 3}); err != nil {
		t.Fatal(err)
	}
	test := shifted.ds.Split(dataset.Test)
	before, err := Evaluate(context.Background(), m, base.tok, test, EvalOptions{Workers: 2})
	if err != nil {
		t.Fatal(err)
	}
	a, err := lora.Inject(m, lora.Config{R: 8, Alpha: 16, Targets: []string{"q_proj", "k_proj", "v_proj"}})
	if err != nil {
		t.Fatal(err)
	}
	total, trainable, err := a.Counts()
	if err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	job := Job{Model: m, Tokenizer: base.tok, Train: shifted.ds.Split(dataset.Train), Val: shifted.ds.Split(dataset.Val),
		Test: test, LoRA: &LoRA{Adapter: a, BaseModel: "base"}}
	res, err := Run(context.Background(), job, Options{Out: out, Epochs: 5, BatchSize: 16, LR: 5e-3, Warmup: 3, Workers: 2})
	if err != nil {
		t.Fatal(err)
	}
	after := *res.Test
	score := func(r EvalResult) float64 {
		return r.ImageToText.R1 + r.ImageToText.R5 + r.TextToImage.R1 + r.TextToImage.R5
	}
	t.Logf("%s", lora.FormatCounts(total, trainable))
	t.Logf("shifted test before: %s", before)
	t.Logf("shifted test after:  %s", after)
	if !(score(after) > score(before)) || !(after.Loss < before.Loss) {
		t.Fatalf("LoRA fine-tune did not improve the shifted domain: before %s, after %s", before, after)
	}
	for _, name := range []string{"adapter/adapter_config.json", "adapter/adapter_model.safetensors", "model.pt", "eval.json"} {
		if _, err := os.Stat(filepath.Join(out, name)); err != nil {
			t.Errorf("run folder: %v", err)
		}
	}
}
