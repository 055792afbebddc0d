package train

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"goclip/dataset"
	"goclip/internal/testutil"
	"goclip/internal/tfevents"
)

// tbPoint is a scalar as TensorBoard reads it: step, value (nil: NaN), wall time.
type tbPoint struct {
	Step  int
	Value *float64
	Wall  float64
}

// readTensorBoard has the venv's tensorboard (EventAccumulator) read the scalars of
// the log folder dir.
func readTensorBoard(t *testing.T, dir string) map[string][]tbPoint {
	t.Helper()
	py := testutil.PythonTorch(t, "tensorboard")
	script := `
import json, math, sys
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
ea = EventAccumulator(sys.argv[1], size_guidance={"scalars": 0})
ea.Reload()
print(json.dumps({tag: [[e.step, None if math.isnan(e.value) else e.value, e.wall_time] for e in ea.Scalars(tag)] for tag in ea.Tags()["scalars"]}))
`
	cmd := exec.Command(py, "-c", script, dir)
	cmd.Dir = os.TempDir()
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("reading %s with tensorboard: %v: %s", dir, err, out)
	}
	var raw map[string][][3]*float64
	if err := json.Unmarshal(out, &raw); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	got := map[string][]tbPoint{}
	for tag, pts := range raw {
		for _, p := range pts {
			got[tag] = append(got[tag], tbPoint{Step: int(*p[0]), Value: p[1], Wall: *p[2]})
		}
	}
	return got
}

// metricsScalars is what RUN/tb/ should hold by metrics.jsonl: each row's numbers
// under their TensorBoard tags (nil: null), at the row's step and time.
func metricsScalars(t *testing.T, run string) map[string][]tbPoint {
	t.Helper()
	f, err := os.Open(filepath.Join(run, MetricsFile))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	want := map[string][]tbPoint{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var row struct {
			Time       string
			Step       int
			TrainLoss  *float64            `json:"train_loss"`
			LR         *float64            `json:"lr"`
			GradNorm   *float64            `json:"grad_norm"`
			LogitScale *float64            `json:"logit_scale"`
			ImagesPerS *float64            `json:"images_per_s"`
			Skipped    *float64            `json:"skipped"`
			ValLoss    *float64            `json:"val_loss"`
			I2T        map[string]*float64 `json:"val_image_to_text"`
			T2I        map[string]*float64 `json:"val_text_to_image"`
		}
		if err := json.Unmarshal(sc.Bytes(), &row); err != nil {
			t.Fatal(err)
		}
		at, err := time.Parse(time.RFC3339Nano, row.Time)
		if err != nil {
			t.Fatalf("row %s: time: %v", sc.Text(), err)
		}
		wall := float64(at.UnixNano()) / 1e9
		put := func(tag string, v *float64) {
			want[tag] = append(want[tag], tbPoint{Step: row.Step, Value: v, Wall: wall})
		}
		if row.TrainLoss != nil {
			put("train/loss", row.TrainLoss)
			put("train/lr", row.LR)
			put("train/grad_norm", row.GradNorm)
			put("train/logit_scale", row.LogitScale)
			put("train/images_per_s", row.ImagesPerS)
			put("train/skipped", row.Skipped)
		}
		if row.I2T != nil {
			put("val/loss", row.ValLoss)
			for _, k := range []string{"R@1", "R@5", "R@10"} {
				put("val/image_to_text_"+k, row.I2T[k])
				put("val/text_to_image_"+k, row.T2I[k])
			}
		}
	}
	return want
}

// compareTensorBoard expects TensorBoard to read from RUN/tb/ exactly the scalars of
// metrics.jsonl, step for step (values as float32, the format's type; wall times to
// the microsecond).
func compareTensorBoard(t *testing.T, run string) {
	t.Helper()
	files, err := tfevents.Files(filepath.Join(run, TensorBoardDir))
	if err != nil || len(files) != 1 {
		t.Fatalf("%s holds event files %v (%v), want one", TensorBoardDir, files, err)
	}
	got, want := readTensorBoard(t, filepath.Join(run, TensorBoardDir)), metricsScalars(t, run)
	if len(want["train/loss"]) == 0 || len(want["val/loss"]) == 0 {
		t.Fatalf("metrics.jsonl has no training or validation rows: %v", want)
	}
	for tag := range got {
		if _, ok := want[tag]; !ok {
			t.Errorf("TensorBoard has tag %s, which metrics.jsonl has no column for", tag)
		}
	}
	str := func(v *float64) string {
		if v == nil {
			return "NaN"
		}
		return fmt.Sprint(float32(*v))
	}
	for tag, w := range want {
		g := got[tag]
		if len(g) != len(w) {
			t.Errorf("%s: TensorBoard has %d points, metrics.jsonl %d", tag, len(g), len(w))
			continue
		}
		for i := range w {
			if g[i].Step != w[i].Step || str(g[i].Value) != str(w[i].Value) || math.Abs(g[i].Wall-w[i].Wall) > 1e-6 {
				t.Errorf("%s #%d: TensorBoard step %d value %s wall %.6f; metrics.jsonl step %d value %s wall %.6f",
					tag, i, g[i].Step, str(g[i].Value), g[i].Wall, w[i].Step, str(w[i].Value), w[i].Wall)
			}
		}
	}
	t.Logf("%s: %d tags, %d training and %d validation points, as in metrics.jsonl", run, len(got), len(got["train/loss"]), len(got["val/loss"]))
}

// TestTensorBoardMatchesMetrics trains, is interrupted, resumes, and expects RUN/tb/
// to hold what metrics.jsonl holds after each process (the resumed process rewrites
// the event file from the rows metrics.jsonl keeps, so no step appears twice).
func TestTensorBoardMatchesMetrics(t *testing.T) {
	testutil.PythonTorch(t, "tensorboard")
	f := synthData(t, 48, "base")
	cfg := tinyConfig(t, f.tok)
	opts := Options{Epochs: 2, BatchSize: 8, LR: 1e-3, Warmup: 2, LogEvery: 2, EvalEvery: 3, Workers: 2, Out: t.TempDir()}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	opts.AfterStep = func(step int, _ float64) {
		if step == 7 {
			cancel()
		}
	}
	job := Job{Model: newModel(t, cfg, 42), Tokenizer: f.tok, Train: f.ds.Split(dataset.Train), Val: f.ds.Split(dataset.Val)}
	opts.SkipExport = true
	_, err := Run(ctx, job, opts)
	var ie *InterruptedError
	if !errors.As(err, &ie) {
		t.Fatalf("interrupted run returned %v", err)
	}
	compareTensorBoard(t, opts.Out)
	// What a killed process writes after its last checkpoint (step 7): a row at step 8,
	// in both files, which the resumed run must drop from both.
	mf, err := os.OpenFile(filepath.Join(opts.Out, MetricsFile), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	orphan := fmt.Sprintf(`{"time":%q,"step":8,"epoch":1.3,"lr":0.001,"train_loss":9.5,"grad_norm":1,"logit_scale":14,"images_per_s":10,"skipped":0}`,
		time.Now().UTC().Format(time.RFC3339Nano))
	if _, err := mf.WriteString(orphan + "\n"); err != nil {
		t.Fatal(err)
	}
	mf.Close()
	files, _ := tfevents.Files(filepath.Join(opts.Out, TensorBoardDir))
	w := &tfevents.Writer{Path: files[0]}
	if err := w.Add(tfevents.Event{WallTime: tfevents.WallTime(time.Now()), Step: 8, Scalars: []tfevents.Scalar{{Tag: "train/loss", Value: 9.5}}}); err != nil {
		t.Fatal(err)
	}
	opts.AfterStep, opts.Resume = nil, true
	job.Model = newModel(t, cfg, 1)
	if _, err := Run(context.Background(), job, opts); err != nil {
		t.Fatal(err)
	}
	compareTensorBoard(t, opts.Out)
}
