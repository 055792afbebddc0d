package train

import (
	"bytes"
	"encoding/json"
	"errors"
	"math"
	"os"
	"path/filepath"
	"testing"

	"goclip/dataset"
	"goclip/torch"
)

// hostReadsPerStep runs a short run with opts and returns, for each step after the
// first, the host reads (torch.HostReads) made since the previous step's end.
func hostReadsPerStep(t *testing.T, opts Options) map[int]int64 {
	t.Helper()
	f := synthData(t, 120, "base")
	m := newModel(t, tinyConfig(t, f.tok), 7)
	reads := map[int]int64{}
	last := int64(-1)
	stepHook = func(step int) {
		now := torch.HostReads()
		if last >= 0 {
			reads[step] = now - last
		}
		last = now
	}
	defer func() { stepHook = nil }()
	// No validation split: the loop's only reads are its own.
	job := Job{Model: m, Tokenizer: f.tok, Train: f.ds.Split(dataset.Train)}
	opts.Out, opts.SkipExport, opts.Workers = t.TempDir(), true, 2
	if _, err := Run(t.Context(), job, opts); err != nil {
		t.Fatal(err)
	}
	return reads
}

// TestOneHostReadPerLogWindow counts the reads of tensor values into Go between steps:
// with --log-every 4 a step reads nothing but the fourth and the eighth, which read
// the window's results once; --sync-every-step reads once after every step.
func TestOneHostReadPerLogWindow(t *testing.T) {
	opts := Options{MaxSteps: 8, BatchSize: 8, LR: 1e-3, Warmup: 2, LogEvery: 4, ClipGrad: 1, WeightDecay: 0.1}
	reads := hostReadsPerStep(t, opts)
	for step := 2; step <= 8; step++ {
		want := int64(0)
		if step%4 == 0 {
			want = 1
		}
		if reads[step] != want {
			t.Errorf("--log-every 4: step %d made %d host reads, want %d (all: %v)", step, reads[step], want, reads)
		}
	}
	opts.SyncEveryStep = true
	reads = hostReadsPerStep(t, opts)
	for step := 2; step <= 8; step++ {
		if reads[step] != 1 {
			t.Errorf("--sync-every-step: step %d made %d host reads, want 1 (all: %v)", step, reads[step], reads)
		}
	}
}

// TestDeferredReadsSameRun runs the same run twice, reading every step and reading once
// per logging window (with gradient accumulation, clipping and a checkpoint on its own
// schedule, which reads the steps before it): the training rows of metrics.jsonl (but
// for their time and throughput), the checkpoint and the trained parameters are
// identical.
func TestDeferredReadsSameRun(t *testing.T) {
	f := synthData(t, 120, "base")
	cfg := tinyConfig(t, f.tok)
	run := func(sync bool) (rows []map[string]any, ckpt []byte, params map[string][]float32) {
		m := newModel(t, cfg, 11)
		opts := Options{Out: t.TempDir(), MaxSteps: 10, BatchSize: 8, GradAccum: 2, LR: 2e-3, Warmup: 3, LogEvery: 4, SaveEvery: 3,
			ClipGrad: 0.5, WeightDecay: 0.1, SyncEveryStep: sync}
		job := Job{Model: m, Tokenizer: f.tok, Train: f.ds.Split(dataset.Train)}
		opts.SkipExport, opts.Workers = true, 2
		if _, err := Run(t.Context(), job, opts); err != nil {
			t.Fatal(err)
		}
		data, err := os.ReadFile(filepath.Join(opts.Out, MetricsFile))
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range bytes.Split(bytes.TrimSpace(data), []byte("\n")) {
			var row map[string]any
			if err := json.Unmarshal(line, &row); err != nil {
				t.Fatal(err)
			}
			if _, ok := row["train_loss"]; ok {
				delete(row, "time")
				delete(row, "images_per_s")
				rows = append(rows, row)
			}
		}
		step3, err := os.ReadFile(filepath.Join(opts.Out, "checkpoints", "step-9.pt"))
		if err != nil {
			t.Fatal(err)
		}
		return rows, step3, snapshot(m)
	}
	rowsSync, ckptSync, pSync := run(true)
	rowsDef, ckptDef, pDef := run(false)
	a, _ := json.Marshal(rowsSync)
	b, _ := json.Marshal(rowsDef)
	if len(rowsSync) != 3 || !bytes.Equal(a, b) {
		t.Fatalf("training rows differ:\nreading every step: %s\nreading per window: %s", a, b)
	}
	if !bytes.Equal(ckptSync, ckptDef) {
		t.Error("step-9.pt differs between the two runs")
	}
	if d := maxDiff(pSync, pDef); d != 0 {
		t.Errorf("trained parameters differ by %g", d)
	}
	t.Logf("rows: %s", a)
}

// TestDeferredBadSteps poisons logit_scale after step 1 (through stepHook, which reads
// nothing): every later loss is NaN and MaxBadSteps 1 stops the run at its third step,
// reading every step or once per --log-every 4 window. The deferred run reports the same
// error at its read after step 4 (it took step 4, whose update was skipped on the device
// too); in both runs the skipped steps left every other parameter as step 1 made it.
func TestDeferredBadSteps(t *testing.T) {
	f := synthData(t, 120, "base")
	cfg := tinyConfig(t, f.tok)
	for _, sync := range []bool{true, false} {
		m := newModel(t, cfg, 4)
		var after1 map[string][]float32
		lastHook := 0
		stepHook = func(step int) {
			lastHook = step
			if step == 1 {
				torch.NoGrad(func() { m.LogitScale.Fill(math.NaN()) })
				after1 = snapshot(m)
			}
		}
		opts := Options{Out: t.TempDir(), Epochs: 1, BatchSize: 8, LR: 1e-3, LogEvery: 4, MaxBadSteps: 1, SyncEveryStep: sync}
		job := Job{Model: m, Tokenizer: f.tok, Train: f.ds.Split(dataset.Train)}
		opts.SkipExport, opts.Workers = true, 2
		_, err := Run(t.Context(), job, opts)
		stepHook = nil
		var be *BadStepsError
		if !errors.As(err, &be) || be.Step != 3 || be.Streak != 2 {
			t.Fatalf("sync-every-step %v: run returned %v, want a BadStepsError at step 3 after 2 bad steps", sync, err)
		}
		wantHook := 2 // the read after step 3 stops the run before its hook
		if !sync {
			wantHook = 3 // the read after step 4 does
		}
		if lastHook != wantHook {
			t.Errorf("sync-every-step %v: the last step run to its end was %d, want %d", sync, lastHook, wantHook)
		}
		now := snapshot(m)
		delete(now, "logit_scale")
		delete(after1, "logit_scale")
		if d := maxDiff(after1, now); d != 0 {
			t.Errorf("sync-every-step %v: skipped steps changed the parameters by %g", sync, d)
		}
	}
}
