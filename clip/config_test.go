package clip

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestConfigLoadFixture(t *testing.T) {
	c, err := LoadConfig(fixture(t, "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	if c.Vision.HiddenSize != 128 || c.Vision.NumAttentionHeads != 2 || c.Vision.ImageSize != 32 || c.Vision.PatchSize != 8 ||
		c.Text.HiddenSize != 64 || c.Text.NumAttentionHeads != 4 || c.Text.EOSTokenID != 2 || c.ProjectionDim != 48 ||
		c.LogitScaleInitValue != 2.6592 || c.Text.HiddenAct != "quick_gelu" {
		t.Errorf("unexpected config %+v", c)
	}
	// A folder works as well as the file.
	if _, err := LoadConfig(filepath.Dir(fixture(t, "config.json"))); err != nil {
		t.Error(err)
	}
}

func TestConfigRoundTripKeepsUnknownFields(t *testing.T) {
	dir := t.TempDir()
	in := `{
  "architectures": ["SomethingElse"],
  "projection_dim": 256,
  "torch_dtype": "float32",
  "transformers_version": "4.40.0",
  "text_config": {"hidden_size": 256, "num_attention_heads": 4, "eos_token_id": 2, "tie_word_embeddings": false,
                  "id2label": {"0": "a"}},
  "vision_config": {"patch_size": 16, "custom_thing": [1, 2, 3]}
}`
	p := filepath.Join(dir, "config.json")
	if err := os.WriteFile(p, []byte(in), 0o644); err != nil {
		t.Fatal(err)
	}
	c, err := LoadConfig(p)
	if err != nil {
		t.Fatal(err)
	}
	// Absent fields take transformers' defaults.
	if c.Text.IntermediateSize != 2048 || c.Vision.HiddenSize != 768 || c.LogitScaleInitValue != 2.6592 || c.Text.VocabSize != 49408 {
		t.Errorf("defaults not applied: %+v", c)
	}
	c.Text.NumHiddenLayers = 3
	out := filepath.Join(dir, "out.json")
	if err := c.Save(out); err != nil {
		t.Fatal(err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 2 {
		t.Errorf("Save left extra files: %v", entries)
	}
	var obj map[string]any
	data, _ := os.ReadFile(out)
	if err := json.Unmarshal(data, &obj); err != nil {
		t.Fatal(err)
	}
	if a, _ := json.Marshal(obj["architectures"]); string(a) != `["CLIPModel"]` || obj["model_type"] != "clip" {
		t.Errorf("architectures %s, model_type %v", a, obj["model_type"])
	}
	if obj["torch_dtype"] != "float32" || obj["transformers_version"] != "4.40.0" {
		t.Errorf("top-level unknown fields lost: %v", obj)
	}
	tc := obj["text_config"].(map[string]any)
	vc := obj["vision_config"].(map[string]any)
	if tc["tie_word_embeddings"] != false || tc["id2label"] == nil || vc["custom_thing"] == nil {
		t.Errorf("tower unknown fields lost: %v %v", tc, vc)
	}
	if tc["num_hidden_layers"] != 3.0 || tc["model_type"] != "clip_text_model" || vc["model_type"] != "clip_vision_model" {
		t.Errorf("known fields: %v %v", tc, vc)
	}
	c2, err := LoadConfig(out)
	if err != nil {
		t.Fatal(err)
	}
	a, _ := json.Marshal(c)
	b, _ := json.Marshal(c2)
	if string(a) != string(b) {
		t.Errorf("round trip changed the config:\n%s\n%s", a, b)
	}
}

func TestConfigLegacyDicts(t *testing.T) {
	p := filepath.Join(t.TempDir(), "config.json")
	os.WriteFile(p, []byte(`{"text_config_dict": {"hidden_size": 256, "num_attention_heads": 4},
		"vision_config_dict": {"patch_size": 14}, "text_config": null, "projection_dim": 128}`), 0o644)
	c, err := LoadConfig(p)
	if err != nil {
		t.Fatal(err)
	}
	if c.Text.HiddenSize != 256 || c.Vision.PatchSize != 14 {
		t.Errorf("legacy *_config_dict not read: %+v", c)
	}
	data, _ := json.Marshal(c)
	if strings.Contains(string(data), "_config_dict") {
		t.Errorf("legacy keys written back: %s", data)
	}
}

func TestConfigValidation(t *testing.T) {
	base, _ := Preset("tiny")
	cases := []struct {
		edit func(*Config)
		want []string
	}{
		{func(c *Config) { c.Text.HiddenAct = "swish" }, []string{"text_config.hidden_act", "swish"}},
		{func(c *Config) { c.Vision.HiddenAct = "relu" }, []string{"vision_config.hidden_act"}},
		{func(c *Config) { c.Text.HiddenSize = 130 }, []string{"text_config.hidden_size (130) is not divisible by text_config.num_attention_heads (4)"}},
		{func(c *Config) { c.Vision.NumAttentionHeads = 3 }, []string{"vision_config.hidden_size (128) is not divisible by vision_config.num_attention_heads (3)"}},
		{func(c *Config) { c.Vision.ImageSize = 60 }, []string{"vision_config.image_size (60) is not divisible by vision_config.patch_size (8)"}},
		{func(c *Config) { c.ProjectionDim = 0 }, []string{"projection_dim must be positive"}},
		{func(c *Config) { c.Text.EOSTokenID = 49408 }, []string{"text_config.eos_token_id"}},
		{func(c *Config) { c.Vision.LayerNormEps = 0 }, []string{"vision_config.layer_norm_eps"}},
		{func(c *Config) { c.Text.AttentionDropout = 1 }, []string{"text_config.attention_dropout"}},
		{func(c *Config) { c.Text.NumHiddenLayers = -1; c.Vision.PatchSize = 0 },
			[]string{"text_config.num_hidden_layers", "vision_config.patch_size"}},
	}
	for _, tc := range cases {
		c := base
		tc.edit(&c)
		err := c.Validate()
		if err == nil {
			t.Errorf("no error, want %q", tc.want)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("error %q lacks %q", err, w)
			}
		}
	}
	// A bad file is rejected by LoadConfig, with the path.
	p := filepath.Join(t.TempDir(), "config.json")
	os.WriteFile(p, []byte(`{"vision_config": {"image_size": 225, "patch_size": 16}}`), 0o644)
	if _, err := LoadConfig(p); err == nil || !strings.Contains(err.Error(), "vision_config.image_size") || !strings.Contains(err.Error(), p) {
		t.Errorf("LoadConfig: %v", err)
	}
	os.WriteFile(p, []byte(`{"vision_config": [}`), 0o644)
	if _, err := LoadConfig(p); err == nil || !strings.Contains(err.Error(), p) {
		t.Errorf("LoadConfig on bad JSON: %v", err)
	}
	if _, err := LoadConfig(filepath.Join(t.TempDir(), "none.json")); err == nil {
		t.Error("LoadConfig on a missing file: no error")
	}
}

func TestConfigPresets(t *testing.T) {
	for _, name := range PresetNames() {
		c, err := Preset(name)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Validate(); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	if _, err := Preset("vit-h-14"); err == nil || !strings.Contains(err.Error(), "vit-b-16") {
		t.Errorf("unknown preset: %v", err)
	}
	b16, _ := Preset("vit-b-16")
	if b16.Vision.PatchSize != 16 || b16.Vision.HiddenSize != 768 || b16.Text.HiddenSize != 512 ||
		b16.Text.NumAttentionHeads != 8 || b16.Text.EOSTokenID != 2 || b16.ProjectionDim != 512 {
		t.Errorf("vit-b-16: %+v", b16)
	}
	scratch, _ := Preset("seed-scratch")
	if scratch.Text.EOSTokenID != 49407 {
		t.Errorf("seed-scratch eos %d", scratch.Text.EOSTokenID)
	}
	scratch.Text.EOSTokenID, scratch.Text.BOSTokenID, scratch.Text.PadTokenID = b16.Text.EOSTokenID, b16.Text.BOSTokenID, b16.Text.PadTokenID
	a, _ := json.Marshal(scratch)
	b, _ := json.Marshal(b16)
	if string(a) != string(b) {
		t.Errorf("seed-scratch differs from vit-b-16 in more than the special tokens:\n%s\n%s", a, b)
	}
	l14, _ := Preset("vit-l-14")
	if n, _ := ParamCount(l14); n != 427_616_513 {
		t.Errorf("vit-l-14: %d parameters, want 427,616,513 (openai/clip-vit-large-patch14)", n)
	}
	b32, _ := Preset("vit-b-32")
	if n, _ := ParamCount(b32); n != 151_277_313 {
		t.Errorf("vit-b-32: %d parameters, want 151,277,313 (openai/clip-vit-base-patch32)", n)
	}
}

// TestPresetNamesCopy: the list of presets cannot be changed through what PresetNames
// returns, and every name it gives is one Preset accepts.
func TestPresetNamesCopy(t *testing.T) {
	names := PresetNames()
	names[0] = "changed"
	if got := PresetNames()[0]; got == "changed" {
		t.Fatal("PresetNames returned the package's own slice")
	}
	for _, n := range PresetNames() {
		if _, err := Preset(n); err != nil {
			t.Errorf("Preset(%q): %v", n, err)
		}
	}
}
