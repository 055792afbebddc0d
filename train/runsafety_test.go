package train

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"goclip/dataset"
	"goclip/torch"
	"goclip/torch/serialize"
)

// TestRunRefusesForeignOut: an --out that holds someone's files but no goclip run is
// refused before anything is written, and the files are left as they were.
func TestRunRefusesForeignOut(t *testing.T) {
	f := synthData(t, 120, "base")
	m := newModel(t, tinyConfig(t, f.tok), 1)
	out := t.TempDir()
	for _, name := range []string{"config.json", "model.pt"} {
		if err := os.WriteFile(filepath.Join(out, name), []byte("theirs"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	_, err := runJob(t, f, m, Options{Out: out, MaxSteps: 1, BatchSize: 8})
	if err == nil || !strings.Contains(err.Error(), "not a goclip run") || !strings.Contains(err.Error(), "config.json") {
		t.Fatalf("run into a foreign folder returned %v, want a refusal naming its files", err)
	}
	for _, name := range []string{"config.json", "model.pt"} {
		if got, _ := os.ReadFile(filepath.Join(out, name)); string(got) != "theirs" {
			t.Errorf("%s was overwritten: %q", name, got)
		}
	}
	if ents, _ := os.ReadDir(out); len(ents) != 2 {
		t.Errorf("the folder holds %d entries, want the 2 it had", len(ents))
	}
	// --resume into it is refused too.
	if _, err := OpenRun(out, true); err == nil || !strings.Contains(err.Error(), "not a goclip run") {
		t.Errorf("resume into a foreign folder: %v", err)
	}
}

// TestRunFolderLock: while a process holds a run folder, a second run and a resume
// into it fail at once, naming the holder's pid; after Close the folder is free.
func TestRunFolderLock(t *testing.T) {
	f := synthData(t, 120, "base")
	out := filepath.Join(t.TempDir(), "run")
	rf, err := OpenRun(out, false)
	if err != nil {
		t.Fatal(err)
	}
	pid := fmt.Sprintf("pid %d", os.Getpid())
	m := newModel(t, tinyConfig(t, f.tok), 1)
	_, err = runJob(t, f, m, Options{Out: out, MaxSteps: 1, BatchSize: 8})
	if err == nil || !strings.Contains(err.Error(), "in use") || !strings.Contains(err.Error(), pid) {
		t.Fatalf("a second run into a held folder returned %v, want an error naming %s", err, pid)
	}
	if err := os.MkdirAll(filepath.Join(out, "checkpoints"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(out, "checkpoints", LastCheckpoint), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenRun(out, true); err == nil || !strings.Contains(err.Error(), pid) {
		t.Fatalf("a resume into a held folder returned %v, want an error naming %s", err, pid)
	}
	if err := rf.Close(); err != nil {
		t.Fatal(err)
	}
	rf, err = OpenRun(out, true)
	if err != nil {
		t.Fatalf("after Close: %v", err)
	}
	rf.Close()
}

// TestRunSweepsStaleTemps: temporary files that a killed run left (kill -9 during a
// checkpoint write, or during model/'s write) are removed when the next run takes the
// folder.
func TestRunSweepsStaleTemps(t *testing.T) {
	out := filepath.Join(t.TempDir(), "run")
	rf, err := OpenRun(out, false)
	if err != nil {
		t.Fatal(err)
	}
	rf.Close()
	ck := filepath.Join(out, "checkpoints")
	stale := []string{
		filepath.Join(ck, ".last.pt.tmp-4000000-123"),
		filepath.Join(ck, ".best.pt.tmp-99"),
		filepath.Join(out, ".metrics.jsonl.tmp-4000001-7"),
	}
	if err := os.MkdirAll(filepath.Join(out, ".model.tmp-4000002-5"), 0o755); err != nil {
		t.Fatal(err)
	}
	stale = append(stale, filepath.Join(out, ".model.tmp-4000002-5"))
	if err := os.MkdirAll(ck, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, p := range stale[:3] {
		if err := os.WriteFile(p, make([]byte, 1024), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(ck, LastCheckpoint), []byte("kept"), 0o644); err != nil {
		t.Fatal(err)
	}
	rf, err = OpenRun(out, true)
	if err != nil {
		t.Fatal(err)
	}
	defer rf.Close()
	if len(rf.Swept) != len(stale) {
		t.Errorf("swept %v, want the %d stale temporaries", rf.Swept, len(stale))
	}
	for _, p := range stale {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Errorf("%s is still there", p)
		}
	}
	if got, _ := os.ReadFile(filepath.Join(ck, LastCheckpoint)); string(got) != "kept" {
		t.Error("last.pt was touched")
	}
}

// rewriteCheckpoint changes one entry of a checkpoint's sub-dict and writes it back.
func rewriteCheckpoint(t *testing.T, path, dict, key string, v any) {
	t.Helper()
	obj, err := serialize.ReadPTObject(path)
	if err != nil {
		t.Fatal(err)
	}
	top := obj.(map[string]any)
	if dict == "" {
		top[key] = v
	} else {
		top[dict].(map[string]any)[key] = v
	}
	if err := serialize.WritePTObject(path, top); err != nil {
		t.Fatal(err)
	}
}

// TestResumeRejectsBadValues: a crafted last.pt whose schedule, data position,
// counters or tensors are out of range is refused on --resume, naming the entry.
func TestResumeRejectsBadValues(t *testing.T) {
	f := synthData(t, 120, "base")
	cfg := tinyConfig(t, f.tok)
	out := t.TempDir()
	opts := Options{Out: out, MaxSteps: 2, SaveEvery: 1, BatchSize: 8, LogEvery: 1}
	if _, err := runJob(t, f, newModel(t, cfg, 2), opts); err != nil {
		t.Fatal(err)
	}
	last := filepath.Join(out, "checkpoints", LastCheckpoint)
	good, err := os.ReadFile(last)
	if err != nil {
		t.Fatal(err)
	}
	obj, err := serialize.ReadPTObject(last)
	if err != nil {
		t.Fatal(err)
	}
	nan := obj.(map[string]any)["model"].(map[string]any)["logit_scale"].(serialize.RawTensor)
	nan.Data = []byte{0, 0, 0xc0, 0x7f} // float32 NaN
	cases := []struct {
		dict, key string
		v         any
		want      string
	}{
		{"schedule", "step", int64(-100), "schedule.step"},
		{"data", "batch", int64(-5), "data.batch"},
		{"data", "batch", int64(1000), "data.batch"},
		{"data", "sample", int64(-1), "data.sample"},
		{"data", "epoch", int64(-2), "data.epoch"},
		{"optimizer", "step", int64(-3), "optimizer.step"},
		{"", "skipped", int64(-1), "skipped"},
		{"", "best_val_loss", math.NaN(), "best_val_loss"},
		{"model", "logit_scale", nan, "logit_scale"},
	}
	for _, c := range cases {
		t.Run(c.dict+"."+c.key, func(t *testing.T) {
			if err := os.WriteFile(last, good, 0o644); err != nil {
				t.Fatal(err)
			}
			rewriteCheckpoint(t, last, c.dict, c.key, c.v)
			resumed := opts
			resumed.Resume = true
			_, err := runJob(t, f, newModel(t, cfg, 3), resumed)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("resume from %s %v returned %v, want an error naming %s", c.key, c.v, err, c.want)
			}
		})
	}
}

// TestNonFiniteValidationLoss: a NaN validation loss stops the run through the
// bad-step policy (a BadStepsError naming the last good checkpoint, which stays the
// last good state), and metrics.jsonl records the loss as null.
func TestNonFiniteValidationLoss(t *testing.T) {
	f := synthData(t, 120, "base")
	m := newModel(t, tinyConfig(t, f.tok), 5)
	out := t.TempDir()
	opts := Options{Out: out, Epochs: 2, BatchSize: 8, SaveEvery: 1, EvalEvery: 2, LogEvery: 1}
	opts.AfterStep = func(step int, _ float64) {
		if step == 2 {
			torch.NoGrad(func() { m.LogitScale.Fill(math.NaN()) })
		}
	}
	_, err := runJob(t, f, m, opts)
	var be *BadStepsError
	if !errors.As(err, &be) || !be.Validation || be.Step != 2 {
		t.Fatalf("run returned %v, want a BadStepsError for the validation loss at step 2", err)
	}
	last := filepath.Join(out, "checkpoints", LastCheckpoint)
	if be.Checkpoint != last || !strings.Contains(err.Error(), "validation loss") {
		t.Fatalf("error %q, checkpoint %q; want last.pt named", err, be.Checkpoint)
	}
	obj, err := serialize.ReadPTObject(last)
	if err != nil {
		t.Fatal(err)
	}
	if step := obj.(map[string]any)["schedule"].(map[string]any)["step"].(int64); step != 1 {
		t.Errorf("last.pt is from step %d, want 1 (the last good save)", step)
	}
	data, err := os.ReadFile(filepath.Join(out, MetricsFile))
	if err != nil {
		t.Fatal(err)
	}
	var evalRows int
	for _, line := range bytes.Split(bytes.TrimSpace(data), []byte("\n")) {
		var row map[string]any
		if err := json.Unmarshal(line, &row); err != nil {
			t.Fatalf("metrics.jsonl row %q: %v", line, err)
		}
		if v, ok := row["val_loss"]; ok {
			evalRows++
			if v != nil {
				t.Errorf("val_loss %v, want null", v)
			}
		}
	}
	if evalRows != 1 {
		t.Errorf("%d evaluation rows, want 1", evalRows)
	}
}

// TestNonFiniteJSON: NaN and infinities are written as null in metrics rows and in
// EvalResult's JSON (eval.json, eval --json); finite numbers are unchanged.
func TestNonFiniteJSON(t *testing.T) {
	ev := EvalResult{Loss: math.NaN(), ImageToText: Recalls{R1: 0.25, R5: math.Inf(1), R10: 1}, Images: 3, Captions: 15}
	got, err := json.Marshal(ev)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"loss":null,"image_to_text":{"R@1":0.25,"R@5":null,"R@10":1},"text_to_image":{"R@1":0,"R@5":0,"R@10":0},"images":3,"captions":15}`
	if string(got) != want {
		t.Errorf("EvalResult JSON\n got %s\nwant %s", got, want)
	}
	row, err := json.Marshal(TrainRow{Time: "2026-01-02T03:04:05Z", Step: 3, Epoch: 0.5, LR: 1e-4, TrainLoss: math.Inf(-1),
		GradNorm: math.NaN(), LogitScale: 14.5, ImagesPerS: 10, Skipped: 1})
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"time":"2026-01-02T03:04:05Z","step":3,"epoch":0.5,"lr":0.0001,"train_loss":null,"grad_norm":null,"logit_scale":14.5,"images_per_s":10,"skipped":1}`; string(row) != want {
		t.Errorf("TrainRow JSON\n got %s\nwant %s", row, want)
	}
	er, err := json.Marshal(EvalRow{Step: 4, Epoch: 1, ValLoss: math.NaN()})
	if err != nil || !strings.Contains(string(er), `"val_loss":null`) {
		t.Errorf("EvalRow JSON %s, %v", er, err)
	}
	// A resumed run reads null rows back without failing.
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, MetricsFile), append(append(row, '\n'), er...), 0o644); err != nil {
		t.Fatal(err)
	}
	m, err := openMetrics(dir, true, 10, false)
	if err != nil || len(m.trainLosses) != 0 || len(m.val) != 0 {
		t.Errorf("openMetrics on null rows: %v, %d train, %d val", err, len(m.trainLosses), len(m.val))
	}
}

// TestOptionsValidate: every out-of-range setting is an error naming its flag, and the
// zeros that have a documented meaning are accepted.
func TestOptionsValidate(t *testing.T) {
	base := Options{Epochs: 10, BatchSize: 64, GradAccum: 1, LR: 5e-4, Warmup: 100, Beta2: 0.98, WeightDecay: 0.1,
		ClipGrad: 1, MaxBadSteps: 10, LogEvery: 10, EvalBatchSize: 256, Workers: 2}
	if err := base.Validate(); err != nil {
		t.Fatalf("the command line's defaults: %v", err)
	}
	bad := []struct {
		flag string
		set  func(o *Options)
	}{
		{"--epochs 0", func(o *Options) { o.Epochs = 0 }},
		{"--epochs -1", func(o *Options) { o.Epochs = -1 }},
		{"--max-steps -1", func(o *Options) { o.MaxSteps = -1 }},
		{"--batch-size 0", func(o *Options) { o.BatchSize = 0 }},
		{"--grad-accum 0", func(o *Options) { o.GradAccum = 0 }},
		{"--grad-accum 65", func(o *Options) { o.GradAccum = 65 }},
		{"--lr 0", func(o *Options) { o.LR = 0 }},
		{"--lr NaN", func(o *Options) { o.LR = math.NaN() }},
		{"--min-lr 0.1", func(o *Options) { o.MinLR = 0.1 }},
		{"--warmup -1", func(o *Options) { o.Warmup = -1 }},
		{"--schedule linear", func(o *Options) { o.Schedule = "linear" }},
		{"--weight-decay -0.1", func(o *Options) { o.WeightDecay = -0.1 }},
		{"--beta2 1", func(o *Options) { o.Beta2 = 1 }},
		{"--clip-grad -1", func(o *Options) { o.ClipGrad = -1 }},
		{"--max-bad-steps 0", func(o *Options) { o.MaxBadSteps = 0 }},
		{"--log-every 0", func(o *Options) { o.LogEvery = 0 }},
		{"--eval-every -1", func(o *Options) { o.EvalEvery = -1 }},
		{"--eval-batch-size 0", func(o *Options) { o.EvalBatchSize = 0 }},
		{"--save-every -1", func(o *Options) { o.SaveEvery = -1 }},
		{"--keep -1", func(o *Options) { o.Keep, o.SaveEvery = -1, 5 }},
		{"--keep 2", func(o *Options) { o.Keep, o.SaveEvery = 2, 0 }},
		{"--workers 0", func(o *Options) { o.Workers = 0 }},
	}
	for _, c := range bad {
		o := base
		c.set(&o)
		if err := o.Validate(); err == nil || !strings.HasPrefix(err.Error(), c.flag+":") {
			t.Errorf("%s: Validate returned %v, want an error naming the flag", c.flag, err)
		}
	}
	good := base
	good.Epochs, good.MaxSteps, good.EvalEvery, good.SaveEvery, good.ClipGrad, good.Warmup = 0, 50, 0, 0, 0, 0
	if err := good.Validate(); err != nil {
		t.Errorf("documented zeros: %v", err)
	}
	// Run applies the same checks: --epochs -1 no longer trains one epoch.
	f := synthData(t, 120, "base")
	m := newModel(t, tinyConfig(t, f.tok), 1)
	if _, err := runJob(t, f, m, Options{Out: t.TempDir(), Epochs: -1, BatchSize: 8}); err == nil || !strings.Contains(err.Error(), "--epochs -1") {
		t.Errorf("Run with Epochs -1 returned %v", err)
	}
}

// TestValidationSetFixed: the validation set is fixed when the run starts. Images
// missing then, or vanishing mid-run, are counted once however many evaluations follow;
// when more than ValSetTolerance of the set has vanished the run stops, saying so.
func TestValidationSetFixed(t *testing.T) {
	dir := t.TempDir()
	if _, err := dataset.Synthesize(dir, dataset.SynthOptions{Images: 70, Size: 64, Seed: 11, Val: 40, Test: 0}); err != nil {
		t.Fatal(err)
	}
	ds, err := dataset.Open(dir, dataset.Options{})
	if err != nil {
		t.Fatal(err)
	}
	tok, err := TrainTokenizer(ds.Split(dataset.Train), 600, nil)
	if err != nil {
		t.Fatal(err)
	}
	val := ds.Split(dataset.Val)
	if len(val) != 40 {
		t.Fatalf("%d validation images, want 40", len(val))
	}
	if err := os.Remove(val[0].Image); err != nil { // missing before the start
		t.Fatal(err)
	}
	// 39 images at the start: 1 may vanish (5%); in the second run (38 at the start)
	// losing 2 stops it.
	run := func(rep *dataset.Report, steps int, after func(int)) error {
		m := newModel(t, tinyConfig(t, tok), 6)
		job := Job{Model: m, Tokenizer: tok, Train: ds.Split(dataset.Train), Val: val}
		opts := Options{Out: t.TempDir(), MaxSteps: steps, BatchSize: 8, EvalEvery: 1, Workers: 2, Report: rep, SkipExport: true,
			AfterStep: func(step int, _ float64) { after(step) }}
		_, err := Run(context.Background(), job, opts)
		return err
	}
	var rep dataset.Report
	err = run(&rep, 4, func(step int) {
		if step == 1 {
			os.Remove(val[1].Image)
		}
	})
	if err != nil {
		t.Fatalf("a run losing 1 of 39 validation images: %v", err)
	}
	if n := rep.SkippedFor(dataset.MissingImage); n != 2 {
		t.Errorf("4 evaluations counted %d missing images, want 2 (each counted once): %s", n, rep.Summary())
	}
	var rep2 dataset.Report
	err = run(&rep2, 4, func(step int) {
		if step == 2 {
			os.Remove(val[2].Image)
			os.Remove(val[3].Image)
		}
	})
	if err == nil || !strings.Contains(err.Error(), "validation set changed") || !strings.Contains(err.Error(), val[2].Name) {
		t.Fatalf("a run losing 2 of 38 validation images returned %v, want a stop naming %s", err, val[2].Name)
	}
}
