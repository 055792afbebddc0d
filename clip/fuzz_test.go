package clip

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"goclip/internal/testutil"
	"goclip/torch"
)

// FuzzLoadConfig feeds arbitrary config.json files to LoadConfig: an error, or a config
// that Validate accepts, whose parameters count without error, and that Save writes
// and LoadConfig reads back the same. Seeds: every preset, the fixture's config, the
// legacy *_config_dict form.
func FuzzLoadConfig(f *testing.F) {
	for _, name := range PresetNames() {
		c, err := Preset(name)
		if err != nil {
			f.Fatal(err)
		}
		b, err := json.Marshal(c)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	if p, ok := testutil.Lookup("clip-tiny-openai", "config.json"); ok {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(`{"text_config_dict": {"hidden_size": 64, "num_attention_heads": 2}, "vision_config_dict": {"image_size": 32, "patch_size": 8}, "projection_dim": 16}`))
	f.Add([]byte(`{"vision_config": {"num_hidden_layers": 1000000000}}`))
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		dir := t.TempDir()
		path := filepath.Join(dir, "config.json")
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
		c, err := LoadConfig(path)
		if err != nil {
			return
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("LoadConfig returned an invalid config: %v", err)
		}
		if n, err := ParamCount(c); err != nil || n <= 0 || n > MaxParams {
			t.Fatalf("ParamCount %d, %v", n, err)
		}
		again := filepath.Join(dir, "again.json")
		if err := c.Save(again); err != nil {
			t.Fatalf("Save: %v", err)
		}
		c2, err := LoadConfig(again)
		if err != nil {
			t.Fatalf("a saved config does not load: %v", err)
		}
		a, _ := json.Marshal(c)
		b, _ := json.Marshal(c2)
		if !bytes.Equal(a, b) {
			t.Fatalf("round trip differs:\n%s\n%s", a, b)
		}
	})
}

// microConfig is the smallest CLIP worth loading: a few thousand parameters.
func microConfig() Config {
	c := DefaultConfig()
	c.Text.VocabSize, c.Text.HiddenSize, c.Text.IntermediateSize = 16, 8, 16
	c.Text.NumHiddenLayers, c.Text.NumAttentionHeads, c.Text.MaxPositionEmbeddings = 1, 2, 4
	c.Text.EOSTokenID, c.Text.BOSTokenID, c.Text.PadTokenID = 2, 0, 1
	c.Vision.HiddenSize, c.Vision.IntermediateSize = 8, 16
	c.Vision.NumHiddenLayers, c.Vision.NumAttentionHeads = 1, 2
	c.Vision.ImageSize, c.Vision.PatchSize = 8, 4
	c.ProjectionDim = 4
	return c
}

// FuzzLoadCheckpoint: a model folder whose weights file (model.safetensors, or
// pytorch_model.bin when the first byte is odd) holds arbitrary bytes loads into a model
// or fails with an error, and either way leaves no tensor alive. Seeds: the weights of
// a micro model in both formats, cut short, and with a tensor of the wrong shape.
func FuzzLoadCheckpoint(f *testing.F) {
	cfg := microConfig()
	m, err := New(cfg, torch.CPU)
	if err != nil {
		f.Fatal(err)
	}
	dir := f.TempDir()
	st, pt := filepath.Join(dir, "w.safetensors"), filepath.Join(dir, "w.pt")
	if err := SaveWeights(st, m, torch.Float32); err != nil {
		f.Fatal(err)
	}
	if err := SaveWeights(pt, m, torch.Float32); err != nil {
		f.Fatal(err)
	}
	m.Free()
	stb, _ := os.ReadFile(st)
	ptb, _ := os.ReadFile(pt)
	f.Add(byte(0), stb)
	f.Add(byte(1), ptb)
	f.Add(byte(0), stb[:len(stb)/2])
	f.Add(byte(1), ptb[:len(ptb)-100])
	wrong := microConfig()
	wrong.ProjectionDim = 2
	if w, err := New(wrong, torch.CPU); err == nil {
		p := filepath.Join(dir, "wrong.safetensors")
		if err := SaveWeights(p, w, torch.Float32); err != nil {
			f.Fatal(err)
		}
		w.Free()
		b, _ := os.ReadFile(p)
		f.Add(byte(0), b)
	}
	cfgJSON, err := json.Marshal(cfg)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, kind byte, weights []byte) {
		dir := t.TempDir()
		os.WriteFile(filepath.Join(dir, ConfigFile), cfgJSON, 0o644)
		name := SafetensorsFile
		if kind%2 == 1 {
			name = PyTorchFile
		}
		os.WriteFile(filepath.Join(dir, name), weights, 0o644)
		live := torch.Live()
		m, _, err := LoadPretrained(dir, torch.CPU, torch.Float32)
		if err == nil {
			m.Free()
		}
		if n := torch.Live(); n != live {
			t.Fatalf("%d tensors alive after loading (err %v), %d before", n, err, live)
		}
	})
}
