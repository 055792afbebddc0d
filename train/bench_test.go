package train

import (
	"encoding/json"
	"errors"
	"math"
	"strings"
	"testing"

	"goclip/clip"
	"goclip/lora"
	"goclip/torch"
)

// microBenchConfig is a CLIP small enough for a benchmark step in milliseconds.
func microBenchConfig(t *testing.T) clip.Config {
	t.Helper()
	cfg := clip.DefaultConfig()
	cfg.ProjectionDim, cfg.Text.ProjectionDim, cfg.Vision.ProjectionDim = 8, 8, 8
	cfg.Text.VocabSize, cfg.Text.HiddenSize, cfg.Text.IntermediateSize = 100, 16, 32
	cfg.Text.NumHiddenLayers, cfg.Text.NumAttentionHeads, cfg.Text.MaxPositionEmbeddings = 1, 2, 8
	cfg.Text.BOSTokenID, cfg.Text.EOSTokenID, cfg.Text.PadTokenID = 0, 2, 1
	cfg.Vision.HiddenSize, cfg.Vision.IntermediateSize = 16, 32
	cfg.Vision.NumHiddenLayers, cfg.Vision.NumAttentionHeads = 1, 2
	cfg.Vision.ImageSize, cfg.Vision.PatchSize = 16, 8
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	return cfg
}

// TestBench runs each mode on the CPU and checks the result's fields: positive timings
// and memory, no MFU off a GPU, the FLOPs per step from the config (3x forward for a
// training step, 2x for LoRA, 1x for embedding, the text at the trimmed caption length),
// the trainable count, and no tensor left behind.
func TestBench(t *testing.T) {
	cfg := microBenchConfig(t)
	const batch, captionLen = 4, 5
	pair := func(tokens int64) float64 { return batch * (cfg.ImageFLOPs() + cfg.TextFLOPs(tokens)) / 1e9 }
	for _, tc := range []struct {
		name  string
		mode  string
		lora  bool
		full  bool // the text tower at the full context (Speed.FullText)
		gflop float64
	}{
		{"train", BenchTrain, false, false, 3 * pair(captionLen)},
		{"train-full-text", BenchTrain, false, true, 3 * pair(0)},
		{"lora", BenchTrain, true, false, 2 * pair(captionLen)},
		{"embed", BenchEmbed, false, false, pair(captionLen)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := newModel(t, cfg, 1)
			m.SetSpeed(clip.Speed{FullText: tc.full})
			o := BenchOptions{Mode: tc.mode, BatchSize: batch, Steps: 2, Warmup: 1, CaptionLength: captionLen, Precision: clip.FP32}
			if tc.lora {
				a, err := lora.Inject(m, lora.Config{R: 2, Alpha: 4, Targets: []string{"q_proj", "v_proj"}})
				if err != nil {
					t.Fatal(err)
				}
				o.Trainable, o.LoRA = a.Trainable(), true
			}
			base := torch.Live()
			r, err := Bench(m, o)
			if err != nil {
				t.Fatal(err)
			}
			if live := torch.Live(); live != base {
				t.Errorf("live tensors %d after Bench, want %d", live, base)
			}
			if !(r.StepMS > 0) || !(r.ImagesPerS > 0) || r.PeakMemoryMB == nil || !(*r.PeakMemoryMB > 0) {
				t.Errorf("step_ms %v, images_per_s %v, peak %v: want positive numbers", r.StepMS, r.ImagesPerS, r.PeakMemoryMB)
			}
			if r.MFU != nil || r.MemoryKind != "cpu_peak_rss_vmhwm" {
				t.Errorf("mfu %v, memory_kind %q: want null and the CPU's peak RSS", r.MFU, r.MemoryKind)
			}
			if math.Abs(r.GFLOPsPerStep-tc.gflop) > 1e-12*tc.gflop {
				t.Errorf("GFLOPs per step %g, want %g", r.GFLOPsPerStep, tc.gflop)
			}
			switch {
			case tc.lora && r.Trainable >= r.Params:
				t.Errorf("LoRA: trainable %d not below params %d", r.Trainable, r.Params)
			case !tc.lora && r.Trainable != r.Params:
				t.Errorf("trainable %d, params %d: want all trainable", r.Trainable, r.Params)
			}
			if tc.mode == BenchTrain && (math.IsNaN(r.Loss) || r.Loss <= 0) {
				t.Errorf("loss = %v", r.Loss)
			}
			if tc.mode == BenchEmbed && (r.TextsPerS == nil || !(*r.TextsPerS > 0) || r.ImageMS == nil) {
				t.Errorf("embed: texts_per_s %v, image_ms %v", r.TextsPerS, r.ImageMS)
			}
			if s := r.String(); !strings.Contains(s, tc.mode+" on cpu") || !strings.Contains(s, "MFU n/a") {
				t.Errorf("String() = %q", s)
			}
		})
	}
}

// TestBenchErrors: options out of range are errors naming the flag, before any work,
// and a bad caption length leaves no tensor behind.
func TestBenchErrors(t *testing.T) {
	m := newModel(t, microBenchConfig(t), 1)
	ok := BenchOptions{Mode: BenchTrain, BatchSize: 2, Steps: 1, Precision: clip.FP32}
	base := torch.Live()
	for want, o := range map[string]BenchOptions{
		"--batch-size":     {Mode: BenchTrain, Steps: 1},
		"--steps":          {Mode: BenchTrain, BatchSize: 2},
		"--warmup":         {Mode: BenchTrain, BatchSize: 2, Steps: 1, Warmup: -1},
		"--mode":           {Mode: "infer", BatchSize: 2, Steps: 1},
		"--caption-length": func() BenchOptions { o := ok; o.CaptionLength = 1; return o }(),
	} {
		if _, err := Bench(m, o); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%+v: error %v, want one naming %s", o, err, want)
		}
	}
	if live := torch.Live(); live != base {
		t.Errorf("live tensors %d after the failed benchmarks, want %d", live, base)
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

// A failing memory statistic costs only peak_memory_mb: null in the JSON, with the reason.
// On a machine without CUDA the CUDA allocator's statistics are such a failure.
func TestBenchPeakMemoryUnavailable(t *testing.T) {
	if torch.CUDAAvailable() {
		t.Skip("CUDA is available here: its memory statistics do not fail")
	}
	var r BenchResult
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
