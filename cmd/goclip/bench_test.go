package main

import (
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

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
