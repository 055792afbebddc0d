package main

// The GPU check's Python side on the CPU at tiny sizes (issue 11, 5g): scripts/gpu/
// interop.py and bench/peer/gpu_hf_peft.py with --device cpu against the project's venv,
// and scripts/gpu/report.py over their outputs, so that the first GPU run
// (scripts/gpu-check.sh) can fail only on what is truly GPU-specific.

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"goclip/internal/testutil"
)

// goclipExecutable writes DIR/goclip, a script that runs this test binary as goclip
// (TestLaunchChild), for the Python scripts that call bin/goclip.
func goclipExecutable(t *testing.T, dir string) string {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "goclip")
	script := fmt.Sprintf("#!/bin/sh\nGOCLIP_LAUNCH_CHILD=1 exec '%s' -test.run='^TestLaunchChild$' -- \"$@\"\n", exe)
	if err := os.WriteFile(p, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

// runPythonTimed runs py SCRIPT ARGS... from dir (outside the repository, whose torch/ folder
// would shadow PyTorch), offline; it returns the combined output and the error.
func runPythonTimed(py, dir string, timeout time.Duration, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, py, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "HF_HUB_OFFLINE=1", "TRANSFORMERS_OFFLINE=1", "PYTHONUNBUFFERED=1",
		"OMP_NUM_THREADS=1") // two scripts at once on a small machine
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		err = fmt.Errorf("%w (timed out after %s)", err, timeout)
	}
	return string(out), err
}

func readJSON(t *testing.T, path string) map[string]any {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return m
}

// num is m[k...] as a float64, NaN when absent or not a number.
func num(m map[string]any, keys ...string) float64 {
	var v any = m
	for _, k := range keys {
		mm, ok := v.(map[string]any)
		if !ok {
			return math.NaN()
		}
		v = mm[k]
	}
	if f, ok := v.(float64); ok {
		return f
	}
	return math.NaN()
}

func TestGPUCheckPythonOnCPU(t *testing.T) {
	if testing.Short() {
		t.Skip("runs transformers and peft (about 40 s); not in -short")
	}
	py := testutil.PythonTorch(t, "transformers", "peft", "safetensors", "PIL", "numpy")
	fixtures := filepath.Dir(testutil.Fixtures(t, "clip-tiny-openai")) // tokenizer files
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	work := t.TempDir()
	goclip := goclipExecutable(t, work)
	interopOut, peerOut := filepath.Join(work, "interop.json"), filepath.Join(work, "bench-peer.json")

	// both scripts at once: each mostly waits on Python imports and child processes
	var wg sync.WaitGroup
	var interopLog, peerLog string
	var interopErr, peerErr error
	wg.Add(2)
	go func() {
		defer wg.Done()
		interopLog, interopErr = runPythonTimed(py, work, 4*time.Minute, filepath.Join(root, "scripts", "gpu", "interop.py"),
			"--device", "cpu", "--models", "small", "--work", work, "--goclip", goclip,
			"--fixtures", fixtures, "--out", interopOut)
	}()
	go func() {
		defer wg.Done()
		peerLog, peerErr = runPythonTimed(py, work, 4*time.Minute, filepath.Join(root, "bench", "peer", "gpu_hf_peft.py"),
			"--device", "cpu", "--mode", "both", "--lora-config", "small", "--full-config", "small",
			"--batch-size", "4", "--steps", "1", "--warmup", "1", "--precision", "fp32", "--matmul-n", "128",
			"--out", peerOut)
	}()
	wg.Wait()
	if interopErr != nil {
		t.Fatalf("interop.py --device cpu: %v\n%s", interopErr, interopLog)
	}
	if peerErr != nil {
		t.Fatalf("gpu_hf_peft.py --device cpu: %v\n%s", peerErr, peerLog)
	}

	// interop: every check of the small model ran on the CPU and passed within 1e-4
	io := readJSON(t, interopOut)
	if io["ok"] != true {
		t.Errorf("interop.json ok = %v", io["ok"])
	}
	if d, _ := json.Marshal(io["devices"]); string(d) != `["cpu"]` {
		t.Errorf("interop devices = %s, want [\"cpu\"]", d)
	}
	checks, _ := io["checks"].(map[string]any)
	for _, name := range []string{"model-small", "tokenize-small", "embed-small-cpu", "peft-adapter-small", "goclip-adapter"} {
		c, ok := checks[name].(map[string]any)
		if !ok {
			t.Errorf("interop check %s missing (have %v)", name, mapKeys(checks))
			continue
		}
		if c["ok"] != true {
			t.Errorf("interop check %s failed: %v", name, c)
		}
		for k, v := range c {
			if f, ok := v.(float64); ok && strings.HasSuffix(k, "rel_err") && !(f <= 1e-4) {
				t.Errorf("interop %s: %s = %g, want <= 1e-4", name, k, f)
			}
		}
	}
	for _, k := range []string{"embed-small-cpu", "peft-adapter-small"} {
		if e := num(checks, k, "image_rel_err"); math.IsNaN(e) || math.IsNaN(num(checks, k, "text_rel_err")) {
			t.Errorf("interop %s: image and text errors missing: %v", k, checks[k])
		}
	}
	// a comparison through an adapter that changes nothing would prove nothing
	for _, k := range []string{"peft-adapter-small", "goclip-adapter"} {
		if e := num(checks, k, "adapter_effect"); !(e >= 1e-3) {
			t.Errorf("interop %s: adapter_effect = %g, want >= 1e-3", k, e)
		}
	}
	if c, _ := checks["goclip-adapter"].(map[string]any); c["model_pt_strict_load"] != true || !(num(c, "model_pt_vs_peft_rel_err") <= 1e-4) {
		t.Errorf("goclip-adapter: model.pt strict load %v, error vs peft %v", c["model_pt_strict_load"], c["model_pt_vs_peft_rel_err"])
	}

	// the peer: both modes timed on the CPU, LoRA's trainable count as peft's r=64 on
	// q/k/v of 2+2 layers of width 64 gives it: 12 modules x r x (64 + 64)
	peer := readJSON(t, peerOut)
	res, _ := peer["results"].(map[string]any)
	for _, mode := range []string{"lora", "full"} {
		r, ok := res[mode].(map[string]any)
		if !ok {
			t.Fatalf("bench-peer.json: no %s result: %v", mode, peer)
		}
		for _, k := range []string{"step_ms", "images_per_s", "final_loss", "total", "trainable"} {
			if v := num(r, k); !(v > 0) || math.IsInf(v, 0) {
				t.Errorf("peer %s: %s = %v, want a positive number", mode, k, r[k])
			}
		}
		if r["peak_memory_mb"] != nil || r["mfu"] != nil || r["fused_adamw"] != false || r["device"] != "cpu" {
			t.Errorf("peer %s on the CPU: peak_memory_mb %v, mfu %v (want null), fused_adamw %v, device %v",
				mode, r["peak_memory_mb"], r["mfu"], r["fused_adamw"], r["device"])
		}
		if num(r, "image_size") != 32 || num(r, "batch_size") != 4 {
			t.Errorf("peer %s: image_size %v, batch_size %v; want the small config's 32 and 4", mode, r["image_size"], r["batch_size"])
		}
	}
	if got, want := num(res, "lora", "trainable"), float64(12*64*(64+64)); got != want {
		t.Errorf("peer LoRA trainable = %v, want %v", got, want)
	}
	if num(res, "full", "trainable") != num(res, "full", "total") {
		t.Errorf("peer full: trainable %v != total %v", num(res, "full", "trainable"), num(res, "full", "total"))
	}
	if v := num(peer, "matmul", "tflops"); !(v > 0) {
		t.Errorf("peer matmul rate = %v, want > 0", peer["matmul"])
	}

	// goclip's side of the same benchmark (the interop's small model, LoRA r=64 q/k/v),
	// then report.py over all of it with a made-up steps.tsv and test log
	lora := mustGoclip(t, "bench", "--model", filepath.Join(work, "models", "small"), "--lora-r", "64",
		"--lora-alpha", "128", "--lora-targets", "q_proj,k_proj,v_proj", "--batch-size", "4", "--steps", "1",
		"--warmup", "1", "--threads", "1", "--device", "cpu", "--json")
	if err := os.WriteFile(filepath.Join(work, "bench-goclip-lora.json"), []byte(lora), 0o644); err != nil {
		t.Fatal(err)
	}
	var gl map[string]any
	if err := json.Unmarshal([]byte(lora), &gl); err != nil {
		t.Fatal(err)
	}
	if num(gl, "trainable") != num(res, "lora", "trainable") {
		t.Errorf("LoRA trainable: goclip %v, peft %v", gl["trainable"], num(res, "lora", "trainable"))
	}
	steps := "shim\tok\t0\t81\t\nbench-peer\tfail\t1\t12\t\ne2e\tskipped\t-\t0\tout of time (budget 440s)\n"
	if err := os.WriteFile(filepath.Join(work, "steps.tsv"), []byte(steps), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(work, "logs"), 0o755); err != nil {
		t.Fatal(err)
	}
	testLog := "=== RUN   TestA\n--- PASS: TestA (0.01s)\n--- FAIL: TestB (0.02s)\n--- SKIP: TestC (0.00s)\n    --- PASS: TestC/sub (0.00s)\n"
	if err := os.WriteFile(filepath.Join(work, "logs", "test-torch_cudatest.log"), []byte(testLog), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(work, "out")
	if log, err := runPythonTimed(py, work, time.Minute, filepath.Join(root, "scripts", "gpu", "report.py"),
		"--work", work, "--out", out, "--elapsed", "123"); err != nil {
		t.Fatalf("report.py: %v\n%s", err, log)
	}
	rep := readJSON(t, filepath.Join(out, "gpu-report.json"))
	var gotSteps []string
	for _, s := range rep["steps"].([]any) {
		m := s.(map[string]any)
		gotSteps = append(gotSteps, fmt.Sprintf("%v %v %v", m["name"], m["status"], m["seconds"]))
	}
	if g := strings.Join(gotSteps, ", "); g != "shim ok 81, bench-peer fail 12, e2e skipped 0" {
		t.Errorf("report steps = %s", g)
	}
	if tr := rep["tests"].(map[string]any)["torch_cudatest"].(map[string]any); num(tr, "passed") != 2 ||
		num(tr, "failed") != 1 || num(tr, "skipped") != 1 {
		t.Errorf("report tests = %v, want 2 passed (a subtest among them), 1 failed, 1 skipped", tr)
	}
	wantSpeedup := num(gl, "images_per_s") / num(res, "lora", "images_per_s")
	if got := num(rep, "targets", "a_lora_speedup", "value"); math.Abs(got-wantSpeedup) > 1e-3*wantSpeedup+1e-3 {
		t.Errorf("report a_lora_speedup = %v, want %.3f (goclip %v / peer %v images/s)", got, wantSpeedup,
			gl["images_per_s"], num(res, "lora", "images_per_s"))
	}
	// goclip's MFU over the measured matmul rate: its FLOPs per step / step time / rate
	wantMFU := num(gl, "gflops_per_step") / num(gl, "step_ms") / num(peer, "matmul", "tflops")
	if got := num(rep, "bench", "lora", "goclip", "mfu_measured"); math.Abs(got-wantMFU) > 1e-4+1e-3*wantMFU {
		t.Errorf("report goclip mfu_measured = %v, want %.4f", got, wantMFU)
	}
	if ic := rep["interop"].(map[string]any)["checks"].(map[string]any); len(ic) != len(checks) {
		t.Errorf("report interop has %d checks, interop.json %d", len(ic), len(checks))
	}
	md, err := os.ReadFile(filepath.Join(out, "gpu-report.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"| shim | ok | 81 |", "| e2e | skipped (out of time (budget 440s)) | 0 |",
		"| torch_cudatest | 2 | 1 | 1 | TestB |", "| goclip-adapter | yes |", "| a_lora_speedup |"} {
		if !strings.Contains(string(md), want) {
			t.Errorf("gpu-report.md lacks %q:\n%s", want, md)
		}
	}
}

func mapKeys(m map[string]any) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	return ks
}
