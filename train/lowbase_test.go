package train

import (
	"math"
	"slices"
	"testing"

	"goclip/clip"
	"goclip/dataset"
	"goclip/lora"
	"goclip/nn"
	"goclip/torch"
)

// A LoRA run under --precision bf16 keeps its frozen base in bf16 by default. Against
// the autocast path (FP32Base: the float32 base cast at every step) on the CPU: the
// losses of every step and the trained adapter must agree to 1e-2 relative (a bf16
// tolerance; the forward's operands are the same bf16 values either way, so they are
// expected to agree far closer, and the log says how close); after the run the base is
// float32 again, bit for bit the values before it (so the merged export is float32 and
// the adapter's base fingerprint still matches); and no tensor is left behind.
func TestBF16BaseMatchesAutocast(t *testing.T) {
	f := synthData(t, 48, "base")
	cfg := tinyConfig(t, f.tok)
	type outcome struct {
		losses  []float64
		adapter map[string][]float32
	}
	run := func(fp32Base bool) outcome {
		m := newModel(t, cfg, 4)
		torch.ManualSeed(9)
		a, err := lora.Inject(m, lora.Config{R: 4, Alpha: 8, Targets: []string{"q_proj", "v_proj"}})
		if err != nil {
			t.Fatal(err)
		}
		before := map[string][]float32{}
		for _, p := range m.NamedParameters() {
			if !p.T.RequiresGrad() {
				before[p.Name] = p.T.Float32s()
			}
		}
		fp0 := a.BaseFingerprint()
		var o outcome
		live := torch.Live()
		job := Job{Model: m, Tokenizer: f.tok, Train: f.ds.Split(dataset.Train), LoRA: &LoRA{Adapter: a},
			exportHook: func(string) error {
				for _, p := range m.NamedParameters() { // what the merge and the export read
					if p.T.DType() != torch.Float32 {
						t.Errorf("FP32Base %v: %s is %v at Finish", fp32Base, p.Name, p.T.DType())
					}
				}
				return nil
			}}
		opts := Options{Out: t.TempDir(), MaxSteps: 6, BatchSize: 8, LR: 5e-3, Warmup: 1, LogEvery: 2, Workers: 2,
			Precision: clip.BF16, FP32Base: fp32Base, AfterStep: func(_ int, loss float64) {
				o.losses = append(o.losses, loss)
				if dt, want := param(t, m.NamedParameters(), "visual_projection.weight").DType(), map[bool]torch.DType{true: torch.Float32, false: torch.BFloat16}[fp32Base]; dt != want {
					t.Errorf("FP32Base %v: the frozen visual_projection.weight is %v during the run, want %v", fp32Base, dt, want)
				}
			}}
		if _, err := Run(t.Context(), job, opts); err != nil {
			t.Fatal(err)
		}
		if d := torch.Live() - live; d != 0 {
			t.Fatalf("FP32Base %v: %d tensors leaked", fp32Base, d)
		}
		for name, want := range before {
			p := param(t, m.NamedParameters(), name)
			if p.DType() != torch.Float32 || !slices.Equal(p.Float32s(), want) {
				t.Fatalf("FP32Base %v: %s after the run is %v and differs from its values before", fp32Base, name, p.DType())
			}
		}
		fp1, err := lora.Fingerprint(baseOf(m.NamedParameters()))
		if err != nil {
			t.Fatal(err)
		}
		if fp1 != fp0 {
			t.Fatalf("FP32Base %v: base fingerprint %s after the run, %s at injection", fp32Base, fp1, fp0)
		}
		o.adapter = map[string][]float32{}
		for _, p := range a.Trainable() {
			o.adapter[p.Name] = p.T.Float32s()
		}
		return o
	}
	ref, got := run(true), run(false)
	if len(ref.losses) != 6 || len(got.losses) != 6 {
		t.Fatalf("steps: autocast path %d, bf16 base %d", len(ref.losses), len(got.losses))
	}
	worst := 0.0
	for i := range ref.losses {
		worst = max(worst, math.Abs(got.losses[i]-ref.losses[i])/math.Abs(ref.losses[i]))
	}
	worstW := 0.0
	for name, want := range ref.adapter {
		g := got.adapter[name]
		var num, den float64
		for i := range want {
			num += (float64(g[i]) - float64(want[i])) * (float64(g[i]) - float64(want[i]))
			den += float64(want[i]) * float64(want[i])
		}
		if den > 0 {
			worstW = max(worstW, math.Sqrt(num/den))
		}
	}
	t.Logf("autocast path losses %v; bf16 base %v; worst relative loss difference %.3g, worst adapter tensor %.3g", ref.losses, got.losses, worst, worstW)
	if !(worst <= 1e-2) || !(worstW <= 1e-2) {
		t.Fatalf("bf16 base vs autocast path: losses differ by %.3g relative, adapters by %.3g (want <= 1e-2)", worst, worstW)
	}
}

// KeepBaseIn converts exactly the frozen projection weights and biases and the patch
// convolution; layer norms, embeddings, logit_scale and the adapters stay float32, and
// Restore gives back the float32 values bit for bit.
func TestKeepBaseInSelection(t *testing.T) {
	f := synthData(t, 40, "base")
	m := newModel(t, tinyConfig(t, f.tok), 2)
	if _, err := lora.Inject(m, lora.Config{R: 2, Alpha: 4, Targets: []string{"q_proj"}}); err != nil {
		t.Fatal(err)
	}
	live := torch.Live()
	before := map[string][]float32{}
	for _, p := range m.NamedParameters() {
		before[p.Name] = p.T.Float32s()
	}
	lb, err := lora.KeepBaseIn(m, torch.BFloat16)
	if err != nil {
		t.Fatal(err)
	}
	converted := 0
	for _, p := range m.NamedParameters() {
		linear := p.T.Dim() >= 1 && (hasAnySuffix(p.Name, "_proj.weight", "_proj.bias", ".fc1.weight", ".fc1.bias", ".fc2.weight", ".fc2.bias",
			"visual_projection.weight", "text_projection.weight", "patch_embedding.weight"))
		want := torch.Float32
		if linear && !p.T.RequiresGrad() {
			want = torch.BFloat16
			converted++
		}
		if p.T.DType() != want {
			t.Errorf("%s (requires grad %v) is %v, want %v", p.Name, p.T.RequiresGrad(), p.T.DType(), want)
		}
	}
	if converted == 0 || converted != lb.Len() {
		t.Fatalf("%d parameters are bf16, KeepBaseIn reports %d", converted, lb.Len())
	}
	if err := lb.Restore(); err != nil {
		t.Fatal(err)
	}
	if err := lb.Restore(); err != nil { // idempotent
		t.Fatal(err)
	}
	for _, p := range m.NamedParameters() {
		if p.T.DType() != torch.Float32 || !slices.Equal(p.T.Float32s(), before[p.Name]) {
			t.Fatalf("%s after Restore: %v, values equal %v", p.Name, p.T.DType(), slices.Equal(p.T.Float32s(), before[p.Name]))
		}
	}
	if d := torch.Live() - live; d != 0 {
		t.Fatalf("%d tensors leaked", d)
	}
}

func hasAnySuffix(s string, suffixes ...string) bool {
	for _, x := range suffixes {
		if len(s) >= len(x) && s[len(s)-len(x):] == x {
			return true
		}
	}
	return false
}

// param is the parameter called name.
func param(t *testing.T, ps []nn.Named, name string) *torch.Tensor {
	t.Helper()
	for _, p := range ps {
		if p.Name == name {
			return p.T
		}
	}
	t.Fatalf("no parameter %s", name)
	return nil
}

// baseOf is the base model's parameters (the LoRA matrices left out), as the adapter's
// base fingerprint covers them.
func baseOf(ps []nn.Named) []nn.Named {
	var out []nn.Named
	for _, p := range ps {
		if !hasAnySuffix(p.Name, ".lora_A.weight", ".lora_B.weight") {
			out = append(out, p)
		}
	}
	return out
}
