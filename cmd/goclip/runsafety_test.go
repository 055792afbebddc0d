package main

// Run-folder, flag and adapter safety end to end, in-process through newApp.

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestTrainFlagRanges: out-of-range training flags are errors naming the flag, before
// any data is read.
func TestTrainFlagRanges(t *testing.T) {
	for _, flag := range [][]string{{"--epochs", "0"}, {"--epochs", "-1"}, {"--eval-batch-size", "0"}, {"--max-steps", "-1"},
		{"--log-every", "0"}, {"--save-every", "-1"}, {"--grad-accum", "0"}, {"--max-bad-steps", "0"}} {
		args := append([]string{"train", "--config", "tiny", "--data", filepath.Join(t.TempDir(), "none"), "--out", t.TempDir()}, flag...)
		_, _, err := runGoclip(t, args...)
		if want := flag[0] + " " + flag[1] + ":"; err == nil || !strings.HasPrefix(err.Error(), want) {
			t.Errorf("%s: %v, want an error starting %q", strings.Join(flag, " "), err, want)
		}
	}
}

// TestRunAndAdapterSafety: train refuses an --out that holds someone else's files; a
// LoRA run's merged model refuses its own adapter (eval and convert --merge), which
// applies to its base model, unless --force-adapter is given (convert's --force only
// overwrites DST), and a merged folder written by convert records it too.
func TestRunAndAdapterSafety(t *testing.T) {
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	mustGoclip(t, "synth", "--out", data, "--images", "40", "--size", "32", "--seed", "3")
	common := []string{"--data", data, "--batch-size", "8", "--max-steps", "2", "--epochs", "0", "--device", "cpu", "--threads", "1", "--workers", "1", "--warmup", "1"}

	foreign := filepath.Join(dir, "foreign")
	if err := os.MkdirAll(foreign, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"config.json", "model.pt"} {
		if err := os.WriteFile(filepath.Join(foreign, name), []byte("theirs"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	_, _, err := runGoclip(t, append([]string{"train", "--config", "tiny", "--out", foreign}, common...)...)
	if err == nil || !strings.Contains(err.Error(), "not a goclip run") {
		t.Fatalf("train into a foreign --out: %v", err)
	}
	if got, _ := os.ReadFile(filepath.Join(foreign, "config.json")); string(got) != "theirs" {
		t.Fatalf("config.json overwritten: %q", got)
	}

	base := filepath.Join(dir, "base")
	mustGoclip(t, append([]string{"train", "--config", "tiny", "--out", base}, common...)...)
	ft := filepath.Join(dir, "ft")
	mustGoclip(t, append([]string{"finetune", "--model", base, "--out", ft, "--lora-r", "2", "--lora-alpha", "4", "--lr", "1e-2"}, common...)...)
	adapter, merged := filepath.Join(ft, "adapter"), filepath.Join(ft, "model")

	evalArgs := []string{"--data", data, "--split", "all", "--device", "cpu", "--threads", "1", "--workers", "1", "--json"}
	_, _, err = runGoclip(t, append([]string{"eval", "--model", merged, "--adapter", adapter}, evalArgs...)...)
	if err == nil || !strings.Contains(err.Error(), "already merged") {
		t.Fatalf("eval of the merged model with its own adapter: %v, want an already-merged error", err)
	}
	_, _, err = runGoclip(t, append([]string{"eval", "--model", ft, "--adapter", adapter}, evalArgs...)...)
	if err == nil || !strings.Contains(err.Error(), "already merged") {
		t.Fatalf("eval of the run folder with its own adapter: %v", err)
	}
	viaBase := mustGoclip(t, append([]string{"eval", "--model", base, "--adapter", adapter}, evalArgs...)...)
	plain := mustGoclip(t, append([]string{"eval", "--model", merged}, evalArgs...)...)
	var a, b map[string]any
	if json.Unmarshal([]byte(viaBase), &a) != nil || json.Unmarshal([]byte(plain), &b) != nil || a["loss"] == nil {
		t.Fatalf("eval output %q / %q", viaBase, plain)
	}
	if d := a["loss"].(float64) - b["loss"].(float64); d > 1e-4 || d < -1e-4 {
		t.Errorf("base+adapter loss %v, merged model %v", a["loss"], b["loss"])
	}
	_, errOut, err := runGoclip(t, append([]string{"eval", "--model", merged, "--adapter", adapter, "--force"}, evalArgs...)...)
	if err != nil || !strings.Contains(errOut, "warning:") {
		t.Errorf("--force: %v, stderr %q", err, errOut)
	}

	_, _, err = runGoclip(t, "convert", "--adapter", adapter, "--merge", merged, filepath.Join(dir, "twice"))
	if err == nil || !strings.Contains(err.Error(), "already merged") {
		t.Fatalf("convert --merge onto the merged model: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "twice")); !os.IsNotExist(err) {
		t.Errorf("the refused convert wrote its DST: %v", err)
	}
	// convert's --force only overwrites DST; --force-adapter (eval's and embed's
	// --force) applies the adapter despite the checks.
	_, _, err = runGoclip(t, "convert", "--force", "--adapter", adapter, "--merge", merged, filepath.Join(dir, "twice"))
	if err == nil || !strings.Contains(err.Error(), "already merged") {
		t.Fatalf("convert --force --merge onto the merged model: %v, want the already-merged error", err)
	}
	if _, errOut, err := runGoclip(t, "convert", "--force-adapter", "--adapter", adapter, "--merge", merged, filepath.Join(dir, "twice")); err != nil || !strings.Contains(errOut, "warning:") {
		t.Errorf("convert --force-adapter --merge onto the merged model: %v, stderr %q", err, errOut)
	}
	if _, errOut, err := runGoclip(t, append([]string{"eval", "--model", merged, "--adapter", adapter, "--force-adapter"}, evalArgs...)...); err != nil || !strings.Contains(errOut, "warning:") {
		t.Errorf("eval --force-adapter: %v, stderr %q", err, errOut)
	}
	again := filepath.Join(dir, "merged-again")
	mustGoclip(t, "convert", "--adapter", adapter, "--merge", base, again)
	_, _, err = runGoclip(t, append([]string{"eval", "--model", again, "--adapter", adapter}, evalArgs...)...)
	if err == nil || !strings.Contains(err.Error(), "already merged") {
		t.Fatalf("eval of convert's merged folder with the adapter: %v", err)
	}
	// A merged .pt has no config to record it: its weights' fingerprint refuses it.
	pt := filepath.Join(dir, "merged.pt")
	mustGoclip(t, "convert", merged, pt)
	_, _, err = runGoclip(t, "convert", "--config", filepath.Join(merged, "config.json"), "--adapter", adapter, "--merge", pt, filepath.Join(dir, "x.safetensors"))
	if err == nil || !strings.Contains(err.Error(), "fingerprint") {
		t.Fatalf("convert --merge onto a merged .pt: %v", err)
	}
}

// TestConvertSweepsTemps: an interrupted convert's temporary folder beside DST (its
// writer gone) is removed by the next convert to DST.
func TestConvertSweepsTemps(t *testing.T) {
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	mustGoclip(t, "synth", "--out", data, "--images", "12", "--size", "32", "--seed", "3")
	run := filepath.Join(dir, "run")
	mustGoclip(t, "train", "--config", "tiny", "--out", run, "--data", data, "--batch-size", "4", "--max-steps", "1", "--epochs", "0",
		"--device", "cpu", "--threads", "1", "--workers", "1")
	stale := filepath.Join(dir, ".dst.tmp-4000003-99")
	if err := os.MkdirAll(stale, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(stale, "model.safetensors"), make([]byte, 4096), 0o644); err != nil {
		t.Fatal(err)
	}
	staleFile := filepath.Join(dir, ".one.safetensors.tmp-4000004-1")
	if err := os.WriteFile(staleFile, make([]byte, 4096), 0o644); err != nil {
		t.Fatal(err)
	}
	_, errOut, err := runGoclip(t, "convert", run, filepath.Join(dir, "dst"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(stale); !os.IsNotExist(err) || !strings.Contains(errOut, "interrupted convert") {
		t.Errorf("the stale folder survived (%v); stderr %q", err, errOut)
	}
	mustGoclip(t, "convert", run, filepath.Join(dir, "one.safetensors"))
	if _, err := os.Stat(staleFile); !os.IsNotExist(err) {
		t.Errorf("the stale temporary file survived: %v", err)
	}
}
