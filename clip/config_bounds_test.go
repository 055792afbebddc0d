package clip

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"goclip/internal/testutil"
	"goclip/torch"
)

// bigG is ViT-bigG/14 (laion/CLIP-ViT-bigG-14-laion2B-39B-b160k), the largest real CLIP,
// at 448 pixels: every bound must leave it far inside.
func bigG() Config {
	c := DefaultConfig()
	c.Vision.HiddenSize, c.Vision.IntermediateSize = 1664, 8192
	c.Vision.NumHiddenLayers, c.Vision.NumAttentionHeads = 48, 16
	c.Vision.ImageSize, c.Vision.PatchSize = 448, 14
	c.Vision.HiddenAct, c.Text.HiddenAct = "gelu", "gelu"
	c.Text.HiddenSize, c.Text.IntermediateSize = 1280, 5120
	c.Text.NumHiddenLayers, c.Text.NumAttentionHeads = 32, 20
	c.ProjectionDim = 1280
	return c
}

// TestConfigUpperBounds: each size over its bound is an error naming its key and the
// bound, from Validate and from LoadConfig, and ViT-bigG/14 passes.
func TestConfigUpperBounds(t *testing.T) {
	if err := bigG().Validate(); err != nil {
		t.Fatalf("ViT-bigG/14 at 448 px: %v", err)
	}
	cases := []struct {
		key   string
		edit  func(*Config, int64)
		limit int64
	}{
		{"text_config.vocab_size", func(c *Config, v int64) { c.Text.VocabSize = v }, MaxVocabSize},
		{"text_config.hidden_size", func(c *Config, v int64) { c.Text.HiddenSize = v }, MaxHiddenSize},
		{"text_config.intermediate_size", func(c *Config, v int64) { c.Text.IntermediateSize = v }, MaxIntermediateSize},
		{"text_config.num_hidden_layers", func(c *Config, v int64) { c.Text.NumHiddenLayers = v }, MaxLayers},
		{"text_config.num_attention_heads", func(c *Config, v int64) { c.Text.NumAttentionHeads = v }, MaxAttentionHeads},
		{"text_config.max_position_embeddings", func(c *Config, v int64) { c.Text.MaxPositionEmbeddings = v }, MaxPositions},
		{"vision_config.hidden_size", func(c *Config, v int64) { c.Vision.HiddenSize = v }, MaxHiddenSize},
		{"vision_config.intermediate_size", func(c *Config, v int64) { c.Vision.IntermediateSize = v }, MaxIntermediateSize},
		{"vision_config.num_hidden_layers", func(c *Config, v int64) { c.Vision.NumHiddenLayers = v }, MaxLayers},
		{"vision_config.num_attention_heads", func(c *Config, v int64) { c.Vision.NumAttentionHeads = v }, MaxAttentionHeads},
		{"vision_config.num_channels", func(c *Config, v int64) { c.Vision.NumChannels = v }, MaxChannels},
		{"vision_config.image_size", func(c *Config, v int64) { c.Vision.ImageSize = v }, MaxImageSize},
		{"vision_config.patch_size", func(c *Config, v int64) { c.Vision.PatchSize = v }, MaxImageSize},
		{"projection_dim", func(c *Config, v int64) { c.ProjectionDim = v }, MaxProjectionDim},
	}
	dir := t.TempDir()
	for _, tc := range cases {
		for _, v := range []int64{tc.limit + 1, 1_000_000_000, 1 << 62} {
			c := bigG()
			tc.edit(&c, v)
			want := fmt.Sprintf("%s must be at most %d, got %d", tc.key, tc.limit, v)
			if err := c.Validate(); err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("%s = %d: %v, want %q", tc.key, v, err, want)
			}
			// The same through a config.json, with the path.
			b, _ := json.Marshal(c)
			p := filepath.Join(dir, "config.json")
			os.WriteFile(p, b, 0o644)
			if _, err := LoadConfig(p); err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), p) {
				t.Errorf("LoadConfig %s = %d: %v", tc.key, v, err)
			}
		}
	}
	// Too many patches: 8192 px in 8 px patches.
	c := bigG()
	c.Vision.ImageSize, c.Vision.PatchSize = 8192, 8
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "makes 1048576 patches") {
		t.Errorf("8192/8 px: %v", err)
	}
	// Every size at its bound: each is allowed, the total is not.
	c = bigG()
	c.Text.HiddenSize, c.Vision.HiddenSize = MaxHiddenSize, MaxHiddenSize
	c.Text.IntermediateSize, c.Vision.IntermediateSize = MaxIntermediateSize, MaxIntermediateSize
	c.Text.NumHiddenLayers, c.Vision.NumHiddenLayers = MaxLayers, MaxLayers
	c.Text.NumAttentionHeads, c.Vision.NumAttentionHeads = 256, 256
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "the config describes 1650255740929 parameters, more than 137438953472") || strings.Contains(err.Error(), "must be at most") {
		t.Errorf("all at the bounds: %v", err)
	}
}

// TestParamCountChecked: counts are exact or an error, never a wrapped number, and
// take no memory per layer.
func TestParamCountChecked(t *testing.T) {
	// vocab_size 2^62 wrapped the count before; now it is refused by key.
	c := bigG()
	c.Text.VocabSize = 1 << 62
	if n, err := ParamCount(c); err == nil || !strings.Contains(err.Error(), "text_config.vocab_size") {
		t.Errorf("vocab 2^62: %d, %v", n, err)
	}
	// countParams itself overflows cleanly on sizes Validate would refuse.
	c.Text.HiddenSize = 1 << 40
	if n, err := countParams(c); err == nil || !strings.Contains(err.Error(), "overflows") {
		t.Errorf("countParams of 2^62 x 2^40: %d, %v", n, err)
	}
	// A billion layers: refused by key, without a list of a billion parameters.
	c = bigG()
	c.Vision.NumHiddenLayers = 1_000_000_000
	var err error
	var n int64
	elapsed, alloc := testutil.MeasureAlloc(func() { n, err = ParamCount(c) })
	if err == nil || !strings.Contains(err.Error(), "vision_config.num_hidden_layers must be at most") {
		t.Errorf("1e9 layers: %d, %v", n, err)
	}
	if elapsed > time.Second || alloc > 1<<20 {
		t.Errorf("1e9 layers: %v and %d bytes", elapsed, alloc)
	}
	// Counting allocates the same at 1 layer and at MaxLayers.
	c1, c256 := bigG(), bigG()
	c1.Vision.NumHiddenLayers, c1.Text.NumHiddenLayers = 1, 1
	c256.Vision.NumHiddenLayers, c256.Text.NumHiddenLayers = MaxLayers, MaxLayers
	_, a1 := testutil.MeasureAlloc(func() { countParams(c1) })
	_, a256 := testutil.MeasureAlloc(func() { countParams(c256) })
	if a256 > a1+1024 {
		t.Errorf("countParams allocates %d bytes at 1 layer, %d at %d", a1, a256, MaxLayers)
	}
	// The closed count is the expanded list's.
	var sum int64
	for _, p := range ParamShapes(c256) {
		sum += p.Numel()
	}
	if got, err := ParamCount(c256); err != nil || got != sum {
		t.Errorf("ParamCount %d (%v), ParamShapes sums to %d", got, err, sum)
	}
}

// TestBigGCountMatchesTransformers: ViT-bigG/14's parameter count is transformers'
// CLIPModel's, built on the meta device.
func TestBigGCountMatchesTransformers(t *testing.T) {
	if testing.Short() && os.Getenv("CI") != "true" {
		t.Skip("-short: skipping the transformers comparison")
	}
	py := testutil.PythonTorch(t, "transformers")
	dir := t.TempDir()
	sizes, _ := json.Marshal(transformersSizes(bigG()))
	script := `import json, sys, torch, transformers
cfg = transformers.CLIPConfig(**json.loads(sys.argv[1]))
with torch.device("meta"):
    m = transformers.CLIPModel(cfg)
print(sum(p.numel() for p in m.parameters()))`
	cmd := exec.Command(py, "-c", script, string(sizes))
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("python: %v\n%s", err, out)
	}
	var want int64
	if _, err := fmt.Sscan(strings.TrimSpace(string(out)), &want); err != nil {
		t.Fatalf("python printed %q", out)
	}
	got, err := ParamCount(bigG())
	if err != nil || got != want {
		t.Errorf("ViT-bigG/14 at 448 px: ParamCount %d (%v), transformers %d", got, err, want)
	}
	t.Logf("ViT-bigG/14 at 448 px: %d parameters", got)
}

// TestNewRefusesHugeWidth: hidden_size 1e9 is refused by Validate before New allocates
// anything (it allocated 4 GB for the class embedding before failing).
func TestNewRefusesHugeWidth(t *testing.T) {
	c, _ := Preset("tiny")
	c.Vision.HiddenSize, c.Vision.NumAttentionHeads = 1_000_000_000, 1
	live := torch.Live()
	m, err := New(c, torch.CPU)
	if err == nil {
		m.Free()
		t.Fatal("New built a model of width 1e9")
	}
	if !strings.Contains(err.Error(), "vision_config.hidden_size must be at most 16384, got 1000000000") {
		t.Errorf("error %v", err)
	}
	if n := torch.Live(); n != live {
		t.Errorf("%d tensors live after the refusal, %d before", n, live)
	}
}
