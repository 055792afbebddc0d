package cudatest

import (
	"bytes"
	"context"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"testing"
	"time"

	"goclip/clip"
	"goclip/dataset"
	"goclip/torch"
	"goclip/train"
)

// TestOneReadPerWindowCUDA: an 8-step tiny fp32 run on CUDA (inside its first epoch of
// 11 batches) with --log-every 4 reads the steps' results twice, six host reads fewer
// than the same run with SyncEveryStep (everything else in the two runs reads alike:
// the checkpoint at the end, the metrics), and logs the same
// training rows (losses and gradient norms to 1e-4 relative: CUDA's backward kernels
// are not bitwise reproducible run to run). Both runs' wall times are logged.
func TestOneReadPerWindowCUDA(t *testing.T) {
	needCUDA(t)
	ds, tok, cfg := tinySynthRun(t)
	type row struct {
		Step      int     `json:"step"`
		TrainLoss float64 `json:"train_loss"`
		GradNorm  float64 `json:"grad_norm"`
	}
	run := func(sync bool) ([]row, int64, time.Duration) {
		torch.ManualSeed(5)
		m, err := clip.New(cfg, dev)
		if err != nil {
			t.Fatal(err)
		}
		defer m.Free()
		out := filepath.Join(t.TempDir(), "run")
		opts := train.Options{Out: out, MaxSteps: 8, BatchSize: 32, LR: 1e-3, Warmup: 2, ClipGrad: 1,
			LogEvery: 4, Workers: 4, Precision: clip.FP32, SkipExport: true, SyncEveryStep: sync}
		job := train.Job{Model: m, Tokenizer: tok, Train: ds.Split(dataset.Train)}
		reads, began := torch.HostReads(), time.Now()
		if _, err := train.Run(context.Background(), job, opts); err != nil {
			t.Fatal(err)
		}
		took, reads := time.Since(began), torch.HostReads()-reads
		data, err := os.ReadFile(filepath.Join(out, train.MetricsFile))
		if err != nil {
			t.Fatal(err)
		}
		var rows []row
		for _, line := range bytes.Split(bytes.TrimSpace(data), []byte("\n")) {
			var r row
			if err := json.Unmarshal(line, &r); err != nil {
				t.Fatal(err)
			}
			rows = append(rows, r)
		}
		return rows, reads, took
	}
	perStep, syncReads, syncTook := run(true)
	perWindow, reads, took := run(false)
	t.Logf("8 steps: %d host reads and %v reading every step; %d and %v reading per window of 4", syncReads, syncTook, reads, took)
	if syncReads-reads != 6 {
		t.Errorf("reading per window made %d host reads, reading every step %d: want 6 fewer", reads, syncReads)
	}
	if len(perStep) != 2 || len(perWindow) != 2 {
		t.Fatalf("training rows: %d and %d, want 2", len(perStep), len(perWindow))
	}
	for i, a := range perStep {
		b := perWindow[i]
		for _, c := range [][2]float64{{a.TrainLoss, b.TrainLoss}, {a.GradNorm, b.GradNorm}} {
			if a.Step != b.Step || !(math.Abs(c[0]-c[1]) <= 1e-4*math.Abs(c[0])) {
				t.Fatalf("row %d: %+v reading every step, %+v per window", i, a, b)
			}
		}
	}
}
