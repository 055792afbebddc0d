package main

// Data-parallel training end to end: goclip launch --nproc 2 against one process with
// the same global batch (gloo on loopback, fp32, one thread per rank), and a rank killed
// mid-run.

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"goclip/internal/testutil"
	"goclip/torch/serialize"
)

// trainLossesOf reads the train_loss of each row of RUN/metrics.jsonl.
func trainLossesOf(t *testing.T, run string) []float64 {
	t.Helper()
	f, err := os.Open(filepath.Join(run, "metrics.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []float64
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var row struct {
			TrainLoss *float64 `json:"train_loss"`
		}
		if err := json.Unmarshal(sc.Bytes(), &row); err != nil {
			t.Fatal(err)
		}
		if row.TrainLoss != nil {
			out = append(out, *row.TrainLoss)
		}
	}
	return out
}

// float32s decodes a float32 tensor.
func float32s(t *testing.T, name string, r serialize.RawTensor) []float32 {
	t.Helper()
	if r.DType != serialize.F32 {
		t.Fatalf("%s: dtype %v, want float32", name, r.DType)
	}
	out := make([]float32, len(r.Data)/4)
	for i := range out {
		out[i] = math.Float32frombits(binary.LittleEndian.Uint32(r.Data[4*i:]))
	}
	return out
}

// compareTensors returns, over the tensors of a and b (the same names), the largest
// |a-b| and the relative difference ||a-b||/||a|| over all of them (2-norms). A
// per-tensor ratio would mislead: the keys' biases get only rounding noise as their
// gradient (softmax ignores them) and stay near zero.
func compareTensors(t *testing.T, a, b map[string]serialize.RawTensor) (maxAbs, rel float64) {
	t.Helper()
	if len(a) != len(b) || len(a) == 0 {
		t.Fatalf("%d tensors against %d", len(a), len(b))
	}
	var num, den float64
	for name, ra := range a {
		rb, ok := b[name]
		if !ok {
			t.Fatalf("%s missing from the distributed run", name)
		}
		x, y := float32s(t, name, ra), float32s(t, name, rb)
		if len(x) != len(y) {
			t.Fatalf("%s: %d against %d values", name, len(x), len(y))
		}
		for i := range x {
			d := float64(x[i]) - float64(y[i])
			num += d * d
			den += float64(x[i]) * float64(x[i])
		}
		maxAbs = math.Max(maxAbs, testutil.MaxAbsDiff(x, y))
	}
	return maxAbs, math.Sqrt(num / den)
}

// compareLosses fails unless the two runs logged the same training losses within 1e-4
// relative, over at least 6 rows; it returns the largest relative difference.
func compareLosses(t *testing.T, one, two string) float64 {
	t.Helper()
	a, b := trainLossesOf(t, one), trainLossesOf(t, two)
	if len(a) < 6 || len(a) != len(b) {
		t.Fatalf("training loss rows: %d in one process, %d in two", len(a), len(b))
	}
	var worst float64
	for i := range a {
		rel := math.Abs(a[i]-b[i]) / math.Abs(a[i])
		worst = math.Max(worst, rel)
		if rel > 1e-4 {
			t.Errorf("step %d: loss %.7f in one process, %.7f in two (relative %.2g)", i+1, a[i], b[i], rel)
		}
	}
	return worst
}

// launchRun runs goclip launch --nproc n -- args (in child processes of this test
// binary, each with its own libtorch thread setting).
func launchRun(t *testing.T, n int, args ...string) {
	t.Helper()
	all := append([]string{"launch", "--nproc", strconv.Itoa(n), "--"}, args...)
	out, errOut, err := runGoclip(t, all...)
	if err != nil {
		t.Fatalf("goclip %s: %v\n%s%s", strings.Join(all, " "), err, out, errOut)
	}
}

func TestDistributedEquivalence(t *testing.T) {
	if testing.Short() {
		t.Skip("trains four small runs")
	}
	useTestBinaryForLaunch(t)
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	mustGoclip(t, "synth", "--out", data, "--images", "96", "--size", "32", "--seed", "3")
	common := []string{"--data", data, "--batch-size", "32", "--threads", "1", "--workers", "1", "--device", "cpu",
		"--precision", "fp32", "--max-steps", "6", "--log-every", "1", "--warmup", "2", "--seed", "5", "--dist-timeout", "60s"}

	// Full training from scratch: 86 training images give 2 steps of 32 per epoch.
	one, two := filepath.Join(dir, "one"), filepath.Join(dir, "two")
	trainArgs := append([]string{"train", "--config", "tiny"}, common...)
	launchRun(t, 1, append(trainArgs, "--out", one)...)
	launchRun(t, 2, append(trainArgs, "--out", two)...)
	rel := compareLosses(t, one, two)
	wa, err := serialize.ReadPT(filepath.Join(one, "model.pt"))
	if err != nil {
		t.Fatal(err)
	}
	wb, err := serialize.ReadPT(filepath.Join(two, "model.pt"))
	if err != nil {
		t.Fatal(err)
	}
	abs, wrel := compareTensors(t, wa, wb)
	t.Logf("train: losses within %.2g relative; model.pt within %.2g absolute, %.2g relative (2-norm over all tensors)", rel, abs, wrel)
	if wrel > 1e-4 || abs > 1e-5 {
		t.Errorf("final weights differ by %.2g relative (%.2g absolute)", wrel, abs)
	}
	for _, f := range []string{"eval.json", "model.pt", "checkpoints/last.pt"} {
		if _, err := os.Stat(filepath.Join(two, f)); err != nil {
			t.Errorf("the distributed run wrote no %s", f)
		}
	}

	// A LoRA fine-tune of that model: the adapters and the losses agree.
	base := filepath.Join(one, "model")
	ftArgs := append([]string{"finetune", "--model", base, "--lora-r", "4", "--lora-alpha", "8", "--lr", "1e-3"}, common...)
	lone, ltwo := filepath.Join(dir, "lora-one"), filepath.Join(dir, "lora-two")
	launchRun(t, 1, append(ftArgs, "--out", lone)...)
	launchRun(t, 2, append(ftArgs, "--out", ltwo)...)
	rel = compareLosses(t, lone, ltwo)
	aa, _, err := serialize.ReadSafetensors(filepath.Join(lone, "adapter", "adapter_model.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	ab, _, err := serialize.ReadSafetensors(filepath.Join(ltwo, "adapter", "adapter_model.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	abs, wrel = compareTensors(t, aa, ab)
	t.Logf("finetune: losses within %.2g relative; adapter within %.2g absolute, %.2g relative (2-norm over all tensors)", rel, abs, wrel)
	if wrel > 1e-4 || abs > 1e-5 {
		t.Errorf("final adapters differ by %.2g relative (%.2g absolute)", wrel, abs)
	}
	for _, f := range []string{"eval_base.json", "eval.json"} {
		a, errA := os.ReadFile(filepath.Join(lone, f))
		b, errB := os.ReadFile(filepath.Join(ltwo, f))
		if errA != nil || errB != nil {
			t.Fatalf("%s: %v, %v", f, errA, errB)
		}
		var ea, eb struct {
			Loss   float64 `json:"loss"`
			Images int     `json:"images"`
		}
		if json.Unmarshal(a, &ea) != nil || json.Unmarshal(b, &eb) != nil || ea.Images != eb.Images ||
			math.Abs(ea.Loss-eb.Loss) > 1e-4*math.Abs(ea.Loss) {
			t.Errorf("%s: one process %s, two %s", f, a, b)
		}
	}
}

// TestDistributedRankKilled starts two ranks of train by hand (as torchrun would),
// kills rank 1 after a few steps and expects rank 0 to fail with an error soon after.
func TestDistributedRankKilled(t *testing.T) {
	if testing.Short() {
		t.Skip("trains a small run")
	}
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	mustGoclip(t, "synth", "--out", data, "--images", "64", "--size", "32")
	port, err := freeTCPPort()
	if err != nil {
		t.Fatal(err)
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "run")
	start := func(rank int) (*exec.Cmd, *strings.Builder) {
		cmd := exec.Command(exe, "-test.run=^TestLaunchChild$", "--", "train", "--config", "tiny", "--data", data, "--out", out,
			"--batch-size", "16", "--threads", "1", "--workers", "1", "--device", "cpu", "--epochs", "1000", "--log-every", "1",
			"--dist-timeout", "10s")
		cmd.Env = append(os.Environ(), "GOCLIP_LAUNCH_CHILD=1", "WORLD_SIZE=2", "RANK="+strconv.Itoa(rank), "LOCAL_RANK="+strconv.Itoa(rank),
			"MASTER_ADDR=127.0.0.1", "MASTER_PORT="+strconv.Itoa(port))
		var stderr strings.Builder
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		return cmd, &stderr
	}
	r0, stderr0 := start(0)
	r1, _ := start(1)
	done0 := make(chan error, 1)
	go func() { done0 <- r0.Wait() }()
	defer func() {
		r0.Process.Kill()
		r1.Process.Kill()
	}()

	// Wait for rank 0 to log two steps, then kill rank 1.
	deadline := time.Now().Add(90 * time.Second)
	for len(trainLossesQuiet(out)) < 2 {
		select {
		case err := <-done0:
			t.Fatalf("rank 0 ended before rank 1 was killed: %v\n%s", err, stderr0)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("no training steps after 90s\n%s", stderr0)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err := r1.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	r1.Wait()
	killed := time.Now()
	select {
	case err := <-done0:
		if err == nil {
			t.Fatalf("rank 0 exited cleanly after rank 1 was killed\n%s", stderr0)
		}
		msg := stderr0.String()
		// The kill lands in a training step or, at an epoch's end, in the evaluation's
		// gather: either way the error names the phase that failed.
		if !strings.Contains(msg, "goclip: step ") && !strings.Contains(msg, "goclip: evaluate: ") {
			t.Errorf("rank 0's error does not name the failed step or evaluation:\n%s", msg)
		}
		t.Logf("rank 0 failed %.1fs after rank 1 was killed: %s", time.Since(killed).Seconds(), lastLine(msg))
	case <-time.After(40 * time.Second):
		t.Fatalf("rank 0 still running 40s after rank 1 was killed (timeout 10s)\n%s", stderr0)
	}
}

// trainLossesQuiet is trainLossesOf without failing: nil until the file has rows.
func trainLossesQuiet(run string) []string {
	data, err := os.ReadFile(filepath.Join(run, "metrics.jsonl"))
	if err != nil {
		return nil
	}
	var rows []string
	for _, l := range strings.Split(string(data), "\n") {
		if strings.Contains(l, `"train_loss"`) {
			rows = append(rows, l)
		}
	}
	return rows
}

// lastLine is the last non-empty line of s.
func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}
