package train

// Memory tests that measure memory: the peak resident set of a fresh process (one per
// measurement, so that nothing another test left behind hides or fakes a leak) over a
// long training run and over evaluations of N and 10N images; and fault injection: a
// *torch.Error raised inside an inner scope (an accumulation micro-batch, a retrieval
// chunk) comes back as an error and leaves torch.Live() at its baseline.

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"goclip/clip"
	"goclip/dataset"
	"goclip/torch"
)

// memChildEnv names the measurement a re-executed test binary runs (see inChild);
// memDataEnv is the synthetic data set's folder it reads.
const (
	memChildEnv = "GOCLIP_MEMTEST_CHILD"
	memDataEnv  = "GOCLIP_MEMTEST_DATA"
)

// procStatusKB reads a "Vm..." field of /proc/self/status, in kB; it skips the test
// where the file does not exist (not Linux) and fails it under CI=true.
func procStatusKB(t testing.TB, field string) int64 {
	t.Helper()
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("no /proc/self/status: peak RSS cannot be measured: %v", err)
		}
		t.Skipf("no /proc/self/status: peak RSS cannot be measured here (%v)", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, field+":"); ok {
			f := strings.Fields(rest)
			if len(f) > 0 {
				if v, err := strconv.ParseInt(f[0], 10, 64); err == nil {
					return v
				}
			}
		}
	}
	t.Fatalf("/proc/self/status has no %s", field)
	return 0
}

// resetPeakRSS resets VmHWM to the current RSS (Linux's clear_refs "5"); it reports
// whether the kernel allowed it.
func resetPeakRSS() bool {
	return os.WriteFile("/proc/self/clear_refs", []byte("5"), 0) == nil
}

// inChild runs test name again in a fresh process of this test binary, with
// memChildEnv=what and memDataEnv=data, and returns the "MEMTEST key value" pairs it
// printed. The child process is where the measurement happens.
func inChild(t *testing.T, name, what, data string) map[string]int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^"+name+"$", "-test.v", "-test.count=1", "-test.timeout=4m")
	cmd.Env = append(os.Environ(), memChildEnv+"="+what, memDataEnv+"="+data)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("measurement %q: %v\n%s", what, err, out.String())
	}
	vals := map[string]int64{}
	sc := bufio.NewScanner(&out)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 3 && f[0] == "MEMTEST" {
			v, err := strconv.ParseInt(f[2], 10, 64)
			if err != nil {
				t.Fatalf("measurement %q printed %q", what, sc.Text())
			}
			vals[f[1]] = v
		}
	}
	if len(vals) == 0 {
		t.Fatalf("measurement %q printed no result:\n%s", what, out.String())
	}
	return vals
}

// report prints a measurement for the parent (see inChild).
func report(key string, v int64) { fmt.Printf("MEMTEST %s %d\n", key, v) }

// Training must not keep anything per step. 2,000 steps of Run (its data loader, the
// step's scopes, one checkpoint) on a minimal model (one layer per tower, width 32,
// batches of 16 images of 32 pixels) in a fresh process: the peak RSS of steps
// 501-2000 may exceed that of steps 1-500 by at most 48 MB. A leak of one batch of
// pixels per step (16·3·32·32 float32 = 192 kB, what run.go's unowned input tensor held
// before) grows the RSS by 288 MB over those 1,500 steps (measured before the fix:
// +288 MB), six times the bound; the
// bound is what the allocators' and Go heap's fluctuations need. The 2,000 steps are
// one epoch over 64 images listed 500 times each, so that no per-epoch work (loader
// restarts, checkpoints, the plot) costs time.
func TestTrainingPeakRSSFlat(t *testing.T) {
	const steps, warm, batch = 2000, 500, 16
	const boundKB = 48 << 10
	if os.Getenv(memChildEnv) == "train" {
		trainRSSChild(t, steps, warm, batch)
		return
	}
	procStatusKB(t, "VmHWM")
	dir := t.TempDir()
	if _, err := dataset.Synthesize(dir, dataset.SynthOptions{Images: 64, Size: 32, Seed: 5, Val: -1, Test: -1}); err != nil {
		t.Fatal(err)
	}
	v := inChild(t, t.Name(), "train", dir)
	grow := v["peak2_kb"] - v["peak1_kb"]
	how := "VmHWM"
	if v["hwm"] == 0 {
		how = "VmRSS after each step (VmHWM could not be reset)"
	}
	t.Logf("peak RSS: %d MB over steps 1-%d, %d MB over steps %d-%d (%+d kB; bound %d MB; measured by %s); live tensors %d before the run, %d after",
		v["peak1_kb"]>>10, warm, v["peak2_kb"]>>10, warm+1, steps, grow, boundKB>>10, how, v["live0"], v["live1"])
	if v["steps"] != steps {
		t.Fatalf("the run took %d steps, want %d", v["steps"], steps)
	}
	if grow > boundKB {
		t.Fatalf("peak RSS grew by %d MB between steps 1-%d and %d-%d (bound %d MB): training keeps memory per step",
			grow>>10, warm, warm+1, steps, boundKB>>10)
	}
	if v["live1"] != v["live0"] {
		t.Fatalf("torch.Live() went from %d before the run to %d after it", v["live0"], v["live1"])
	}
}

// trainRSSChild is TestTrainingPeakRSSFlat's measurement, in the child process.
func trainRSSChild(t *testing.T, steps, warm, batch int) {
	if err := torch.SetThreads(1); err != nil { // tiny ops: threads only wait for each other
		t.Fatal(err)
	}
	f := openFixture(t, os.Getenv(memDataEnv))
	cfg := tinyConfig(t, f.tok)
	cfg.Vision.PatchSize = 16 // 4 patches
	cfg.Text.MaxPositionEmbeddings = 16
	cfg.Vision.NumHiddenLayers, cfg.Text.NumHiddenLayers = 1, 1
	cfg.Vision.HiddenSize, cfg.Text.HiddenSize = 32, 32
	cfg.Vision.IntermediateSize, cfg.Text.IntermediateSize = 64, 64
	m := newModel(t, cfg, 1)
	var train []dataset.Item
	for len(train) < steps*batch {
		train = append(train, f.ds.Split(dataset.All)...)
	}
	live0 := torch.Live()
	hwm := true
	var peak1, peak2 int64 // kB: VmHWM, or the largest VmRSS sampled after each step
	opts := Options{Out: t.TempDir(), MaxSteps: steps, BatchSize: batch, LR: 1e-4, Warmup: 10,
		Workers: 2, LogEvery: 100, Precision: clip.FP32,
		AfterStep: func(step int, _ float64) {
			rss := procStatusKB(t, "VmRSS")
			switch {
			case step < warm:
				peak1 = max(peak1, rss)
			case step == warm:
				peak1 = max(peak1, rss)
				if hwm {
					peak1 = max(peak1, procStatusKB(t, "VmHWM"))
					hwm = resetPeakRSS()
				}
			default:
				peak2 = max(peak2, rss)
			}
		}}
	job := Job{Model: m, Tokenizer: f.tok, Train: train[:steps*batch]}
	opts.SkipExport = true
	res, err := Run(context.Background(), job, opts)
	if err != nil {
		t.Fatal(err)
	}
	if hwm {
		peak2 = max(peak2, procStatusKB(t, "VmHWM"))
	}
	report("steps", int64(res.Steps))
	report("peak1_kb", peak1)
	report("peak2_kb", peak2)
	if hwm {
		report("hwm", 1)
	} else {
		report("hwm", 0)
	}
	report("live0", live0)
	report("live1", torch.Live())
}

// Evaluation must keep only embeddings across batches. Evaluate on N = 24 and on 10N =
// 240 images (5 captions each, batches of 16, a model with 64-pixel images, 65 vision
// tokens of width 64), each in a fresh process: the peak RSS of the 10N evaluation may
// exceed the N one's by at most 32 MB (10-14 MB measured). What grows with N by design
// is small: the embeddings (128 B per image and per caption), a retrieval chunk of
// similarities (240 × 1,200 floats, 1.1 MB) and the Go side's items and batches.
// Keeping every batch's activations until the end, as Evaluate did before, adds about
// 0.3 MB per image here: 69 MB for the 216 extra images, measured.
func TestEvalPeakRSSFlat(t *testing.T) {
	const n, batch = 24, 16
	const boundKB = 32 << 10
	if what, ok := strings.CutPrefix(os.Getenv(memChildEnv), "eval:"); ok {
		k, err := strconv.Atoi(what)
		if err != nil {
			t.Fatal(err)
		}
		evalRSSChild(t, k, batch)
		return
	}
	procStatusKB(t, "VmHWM")
	f := synthSplit(t, 10*n, "base", -1, -1)
	small := inChild(t, t.Name(), "eval:"+strconv.Itoa(n), f.dir)
	large := inChild(t, t.Name(), "eval:"+strconv.Itoa(10*n), f.dir)
	grow := large["peak_kb"] - small["peak_kb"]
	t.Logf("peak RSS: %d MB evaluating %d images, %d MB evaluating %d (%+d kB; bound %d MB)",
		small["peak_kb"]>>10, small["images"], large["peak_kb"]>>10, large["images"], grow, boundKB>>10)
	if small["images"] != n || large["images"] != 10*n {
		t.Fatalf("evaluated %d and %d images, want %d and %d", small["images"], large["images"], n, 10*n)
	}
	if grow > boundKB {
		t.Fatalf("peak RSS grew by %d MB from %d to %d images (bound %d MB): evaluation keeps memory per batch",
			grow>>10, n, 10*n, boundKB>>10)
	}
	for _, v := range []map[string]int64{small, large} {
		if v["live1"] != v["live0"] {
			t.Fatalf("%d images: torch.Live() went from %d to %d", v["images"], v["live0"], v["live1"])
		}
	}
}

// evalRSSChild is TestEvalPeakRSSFlat's measurement of n images, in the child process.
func evalRSSChild(t *testing.T, n, batch int) {
	if err := torch.SetThreads(1); err != nil { // small ops: threads only wait for each other
		t.Fatal(err)
	}
	f := openFixture(t, os.Getenv(memDataEnv))
	items := f.ds.Split(dataset.All)
	if len(items) < n {
		t.Fatalf("the data set holds %d images, fewer than %d", len(items), n)
	}
	cfg := tinyConfig(t, f.tok)
	cfg.Vision.ImageSize = 64 // 8x8 patches of 8 pixels
	m := newModel(t, cfg, 1)
	live0 := torch.Live()
	res, err := Evaluate(context.Background(), m, f.tok, items[:n], EvalOptions{BatchSize: batch, Workers: 2})
	if err != nil {
		t.Fatal(err)
	}
	report("peak_kb", procStatusKB(t, "VmHWM"))
	report("images", int64(res.Images))
	report("live0", live0)
	report("live1", torch.Live())
}

// errInjected is the fault the hooks raise, as libtorch would report an out-of-memory.
var errInjected = &torch.Error{Op: "test", Msg: "injected fault (CUDA out of memory)"}

// checkInjected fails t unless err carries errInjected.
func checkInjected(t *testing.T, err error) {
	t.Helper()
	var te *torch.Error
	if err == nil || !errors.As(err, &te) || te != errInjected {
		t.Fatalf("got error %v, want the injected *torch.Error", err)
	}
}

// A torch error in the second micro-batch of gradient accumulation, inside its own
// scope, ends the run with that error; the process lives and every tensor the run made
// is freed.
func TestMicroBatchFaultFreesTensors(t *testing.T) {
	f := synthData(t, 120, "base")
	m := newModel(t, tinyConfig(t, f.tok), 3)
	calls := 0
	microBatchHook = func(j int) {
		calls++
		if calls == 4 { // step 2, micro-batch 1
			panic(errInjected)
		}
	}
	defer func() { microBatchHook = nil }()
	base := torch.Live()
	_, err := runJob(t, f, m, Options{Out: t.TempDir(), MaxSteps: 3, BatchSize: 8, GradAccum: 2, LR: 1e-4})
	checkInjected(t, err)
	if !strings.HasPrefix(err.Error(), "step 2: ") {
		t.Fatalf("error %q does not name step 2", err)
	}
	if calls != 4 {
		t.Fatalf("the hook ran %d times, want 4 (2 steps of 2 micro-batches)", calls)
	}
	if live := torch.Live(); live != base {
		t.Fatalf("torch.Live() is %d after the failed run, %d before", live, base)
	}
	// The model is still usable: a step without the fault succeeds.
	microBatchHook = nil
	if _, err := runJob(t, f, m, Options{Out: t.TempDir(), MaxSteps: 1, BatchSize: 8, GradAccum: 2, LR: 1e-4}); err != nil {
		t.Fatal(err)
	}
	if live := torch.Live(); live != base {
		t.Fatalf("torch.Live() is %d after a good run, %d before", live, base)
	}
}

// A torch error inside a retrieval chunk's scope, after the loss and the embeddings of
// every image and caption were computed, comes back from Evaluate; every tensor is freed.
func TestRetrievalChunkFaultFreesTensors(t *testing.T) {
	f := synthData(t, 120, "base")
	m := newModel(t, tinyConfig(t, f.tok), 3)
	items := f.ds.Split(dataset.All)
	chunks := 0
	retrievalChunkHook = func(int) {
		chunks++
		if chunks == 2 { // text to image, after image to text succeeded
			panic(errInjected)
		}
	}
	defer func() { retrievalChunkHook = nil }()
	base := torch.Live()
	_, err := Evaluate(context.Background(), m, f.tok, items, EvalOptions{BatchSize: 32, Workers: 2})
	checkInjected(t, err)
	if live := torch.Live(); live != base {
		t.Fatalf("torch.Live() is %d after the failed evaluation, %d before", live, base)
	}
	retrievalChunkHook = nil
	res, err := Evaluate(context.Background(), m, f.tok, items, EvalOptions{BatchSize: 32, Workers: 2})
	if err != nil || res.Images != len(items) {
		t.Fatalf("evaluation after the fault: %v, %d images of %d", err, res.Images, len(items))
	}
	if live := torch.Live(); live != base {
		t.Fatalf("torch.Live() is %d after a good evaluation, %d before", live, base)
	}
}
