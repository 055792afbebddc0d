package lora

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"goclip/clip"
	"goclip/torch"
)

// fuzzBase is a CLIP of a few thousand parameters for the adapters to go into.
func fuzzBase(f *testing.F) *clip.Model {
	c := clip.DefaultConfig()
	c.Text.VocabSize, c.Text.HiddenSize, c.Text.IntermediateSize = 16, 8, 16
	c.Text.NumHiddenLayers, c.Text.NumAttentionHeads, c.Text.MaxPositionEmbeddings = 2, 2, 4
	c.Text.EOSTokenID, c.Text.BOSTokenID, c.Text.PadTokenID = 2, 0, 1
	c.Vision.HiddenSize, c.Vision.IntermediateSize = 8, 16
	c.Vision.NumHiddenLayers, c.Vision.NumAttentionHeads = 2, 2
	c.Vision.ImageSize, c.Vision.PatchSize = 8, 4
	c.ProjectionDim = 4
	m, err := clip.New(c, torch.CPU)
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(m.Free)
	return m
}

// FuzzLoadAdapter: a peft adapter folder whose adapter_config.json and
// adapter_model.safetensors hold arbitrary bytes loads into the model or fails with an
// error; either way, once the adapter is unloaded, the model has its parameters again
// and no tensor is left alive. Seeds: adapters that Save wrote (q/k/v, a layer subset
// with projections trained, a regular expression), and broken variants.
func FuzzLoadAdapter(f *testing.F) {
	m := fuzzBase(f)
	names := func() []string {
		var ns []string
		for _, p := range m.NamedParameters() {
			ns = append(ns, p.Name)
		}
		return ns
	}
	baseNames := names()
	for i, lc := range []Config{
		{R: 4, Alpha: 8, Targets: []string{"q_proj", "k_proj", "v_proj"}},
		{R: 2, Alpha: 2, Targets: []string{"fc1"}, Layers: []int{1}, Towers: []string{TowerVision}, TrainProjections: true},
		{R: 1, Alpha: 1, TargetRegex: `text_model\.encoder\.layers\.0\.self_attn\.(q|v)_proj`, RSLoRA: true},
	} {
		a, err := Inject(m, lc)
		if err != nil {
			f.Fatal(err)
		}
		dir := filepath.Join(f.TempDir(), "adapter")
		err = a.Save(dir, "base")
		a.Unload()
		if err != nil {
			f.Fatal(err)
		}
		cfg, _ := os.ReadFile(filepath.Join(dir, ConfigFile))
		w, _ := os.ReadFile(filepath.Join(dir, WeightsFile))
		f.Add(cfg, w)
		if i == 0 {
			f.Add(cfg, w[:len(w)-8])
			f.Add([]byte(`{"peft_type": "LORA", "r": 1000000000, "target_modules": ["q_proj"]}`), w)
			f.Add([]byte(`{"peft_type": "LORA", "r": 4, "target_modules": "(", "use_dora": true}`), w)
		}
	}
	f.Fuzz(func(t *testing.T, config, weights []byte) {
		dir := t.TempDir()
		os.WriteFile(filepath.Join(dir, ConfigFile), config, 0o644)
		os.WriteFile(filepath.Join(dir, WeightsFile), weights, 0o644)
		live := torch.Live()
		a, err := Load(dir, m)
		if err == nil {
			a.Unload()
		}
		if got := names(); len(got) != len(baseNames) {
			t.Fatalf("after Load (err %v) and Unload the model has %d parameters, %d before", err, len(got), len(baseNames))
		}
		if n := torch.Live(); n != live {
			t.Fatalf("%d tensors alive after Load (err %v), %d before", n, err, live)
		}
	})
}

// TestLoadAdapterHugeRank: an adapter_config.json whose r asks for far more than the
// weights file holds (4 q_proj layers x 1e7 x (128 + 128) = 10,240,000,000) is refused
// before the LoRA matrices are allocated (r = 100000 on
// the tiny model made 800 MB of them first; r = 1e7 would make 50 GB).
func TestLoadAdapterHugeRank(t *testing.T) {
	m := tinyModel(t, 1)
	defer m.Free()
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, ConfigFile), []byte(`{"peft_type": "LORA", "r": 10000000, "target_modules": ["q_proj"]}`), 0o644)
	os.WriteFile(filepath.Join(dir, WeightsFile), []byte("\x08\x00\x00\x00\x00\x00\x00\x00{}      "), 0o644)
	live := torch.Live()
	start := time.Now()
	_, err := Load(dir, m)
	if err == nil || !strings.Contains(err.Error(), "asks for 10240000000 trainable parameters (r = 10000000)") || !strings.Contains(err.Error(), "holds 0") {
		t.Errorf("r = 1e7 with no weights: %v", err)
	}
	if d := time.Since(start); d > time.Second || torch.Live() != live {
		t.Errorf("took %v; %d tensors alive, %d before", d, torch.Live(), live)
	}
}
