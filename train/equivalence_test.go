package train

// Training equivalence with the Python ecosystem (issue 11, 5d): from the same base model
// (a random transformers CLIPModel written by save_pretrained) and the same initial
// adapter (peft's get_peft_model with non-zero lora_B, written by save_pretrained), on
// the same one-batch data set, `goclip finetune --init-adapter` and `goclip train
// --model` take the same steps as transformers + peft + torch.optim.AdamW in
// testdata/equivalence_reference.py: the same loss at every step and the same final
// weights. CPU, fp32, one thread on both sides.

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"goclip/dataset"
	"goclip/internal/testutil"
	"goclip/torch"
)

// The equivalence runs' settings, passed to both sides.
const (
	eqImages      = 6 // the batch: the whole training split
	eqLR          = 1e-3
	eqWeightDecay = 0.1
	eqClipGrad    = 1.0 // below the gradients' norms (5 to 9 in the LoRA run): clipping acts
	eqSeed        = 0
	eqTol         = 1e-5 // relative, the bound
)

// errNoGo says that goclip cannot be built here (no go command: a machine that runs
// prebuilt test binaries).
var errNoGo = errors.New("no go command to build goclip/cmd/goclip (set GOCLIP_BIN to a goclip binary built from this tree)")

// goclipBin is the goclip binary the tests run: GOCLIP_BIN, or goclip/cmd/goclip built
// from this tree into the test's temporary folder, once per test binary.
var goclipBin = sync.OnceValues(func() (string, error) {
	if bin := os.Getenv("GOCLIP_BIN"); bin != "" {
		return bin, nil
	}
	gobin, err := exec.LookPath("go")
	if err != nil {
		return "", errNoGo
	}
	out := filepath.Join(fixtureDir, "goclip")
	cmd := exec.Command(gobin, "build", "-o", out, "goclip/cmd/goclip")
	if msg, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build goclip/cmd/goclip: %v\n%s", err, msg)
	}
	return out, nil
})

// goclipPath is goclipBin's binary. Without GOCLIP_BIN and a go command the test is
// skipped, or fails under CI=true.
func goclipPath(t *testing.T) string {
	t.Helper()
	bin, err := goclipBin()
	if errors.Is(err, errNoGo) && os.Getenv("CI") != "true" {
		t.Skip(err.Error() + "; skipping")
	}
	if err != nil {
		t.Fatal(err)
	}
	return bin
}

// goclip runs the goclip binary with args and returns its combined output.
func goclip(t *testing.T, args ...string) (string, error) {
	t.Helper()
	out, err := exec.Command(goclipPath(t), args...).CombinedOutput()
	return string(out), err
}

// eqInputs are the files equivalence_setup.py writes: base/ (the CLIPModel), adapter/
// (peft's) and data/ (the one-batch Karpathy data set).
type eqInputs struct{ dir, py string }

func (e eqInputs) base() string    { return filepath.Join(e.dir, "base") }
func (e eqInputs) adapter() string { return filepath.Join(e.dir, "adapter") }
func (e eqInputs) data() string    { return filepath.Join(e.dir, "data") }

var (
	eqOnce sync.Once
	eqDir  string
	eqErr  error
)

// equivalenceInputs writes the inputs once per test binary (after checking that there
// is a goclip binary to test).
func equivalenceInputs(t *testing.T) eqInputs {
	t.Helper()
	goclipPath(t)
	py := testutil.PythonTorch(t, "transformers", "peft", "safetensors", "PIL")
	vocab := testutil.Fixtures(t, "clip-tiny-openai")
	eqOnce.Do(func() {
		eqDir = filepath.Join(fixtureDir, "equivalence")
		eqErr = runPython(py, "equivalence_setup.py", "--out", eqDir, "--vocab", vocab, "--images", strconv.Itoa(eqImages))
	})
	if eqErr != nil {
		t.Fatal(eqErr)
	}
	return eqInputs{dir: eqDir, py: py}
}

// runPython runs testdata/<script> with the working directory outside the repository.
func runPython(py, script string, args ...string) error {
	path, err := filepath.Abs(filepath.Join("testdata", script))
	if err != nil {
		return err
	}
	cmd := exec.Command(py, append([]string{path}, args...)...)
	cmd.Dir = os.TempDir()
	cmd.Env = append(os.Environ(), "HF_HUB_OFFLINE=1", "TOKENIZERS_PARALLELISM=false", "OMP_NUM_THREADS=1")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%s: %v\n%s", script, err, out)
	}
	return nil
}

// stepOrders are the image names of each step's batch, in the order goclip's loader
// serves them (a seeded permutation of the training split per epoch; one batch per
// epoch here), so that the reference sums over the batch in the same order.
func stepOrders(t *testing.T, data string, steps int) [][]string {
	t.Helper()
	ds, err := dataset.Open(data, dataset.Options{})
	if err != nil {
		t.Fatal(err)
	}
	items := ds.Split(dataset.Train)
	if len(items) != eqImages || len(ds.Split(dataset.Val))+len(ds.Split(dataset.Test)) != 0 {
		t.Fatalf("data set: %d train, %d val, %d test images; want %d, 0, 0", len(items),
			len(ds.Split(dataset.Val)), len(ds.Split(dataset.Test)), eqImages)
	}
	l := dataset.NewLoader(items, dataset.LoaderOptions{Seed: eqSeed, Shuffle: true, BatchSize: eqImages, DropLast: true})
	defer l.Close()
	orders := make([][]string, steps)
	for s := range orders {
		for _, i := range l.Order(s) {
			orders[s] = append(orders[s], items[i].Name)
		}
	}
	return orders
}

// eqArgs are the training flags both runs share: one batch per step, the whole data
// set, fp32 on one CPU thread, constant learning rate without warmup, no augmentation
// (the default), a metrics row per step.
func eqArgs(out string, steps int) []string {
	return []string{"--out", out, "--max-steps", strconv.Itoa(steps), "--epochs", strconv.Itoa(steps),
		"--batch-size", strconv.Itoa(eqImages), "--lr", fmt.Sprint(eqLR), "--warmup", "0", "--schedule", Constant,
		"--weight-decay", fmt.Sprint(eqWeightDecay), "--clip-grad", fmt.Sprint(eqClipGrad), "--log-every", "1",
		"--device", "cpu", "--precision", "fp32", "--threads", "1", "--workers", "1", "--seed", strconv.Itoa(eqSeed)}
}

// reference runs equivalence_reference.py over orders and returns its per-step losses.
func reference(t *testing.T, in eqInputs, out string, orders [][]string, extra ...string) (losses, gradNorms []float64) {
	t.Helper()
	ordersFile := filepath.Join(out, "orders.json")
	if err := os.MkdirAll(out, 0o755); err != nil {
		t.Fatal(err)
	}
	data, _ := json.Marshal(orders)
	if err := os.WriteFile(ordersFile, data, 0o644); err != nil {
		t.Fatal(err)
	}
	args := append([]string{"--base", in.base(), "--data", in.data(), "--orders", ordersFile,
		"--lr", fmt.Sprint(eqLR), "--weight-decay", fmt.Sprint(eqWeightDecay), "--clip-grad", fmt.Sprint(eqClipGrad),
		"--threads", "1", "--out", out}, extra...)
	if err := runPython(in.py, "equivalence_reference.py", args...); err != nil {
		t.Fatal(err)
	}
	var steps struct {
		Loss     []float64 `json:"loss"`
		GradNorm []float64 `json:"grad_norm"`
	}
	raw, err := os.ReadFile(filepath.Join(out, "steps.json"))
	if err == nil {
		err = json.Unmarshal(raw, &steps)
	}
	if err != nil {
		t.Fatal(err)
	}
	return steps.Loss, steps.GradNorm
}

// runLosses are the train_loss of RUN/metrics.jsonl's training rows, by step (rows are
// written with Go's shortest exact float64 formatting: the loss at full precision).
func runLosses(t *testing.T, run string) []float64 {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(run, MetricsFile))
	if err != nil {
		t.Fatal(err)
	}
	var losses []float64
	for _, line := range strings.Split(strings.TrimSpace(string(raw)), "\n") {
		var row struct {
			Step      int      `json:"step"`
			TrainLoss *float64 `json:"train_loss"`
		}
		if err := json.Unmarshal([]byte(line), &row); err != nil {
			t.Fatalf("%s: %q: %v", MetricsFile, line, err)
		}
		if row.TrainLoss == nil {
			continue
		}
		if row.Step != len(losses)+1 {
			t.Fatalf("%s: row of step %d after %d steps", MetricsFile, row.Step, len(losses))
		}
		losses = append(losses, *row.TrainLoss)
	}
	return losses
}

// compareLosses checks goclip's per-step losses against the reference's.
func compareLosses(t *testing.T, got, want []float64) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("goclip logged %d steps, the reference %d", len(got), len(want))
	}
	for i := range want {
		rel := math.Abs(got[i]-want[i]) / math.Abs(want[i])
		t.Logf("step %d: loss goclip %.9f, reference %.9f, relative difference %.2e", i+1, got[i], want[i], rel)
		if !(rel <= eqTol) {
			t.Errorf("step %d: loss %.9g, reference %.9g (relative difference %.2e > %g)", i+1, got[i], want[i], rel, eqTol)
		}
	}
	// The losses move by far more than the tolerance: equal losses are not equal by
	// standing still.
	if d := math.Abs(want[len(want)-1]-want[0]) / want[0]; d < 1000*eqTol {
		t.Errorf("the reference loss moved by %.2e only over the run", d)
	}
}

// loadFloats reads a safetensors file as float64 slices by key (shapes alongside).
func loadFloats(t *testing.T, path string) (map[string][]float64, map[string][]int64) {
	t.Helper()
	ts, err := torch.LoadTensors(path, torch.CPU)
	if err != nil {
		t.Fatal(err)
	}
	defer torch.FreeMap(ts)
	vals, shapes := map[string][]float64{}, map[string][]int64{}
	if err := torch.Try(func() {
		for k, v := range ts {
			vals[k], shapes[k] = v.To(torch.Float64).Float64s(), v.Shape()
		}
	}); err != nil {
		t.Fatal(err)
	}
	return vals, shapes
}

// zeroGradient reports the parameters whose gradient is zero in exact arithmetic: the
// attention key projection's bias adds q·b_k to every logit of a query's row, which the
// softmax removes. Both sides update it only from rounding noise (which Adam's
// normalisation amplifies up to lr·|g|/(|g|+eps)), so its values are not comparable;
// compareWeights checks instead that neither side moved it by more than 1% of the
// smallest step Adam takes on a parameter with a real gradient.
func zeroGradient(key string) bool { return strings.HasSuffix(key, "self_attn.k_proj.bias") }

// compareWeights checks that got holds want's keys with their shapes, each tensor within
// eqTol of the reference (testutil.RelErr: max |got - want| / max |want|; zeroGradient
// tensors: both near their initial values), and that the training changed them by far
// more than that: the largest relative change from init over the tensors must exceed
// 100 tolerances. It logs the largest error of the tensors and of their updates (final -
// init). skip names keys that are not parameters.
func compareWeights(t *testing.T, got, want, init string, steps int, skip func(key string) bool) {
	t.Helper()
	g, gs := loadFloats(t, got)
	w, ws := loadFloats(t, want)
	i0, _ := loadFloats(t, init)
	var keys []string
	for k := range w {
		if !skip(k) {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	for k := range g {
		if _, ok := w[k]; !ok && !skip(k) {
			t.Errorf("%s: %s is not in the reference's %s", got, k, want)
		}
	}
	var worst, worstUpdate, moved float64
	var worstKey, worstUpdateKey string
	for _, k := range keys {
		if _, ok := g[k]; !ok {
			t.Errorf("%s: no %s (the reference has it, %v)", got, k, ws[k])
			continue
		}
		if !slices.Equal(gs[k], ws[k]) {
			t.Errorf("%s: shape %v, reference %v", k, gs[k], ws[k])
			continue
		}
		start, ok := i0[k]
		if !ok {
			t.Errorf("%s: not in the initial weights %s", k, init)
			continue
		}
		if zeroGradient(k) {
			limit := 0.01 * eqLR * float64(steps)
			for side, v := range map[string][]float64{"goclip": g[k], "reference": w[k]} {
				if d := maxAbsDiff(v, start); !(d <= limit) {
					t.Errorf("%s (gradient 0 in exact arithmetic): %s moved it by %.3g > %.3g", k, side, d, limit)
				}
			}
			continue
		}
		rel := testutil.RelErr(g[k], w[k])
		if !(rel <= eqTol) {
			t.Errorf("%s %v: relative error %.2e > %g", k, ws[k], rel, eqTol)
		}
		if rel > worst || math.IsInf(rel, 0) {
			worst, worstKey = rel, k
		}
		moved = math.Max(moved, testutil.RelErr(w[k], start))
		du, dw := make([]float64, len(start)), make([]float64, len(start))
		for j := range start {
			du[j], dw[j] = g[k][j]-start[j], w[k][j]-start[j]
		}
		if u := testutil.RelErr(du, dw); u > worstUpdate {
			worstUpdate, worstUpdateKey = u, k
		}
	}
	t.Logf("%d tensors: largest relative error %.2e (%s); of the updates %.2e (%s); largest relative change by training %.2e",
		len(keys), worst, worstKey, worstUpdate, worstUpdateKey, moved)
	if !(moved > 100*eqTol) {
		t.Errorf("training changed the weights by %.2e only (relative): the comparison cannot tell", moved)
	}
}

// maxAbsDiff is max |a - b| (+Inf for different lengths or a NaN).
func maxAbsDiff(a, b []float64) float64 {
	if len(a) != len(b) {
		return math.Inf(1)
	}
	var m float64
	for i := range a {
		d := math.Abs(a[i] - b[i])
		if math.IsNaN(d) {
			return math.Inf(1)
		}
		m = math.Max(m, d)
	}
	return m
}

func TestLoRATrainingMatchesPeft(t *testing.T) {
	in := equivalenceInputs(t)
	const steps = 5
	orders := stepOrders(t, in.data(), steps)
	dir := t.TempDir()
	run := filepath.Join(dir, "run")
	args := append([]string{"finetune", "--model", in.base(), "--init-adapter", in.adapter(), "--data", in.data()}, eqArgs(run, steps)...)
	if out, err := goclip(t, args...); err != nil {
		t.Fatalf("goclip %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	ref := filepath.Join(dir, "reference")
	losses, norms := reference(t, in, ref, orders, "--adapter", in.adapter())
	t.Logf("reference gradient norms before clipping: %.4g", norms)
	compareLosses(t, runLosses(t, run), losses)
	compareWeights(t, filepath.Join(run, AdapterDir, "adapter_model.safetensors"), filepath.Join(ref, "adapter", "adapter_model.safetensors"),
		filepath.Join(in.adapter(), "adapter_model.safetensors"), steps, func(string) bool { return false })
}

func TestFullFineTuneMatchesTransformers(t *testing.T) {
	in := equivalenceInputs(t)
	const steps = 3
	orders := stepOrders(t, in.data(), steps)
	dir := t.TempDir()
	run := filepath.Join(dir, "run")
	args := append([]string{"train", "--model", in.base(), "--data", in.data()}, eqArgs(run, steps)...)
	if out, err := goclip(t, args...); err != nil {
		t.Fatalf("goclip %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	ref := filepath.Join(dir, "reference")
	losses, norms := reference(t, in, ref, orders)
	t.Logf("reference gradient norms before clipping: %.4g", norms)
	compareLosses(t, runLosses(t, run), losses)
	positionIDs := func(k string) bool { return strings.HasSuffix(k, "position_ids") }
	compareWeights(t, filepath.Join(run, "model", "model.safetensors"), filepath.Join(ref, "model.safetensors"),
		filepath.Join(in.base(), "model.safetensors"), steps, positionIDs)
}

// TestInitAdapterFlagConflict: goclip finetune --init-adapter with a --lora-r or
// --lora-targets other than the adapter's fails before training, naming both values.
func TestInitAdapterFlagConflict(t *testing.T) {
	in := equivalenceInputs(t)
	run := filepath.Join(t.TempDir(), "run")
	for _, c := range []struct {
		flags []string
		want  []string
	}{
		{[]string{"--lora-r", "8"}, []string{"--lora-r 8", "r 4"}},
		{[]string{"--lora-alpha", "16"}, []string{"--lora-alpha 16", "lora_alpha 8"}},
		{[]string{"--lora-targets", "q_proj,v_proj"}, []string{"--lora-targets q_proj,v_proj", "k_proj,q_proj,v_proj"}},
	} {
		args := append([]string{"finetune", "--model", in.base(), "--init-adapter", in.adapter(), "--data", in.data()},
			append(c.flags, eqArgs(run, 1)...)...)
		out, err := goclip(t, args...)
		if err == nil {
			t.Errorf("%v: no error\n%s", c.flags, out)
			continue
		}
		for _, w := range c.want {
			if !strings.Contains(out, w) {
				t.Errorf("%v: the error does not say %q:\n%s", c.flags, w, out)
			}
		}
		if _, err := os.Stat(filepath.Join(run, MetricsFile)); err == nil {
			t.Errorf("%v: a run was started", c.flags)
		}
	}
	// The same values as the adapter's are accepted (a dry run: nothing trained).
	out, err := goclip(t, append([]string{"finetune", "--model", in.base(), "--init-adapter", in.adapter(), "--data", in.data(),
		"--lora-r", "4", "--lora-alpha", "8", "--lora-targets", "v_proj,q_proj,k_proj", "--dry-run"}, eqArgs(run, 1)...)...)
	if err != nil || !strings.Contains(out, "trainable params: ") {
		t.Errorf("agreeing flags: %v\n%s", err, out)
	}
}
