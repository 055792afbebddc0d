package main

// Locked towers and one-tower LoRA on the command line.

import (
	"bytes"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"goclip/clip"
	"goclip/internal/testutil"
	"goclip/torch/serialize"
)

// infoCounts runs goclip info --json with args.
func infoCounts(t *testing.T, args ...string) paramCounts {
	t.Helper()
	var pc paramCounts
	out := mustGoclip(t, append([]string{"info", "--json"}, args...)...)
	if err := json.Unmarshal([]byte(out), &pc); err != nil {
		t.Fatalf("info --json %v: %v: %s", args, err, out)
	}
	return pc
}

// TestInfoCountsLockedTowers: info's trainable count is the total less the locked
// tower's parameters, summed here from the config's parameter list by name.
func TestInfoCountsLockedTowers(t *testing.T) {
	cfg, err := clip.Preset("tiny")
	if err != nil {
		t.Fatal(err)
	}
	var total, image, text, lastLayer int64
	last := "vision_model.encoder.layers." + itoa(int(cfg.Vision.NumHiddenLayers)-1) + "."
	for _, p := range clip.ParamShapes(cfg) {
		n := p.Numel()
		total += n
		switch {
		case strings.HasPrefix(p.Name, "vision_model.") || strings.HasPrefix(p.Name, "visual_projection."):
			image += n
			if strings.HasPrefix(p.Name, last) || strings.HasPrefix(p.Name, "vision_model.post_layernorm.") || strings.HasPrefix(p.Name, "visual_projection.") {
				lastLayer += n
			}
		case strings.HasPrefix(p.Name, "text_model.") || strings.HasPrefix(p.Name, "text_projection."):
			text += n
		}
	}
	for _, c := range []struct {
		args []string
		want int64
	}{
		{nil, total},
		{[]string{"--lock-image"}, total - image},
		{[]string{"--lock-text"}, total - text},
		{[]string{"--lock-image", "--lock-text"}, total - image - text}, // logit_scale
		{[]string{"--lock-image", "--lock-image-unlocked-layers", "1"}, total - image + lastLayer},
	} {
		pc := infoCounts(t, append([]string{"--config", "tiny"}, c.args...)...)
		if pc.Total != total || pc.Trainable != c.want {
			t.Errorf("info %v: total %d trainable %d, want %d and %d", c.args, pc.Total, pc.Trainable, total, c.want)
		}
	}
	_, _, err = runGoclip(t, "info", "--config", "tiny", "--lock-image", "--lock-image-unlocked-layers", "99")
	if err == nil || !strings.Contains(err.Error(), "--lock-image-unlocked-layers 99") {
		t.Errorf("99 unlocked layers of a %d-layer tower: %v", cfg.Vision.NumHiddenLayers, err)
	}
	// LoRA: --lock-image leaves the adapters to the text tower, as --lora-towers text.
	a := infoCounts(t, "--config", "tiny", "--lora-r", "4", "--lock-image")
	b := infoCounts(t, "--config", "tiny", "--lora-r", "4", "--lora-towers", "text")
	both := infoCounts(t, "--config", "tiny", "--lora-r", "4")
	if a != b || !(a.Trainable > 0 && a.Trainable < both.Trainable) {
		t.Errorf("LoRA counts: --lock-image %+v, --lora-towers text %+v, both towers %+v", a, b, both)
	}
	if _, _, err := runGoclip(t, "info", "--config", "tiny", "--lora-r", "4", "--lock-text", "--lora-towers", "text"); err == nil ||
		!strings.Contains(err.Error(), "--lora-towers text") {
		t.Errorf("--lora-towers text with --lock-text: %v", err)
	}
}

// TestLockedTowersTrain: goclip train --model M --lock-text trains the image tower
// only (the final model's text tower is byte-identical to M's, its image tower not),
// and finetune --lora-towers vision writes adapters in the vision tower only.
func TestLockedTowersTrain(t *testing.T) {
	fx := testutil.Fixtures(t, "clip-tiny-openai")
	data := tinyData(t)
	base, _, err := serialize.ReadSafetensors(filepath.Join(fx, "model.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	run := filepath.Join(t.TempDir(), "lit")
	common := []string{"--data", data, "--max-steps", "2", "--batch-size", "16", "--threads", "1", "--workers", "1", "--device", "cpu", "--warmup", "1", "--lr", "1e-3"}
	_, stderr, err := runGoclip(t, append([]string{"train", "--model", fx, "--out", run, "--lock-text"}, common...)...)
	if err != nil {
		t.Fatalf("train --lock-text: %v\n%s", err, stderr)
	}
	if !strings.Contains(stderr, "locked (frozen, in evaluation mode): text tower") {
		t.Errorf("the run log does not say what is locked:\n%s", stderr)
	}
	got, _, err := serialize.ReadSafetensors(filepath.Join(run, "model", "model.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	var same, moved int
	for k, w := range base {
		g, ok := got[k]
		if !ok {
			continue // e.g. position_ids buffers
		}
		text := strings.HasPrefix(k, "text_model.") || strings.HasPrefix(k, "text_projection.")
		switch eq := bytes.Equal(g.Data, w.Data); {
		case text && !eq:
			t.Errorf("locked %s changed", k)
		case text:
			same++
		case strings.HasPrefix(k, "vision_model.encoder.") && !eq:
			moved++
		}
	}
	if same == 0 || moved == 0 {
		t.Errorf("%d text tensors unchanged, %d vision encoder tensors moved: want both above 0", same, moved)
	}

	ft := filepath.Join(t.TempDir(), "ft")
	mustGoclip(t, append([]string{"finetune", "--model", fx, "--out", ft, "--lora-r", "4", "--lora-towers", "vision"}, common...)...)
	ad, _, err := serialize.ReadSafetensors(filepath.Join(ft, "adapter", "adapter_model.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	for k := range ad {
		if !strings.Contains(k, "vision_model.") {
			t.Errorf("--lora-towers vision: the adapter holds %s", k)
		}
	}
	if len(ad) == 0 {
		t.Error("the adapter is empty")
	}
}

func itoa(n int) string { b, _ := json.Marshal(n); return string(b) }
