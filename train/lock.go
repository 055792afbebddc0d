package train

// Locked towers (LiT, "Locked-image Tuning"): a locked tower's parameters are frozen
// (requires_grad off, so the optimizer holds no state for them and checkpoints do not
// carry them) and its encoder layers stay in evaluation mode while the rest trains.
// The image tower is vision_model.* and visual_projection, the text tower text_model.*
// and text_projection; logit_scale belongs to neither and trains unless nothing else
// does. With ImageUnlockedLayers N the last N encoder layers of the image tower and
// what follows them (post_layernorm, visual_projection) still train, as open_clip's
// lock_image_unlocked_groups does.

import (
	"fmt"
	"strconv"
	"strings"

	"goclip/clip"
	"goclip/nn"
	"goclip/torch"
)

// Lock says which towers are frozen.
type Lock struct {
	Image               bool // --lock-image
	Text                bool // --lock-text
	ImageUnlockedLayers int  // --lock-image-unlocked-layers: the image tower's last N encoder layers train
}

// Any reports whether a tower is locked.
func (l Lock) Any() bool { return l.Image || l.Text }

// Validate checks the ranges that need no model (Options.Validate calls it).
func (l Lock) Validate() error {
	switch {
	case l.ImageUnlockedLayers < 0:
		return fmt.Errorf("--lock-image-unlocked-layers %d: want 0 or more", l.ImageUnlockedLayers)
	case l.ImageUnlockedLayers > 0 && !l.Image:
		return fmt.Errorf("--lock-image-unlocked-layers %d: unlocks layers of the locked image tower: give --lock-image too", l.ImageUnlockedLayers)
	}
	return nil
}

// Check validates the lock against the model's config.
func (l Lock) Check(cfg clip.Config) error {
	switch {
	case int64(l.ImageUnlockedLayers) > cfg.Vision.NumHiddenLayers:
		return fmt.Errorf("--lock-image-unlocked-layers %d: the image tower has %d encoder layers", l.ImageUnlockedLayers, cfg.Vision.NumHiddenLayers)
	}
	return nil
}

// Frozen reports whether the parameter with this HF name (or a LoRA tensor under such
// a module) is frozen by the lock in a model of cfg.
func (l Lock) Frozen(cfg clip.Config, name string) bool {
	switch {
	case strings.HasPrefix(name, "text_model.") || name == "text_projection" || strings.HasPrefix(name, "text_projection."):
		return l.Text
	case strings.HasPrefix(name, "vision_model.") || name == "visual_projection" || strings.HasPrefix(name, "visual_projection."):
		if !l.Image {
			return false
		}
		if l.ImageUnlockedLayers == 0 {
			return true
		}
		if i, ok := visionLayer(name); ok {
			return int64(i) < cfg.Vision.NumHiddenLayers-int64(l.ImageUnlockedLayers)
		}
		// After the encoder: post_layernorm and the projection train; before it
		// (embeddings, pre_layrnorm) stay frozen.
		return !strings.HasPrefix(name, "vision_model.post_layernorm.") && !strings.HasPrefix(name, "visual_projection")
	}
	return false
}

// visionLayer is the encoder layer index of a vision_model.encoder.layers.N name.
func visionLayer(name string) (int, bool) {
	rest, ok := strings.CutPrefix(name, "vision_model.encoder.layers.")
	if !ok {
		return 0, false
	}
	i, err := strconv.Atoi(rest[:max(0, strings.IndexByte(rest, '.'))])
	return i, err == nil
}

// FrozenCount is the number of elements of the parameters of cfg (clip.ParamShapes)
// that the lock freezes: what `goclip info` subtracts from the trainable count.
func (l Lock) FrozenCount(cfg clip.Config) int64 {
	var n int64
	for _, p := range clip.ParamShapes(cfg) {
		if l.Frozen(cfg, p.Name) {
			n += p.Numel()
		}
	}
	return n
}

// apply turns requires_grad off on the frozen parameters of params.
func (l Lock) apply(cfg clip.Config, params []nn.Named) error {
	if !l.Any() {
		return nil
	}
	return torch.Try(func() {
		for _, p := range params {
			if l.Frozen(cfg, p.Name) {
				p.T.SetRequiresGrad(false)
			}
		}
	})
}

// setModes puts the frozen encoder layers of m in evaluation mode (after m.SetTrain
// has set every module's mode), and the frozen projections.
func (l Lock) setModes(m *clip.Model) {
	if !l.Any() {
		return
	}
	for _, tower := range []struct {
		prefix string
		enc    *clip.Encoder
		proj   nn.Projection
	}{{"vision_model", m.VisionModel.Encoder, m.VisualProjection}, {"text_model", m.TextModel.Encoder, m.TextProjection}} {
		for i, layer := range tower.enc.Layers {
			if l.Frozen(m.Config, fmt.Sprintf("%s.encoder.layers.%d.mlp.fc1.weight", tower.prefix, i)) {
				layer.SelfAttn.SetTrain(false)
				layer.MLP.SetTrain(false)
			}
		}
		name := "visual_projection.weight"
		if tower.prefix == "text_model" {
			name = "text_projection.weight"
		}
		if t, ok := tower.proj.(nn.Trainer); ok && l.Frozen(m.Config, name) {
			t.SetTrain(false)
		}
	}
}
