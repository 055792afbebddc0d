package clip

import (
	"encoding/json"
	"math"
	"os/exec"
	"strings"
	"testing"

	"goclip/internal/testutil"
)

// TestFLOPsViTB16 holds the count to DESIGN.md's figures for ViT-B/16: 35.13 GFLOPs
// image + 5.96 GFLOPs text per pair, forward.
func TestFLOPsViTB16(t *testing.T) {
	cfg := mustPreset(t, "vit-b-16")
	if got := cfg.ImageFLOPs() / 1e9; math.Abs(got-35.13) > 0.005 {
		t.Errorf("vit-b-16 image GFLOPs = %.4f, want 35.13", got)
	}
	if got := cfg.TextFLOPs(0) / 1e9; math.Abs(got-5.96) > 0.005 {
		t.Errorf("vit-b-16 text GFLOPs = %.4f, want 5.96", got)
	}
	if a, b := cfg.TextFLOPs(0), cfg.TextFLOPs(cfg.Text.MaxPositionEmbeddings); a != b {
		t.Errorf("TextFLOPs(0) = %g, TextFLOPs(77) = %g: 0 should mean the full context", a, b)
	}
}

// TestFLOPsMatchFlopCounter counts the forward passes of transformers' CLIPModel
// (get_image_features of one image, get_text_features of one caption at the given
// length, eager attention) with torch.utils.flop_counter.FlopCounterMode on the meta
// device, an independent count of the same matrix products, and wants the same
// integers.
func TestFLOPsMatchFlopCounter(t *testing.T) {
	py := testutil.PythonTorch(t, "transformers")
	type arch struct {
		Name   string         `json:"name"`
		Tokens int64          `json:"tokens"`
		Config map[string]any `json:"config"`
	}
	var archs []arch
	var cfgs []Config
	for _, c := range []struct {
		preset string
		tokens int64
	}{{"tiny", 0}, {"tiny", 9}, {"vit-b-16", 0}, {"vit-b-32", 20}, {"vit-l-14", 0}} {
		cfg := mustPreset(t, c.preset)
		cfgs = append(cfgs, cfg)
		tokens := c.tokens
		if tokens == 0 {
			tokens = cfg.Text.MaxPositionEmbeddings
		}
		archs = append(archs, arch{Name: c.preset, Tokens: tokens, Config: transformersSizes(cfg)})
	}
	in, err := json.Marshal(archs)
	if err != nil {
		t.Fatal(err)
	}
	script := `import json, sys, torch, transformers
from torch.utils.flop_counter import FlopCounterMode
out = []
for a in json.loads(sys.argv[1]):
    cfg = transformers.CLIPConfig(**a["config"])
    cfg._attn_implementation = "eager"
    with torch.device("meta"):
        m = transformers.CLIPModel(cfg).eval()
        v = cfg.vision_config
        px = torch.zeros(1, v.num_channels, v.image_size, v.image_size)
        ids = torch.zeros(1, a["tokens"], dtype=torch.long)
    counts = []
    with torch.no_grad():
        for run in (lambda: m.get_image_features(pixel_values=px), lambda: m.get_text_features(input_ids=ids)):
            with FlopCounterMode(display=False) as f:
                run()
            counts.append(f.get_total_flops())
    out.append(counts)
print(json.dumps(out))`
	cmd := exec.Command(py, "-c", script, string(in))
	cmd.Dir = t.TempDir() // the repository's torch/ folder would shadow the torch package
	out, err := cmd.Output()
	if err != nil {
		msg := ""
		if ee, ok := err.(*exec.ExitError); ok {
			msg = string(ee.Stderr)
		}
		t.Fatalf("python: %v\n%s", err, msg)
	}
	var want [][2]int64
	if err := json.Unmarshal([]byte(strings.TrimSpace(string(out))), &want); err != nil || len(want) != len(archs) {
		t.Fatalf("python output %q: %v", out, err)
	}
	for i, a := range archs {
		// Exact: every term is an integer far below 2^53.
		if got := cfgs[i].ImageFLOPs(); got != float64(want[i][0]) {
			t.Errorf("%s: ImageFLOPs = %.0f, FlopCounterMode %d", a.Name, got, want[i][0])
		}
		if got := cfgs[i].TextFLOPs(a.Tokens); got != float64(want[i][1]) {
			t.Errorf("%s at %d tokens: TextFLOPs = %.0f, FlopCounterMode %d", a.Name, a.Tokens, got, want[i][1])
		}
	}
}

// transformersSizes are the sizes of c as transformers.CLIPConfig's keyword arguments
// (only the sizes: its strict config classes take them as ints).
func transformersSizes(c Config) map[string]any {
	return map[string]any{
		"projection_dim": c.ProjectionDim,
		"text_config": map[string]int64{"vocab_size": c.Text.VocabSize, "hidden_size": c.Text.HiddenSize,
			"intermediate_size": c.Text.IntermediateSize, "num_hidden_layers": c.Text.NumHiddenLayers,
			"num_attention_heads": c.Text.NumAttentionHeads, "max_position_embeddings": c.Text.MaxPositionEmbeddings},
		"vision_config": map[string]int64{"hidden_size": c.Vision.HiddenSize, "intermediate_size": c.Vision.IntermediateSize,
			"num_hidden_layers": c.Vision.NumHiddenLayers, "num_attention_heads": c.Vision.NumAttentionHeads,
			"image_size": c.Vision.ImageSize, "patch_size": c.Vision.PatchSize, "num_channels": c.Vision.NumChannels},
	}
}
