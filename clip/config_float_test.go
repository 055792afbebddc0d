package clip

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestConfigWritesPythonFloats: float fields that hold whole numbers are written with a
// decimal point (transformers 5 rejects "initializer_factor": 1 as an int), and the file
// reads back to the same config.
func TestConfigWritesPythonFloats(t *testing.T) {
	cfg := DefaultConfig()
	cfg.LogitScaleInitValue = 3
	path := filepath.Join(t.TempDir(), "config.json")
	if err := cfg.Save(path); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(raw, &top); err != nil {
		t.Fatal(err)
	}
	var text, vision map[string]json.RawMessage
	if json.Unmarshal(top["text_config"], &text) != nil || json.Unmarshal(top["vision_config"], &vision) != nil {
		t.Fatalf("config.json: %s", raw)
	}
	for _, c := range []struct {
		obj  map[string]json.RawMessage
		key  string
		want string
	}{
		{top, "initializer_factor", "1.0"}, {top, "logit_scale_init_value", "3.0"},
		{text, "initializer_factor", "1.0"}, {text, "attention_dropout", "0.0"}, {text, "layer_norm_eps", "0.00001"},
		{vision, "initializer_factor", "1.0"}, {vision, "attention_dropout", "0.0"}, {vision, "initializer_range", "0.02"},
		{top, "projection_dim", "512"}, {text, "eos_token_id", "49407"},
	} {
		if got := strings.TrimSpace(string(c.obj[c.key])); got != c.want {
			t.Errorf("%s written as %s, want %s", c.key, got, c.want)
		}
	}
	back, err := LoadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	if back.LogitScaleInitValue != 3 || back.Text.InitializerFactor != 1 || back.Vision.LayerNormEps != 1e-5 {
		t.Errorf("read back %+v", back)
	}
}
