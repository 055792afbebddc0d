package main

import (
	"encoding/json"
	"errors"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"goclip/clip"
	"goclip/torch"
)

// microConfig is a CLIP small enough for a training step in milliseconds.
const microConfig = `{
  "projection_dim": 8,
  "text_config": {"vocab_size": 100, "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
                  "num_attention_heads": 2, "max_position_embeddings": 8, "eos_token_id": 2},
  "vision_config": {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
                    "num_attention_heads": 2, "image_size": 16, "patch_size": 8}
}`

func TestForwardFLOPsViTB16(t *testing.T) {
	cfg, err := clip.Preset("vit-b-16")
	if err != nil {
		t.Fatal(err)
	}
	// DESIGN.md: 35.13 GFLOPs image + 5.96 GFLOPs text per pair, forward.
	if got := forwardFLOPs(cfg) / 1e9; math.Abs(got-(35.13+5.96)) > 0.01 {
		t.Errorf("vit-b-16 forward GFLOPs per pair = %.3f, want 41.09", got)
	}
}

func TestPeakTFLOPs(t *testing.T) {
	for name, want := range map[string]float64{
		"NVIDIA H100 80GB HBM3": 989, "NVIDIA H200": 989, "NVIDIA A100-SXM4-80GB": 312,
		"NVIDIA H100 PCIe": 756, "NVIDIA GeForce RTX 4090": 0, "AMD EPYC": 0,
	} {
		if got := peakTFLOPs(name); got != want {
			t.Errorf("peakTFLOPs(%q) = %g, want %g", name, got, want)
		}
	}
}

func TestBenchCommand(t *testing.T) {
	cfgPath := filepath.Join(t.TempDir(), "config.json")
	if err := os.WriteFile(cfgPath, []byte(microConfig), 0o644); err != nil {
		t.Fatal(err)
	}
	base := torch.Live()
	for _, tc := range []struct {
		name string
		args []string
	}{
		{"train", nil},
		{"lora", []string{"--lora-r", "2", "--lora-alpha", "4", "--lora-targets", "q_proj,v_proj"}},
		{"embed", []string{"--mode", "embed"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"bench", "--config", cfgPath, "--batch-size", "4", "--steps", "2",
				"--warmup", "1", "--threads", "1", "--device", "cpu", "--json"}, tc.args...)
			out := mustGoclip(t, args...)
			var r map[string]any
			if err := json.Unmarshal([]byte(out), &r); err != nil {
				t.Fatalf("output %q: %v", out, err)
			}
			for _, k := range []string{"step_ms", "images_per_s", "peak_memory_mb"} {
				if v, ok := r[k].(float64); !ok || !(v > 0) {
					t.Errorf("%s = %v, want a positive number", k, r[k])
				}
			}
			if v, ok := r["mfu"]; !ok || v != nil {
				t.Errorf("mfu = %v (present %v), want null on the CPU", v, ok)
			}
			if r["memory_kind"] != "cpu_peak_rss_vmhwm" {
				t.Errorf("memory_kind = %v", r["memory_kind"])
			}
			switch tc.name {
			case "lora":
				if r["trainable"].(float64) >= r["params"].(float64) {
					t.Errorf("LoRA: trainable %v not below params %v", r["trainable"], r["params"])
				}
				fallthrough
			case "train":
				if l, ok := r["loss"].(float64); !ok || math.IsNaN(l) || l <= 0 {
					t.Errorf("loss = %v", r["loss"])
				}
			case "embed":
				if v, ok := r["texts_per_s"].(float64); !ok || !(v > 0) {
					t.Errorf("texts_per_s = %v", r["texts_per_s"])
				}
			}
		})
	}
	if live := torch.Live(); live != base {
		t.Errorf("live tensors %d after the benchmarks, want %d", live, base)
	}
}

func TestBenchCommandErrors(t *testing.T) {
	for _, args := range [][]string{
		{"bench", "--config", "tiny", "--steps", "0"},
		{"bench", "--config", "tiny", "--mode", "infer"},
		{"bench"},
		{"bench", "--config", "tiny", "--model", "x"},
	} {
		if _, _, err := runGoclip(t, args...); err == nil {
			t.Errorf("goclip %s: no error", strings.Join(args, " "))
		}
	}
}

// A failing memory statistic costs only peak_memory_mb: null in the JSON, with the reason.
// On a machine without CUDA the CUDA allocator's statistics are such a failure.
func TestBenchPeakMemoryUnavailable(t *testing.T) {
	if torch.CUDAAvailable() {
		t.Skip("CUDA is available here: its memory statistics do not fail")
	}
	var r benchResult
	if err := r.setPeakMemory(torch.CUDA(0), nil); err == nil {
		t.Fatal("setPeakMemory(cuda:0) without CUDA: no error")
	}
	if r.PeakMemoryMB != nil || r.MemoryError == "" || r.MemoryKind != "cuda_allocator_peak" {
		t.Errorf("after a failed statistic: peak %v, error %q, kind %q", r.PeakMemoryMB, r.MemoryError, r.MemoryKind)
	}
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"peak_memory_mb":null`) {
		t.Errorf("JSON %s lacks \"peak_memory_mb\":null", b)
	}
	// a failed reset alone also voids the peak
	if err := r.setPeakMemory(torch.CPU, errors.New("reset failed")); err == nil || r.PeakMemoryMB != nil {
		t.Errorf("failed reset: err %v, peak %v; want an error and no peak", err, r.PeakMemoryMB)
	}
	if err := r.setPeakMemory(torch.CPU, nil); err != nil || r.PeakMemoryMB == nil || !(*r.PeakMemoryMB > 0) {
		t.Errorf("CPU peak: err %v, peak %v; want a positive number", err, r.PeakMemoryMB)
	}
}
