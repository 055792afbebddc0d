package train

import (
	"bytes"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"goclip/internal/numfmt"
	"goclip/nn"
	"goclip/torch"
	"goclip/torch/serialize"
)

// rawParams copies every parameter's bytes.
func rawParams(t *testing.T, ps []nn.Named) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	if err := torch.Try(func() {
		for _, p := range ps {
			out[p.Name] = bytes.Clone(p.T.Raw().Data)
		}
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestLockedImageTower trains with the image tower locked but its last layer: every
// frozen tensor is byte-identical afterwards, every other one moved, the checkpoint
// (weights and AdamW moments) holds exactly the trained tensors, and the log counts
// only them.
func TestLockedImageTower(t *testing.T) {
	f := synthData(t, 48, "base")
	cfg := tinyConfig(t, f.tok)
	if cfg.Vision.NumHiddenLayers < 2 {
		t.Fatalf("the test config has %d vision layers, want 2 or more", cfg.Vision.NumHiddenLayers)
	}
	m := newModel(t, cfg, 3)
	lock := Lock{Image: true, ImageUnlockedLayers: 1}
	before := rawParams(t, m.NamedParameters())
	var log strings.Builder
	opts := Options{MaxSteps: 4, BatchSize: 8, LR: 1e-3, Warmup: 1, LogEvery: 2, Workers: 2, Out: t.TempDir(), Lock: lock, Log: &log}
	if _, err := runJob(t, f, m, opts); err != nil {
		t.Fatal(err)
	}
	after := rawParams(t, m.NamedParameters())
	var frozen, trained []string
	var frozenN, total int64
	for _, p := range m.NamedParameters() {
		total += p.T.Numel()
		if lock.Frozen(cfg, p.Name) {
			frozen, frozenN = append(frozen, p.Name), frozenN+p.T.Numel()
			if !bytes.Equal(before[p.Name], after[p.Name]) {
				t.Errorf("frozen %s changed in training", p.Name)
			}
			if p.T.RequiresGrad() {
				t.Errorf("frozen %s requires grad", p.Name)
			}
		} else {
			trained = append(trained, p.Name)
			if bytes.Equal(before[p.Name], after[p.Name]) {
				t.Errorf("trained %s did not change", p.Name)
			}
		}
	}
	last := int(cfg.Vision.NumHiddenLayers) - 1
	for _, want := range []string{"vision_model.embeddings.patch_embedding.weight", "vision_model.pre_layrnorm.weight",
		"vision_model.encoder.layers.0.self_attn.q_proj.weight"} {
		if !lock.Frozen(cfg, want) {
			t.Errorf("%s is not frozen", want)
		}
	}
	for _, want := range []string{"vision_model.encoder.layers." + itoa(last) + ".mlp.fc1.weight", "vision_model.post_layernorm.weight",
		"visual_projection.weight", "text_model.encoder.layers.0.self_attn.q_proj.weight", "text_projection.weight", "logit_scale"} {
		if lock.Frozen(cfg, want) {
			t.Errorf("%s is frozen", want)
		}
	}
	if n := lock.FrozenCount(cfg); n != frozenN {
		t.Errorf("FrozenCount from the config: %d, the model's frozen parameters hold %d", n, frozenN)
	}
	obj, err := serialize.ReadPTObject(filepath.Join(opts.Out, "checkpoints", LastCheckpoint))
	if err != nil {
		t.Fatal(err)
	}
	top := obj.(map[string]any)
	var saved []string
	for k := range top["model"].(map[string]any) {
		saved = append(saved, k)
	}
	sort.Strings(saved)
	sort.Strings(trained)
	if strings.Join(saved, ",") != strings.Join(trained, ",") {
		t.Errorf("the checkpoint holds %d tensors, the run trains %d", len(saved), len(trained))
	}
	moments := 0
	for _, g := range top["optimizer"].(map[string]any)["groups"].([]any) {
		moments += len(g.(map[string]any)["exp_avg"].([]any))
	}
	if moments != len(trained) {
		t.Errorf("the optimizer holds moments for %d tensors, want %d (the trained ones)", moments, len(trained))
	}
	if want := numfmt.Thousands(total-frozenN) + " of " + numfmt.Thousands(total) + " parameters trained"; !strings.Contains(log.String(), want) ||
		!strings.Contains(log.String(), "locked (frozen, in evaluation mode): image tower but its last 1 layer") {
		t.Errorf("the log does not say %q and what is locked:\n%s", want, log.String())
	}
	t.Logf("%d frozen tensors (%d values) unchanged, %d trained tensors moved", len(frozen), frozenN, len(trained))
}

// TestLockedTowerEvalMode: with attention dropout on, a locked text tower computes the
// same features twice in training mode (its layers are in evaluation mode), while the
// unlocked image tower's features differ between calls.
func TestLockedTowerEvalMode(t *testing.T) {
	f := synthData(t, 48, "base")
	cfg := tinyConfig(t, f.tok)
	cfg.Text.AttentionDropout, cfg.Vision.AttentionDropout = 0.5, 0.5
	m := newModel(t, cfg, 4)
	s := torch.NewScope()
	defer s.Close()
	m.SetTrain(true)
	Lock{Text: true}.setModes(m)
	ids := torch.FromInt64([]int64{1, 5, 7, 9, 2, 0, 0, 0}, 1, 8)
	torch.ManualSeed(1)
	pixels := torch.Randn([]int64{1, 3, cfg.Vision.ImageSize, cfg.Vision.ImageSize}, torch.Float32, torch.CPU)
	var sameText, sameImage bool
	if err := torch.Try(func() {
		torch.NoGrad(func() {
			sameText = m.EncodeText(ids).Equal(m.EncodeText(ids))
			sameImage = m.EncodeImage(pixels).Equal(m.EncodeImage(pixels))
		})
	}); err != nil {
		t.Fatal(err)
	}
	if !sameText {
		t.Error("the locked text tower's features differ between two calls: its dropout is on")
	}
	if sameImage {
		t.Error("the unlocked image tower's features are equal between two calls with dropout 0.5: is it in training mode?")
	}
}

// TestLockChecks: --lock-image-unlocked-layers needs --lock-image (Validate) and at
// most the tower's layers (checked against the model).
func TestLockChecks(t *testing.T) {
	f := synthData(t, 48, "base")
	cfg := tinyConfig(t, f.tok)
	base := Options{Epochs: 1, BatchSize: 8, GradAccum: 1, LR: 1e-3, Beta2: 0.98, MaxBadSteps: 1, LogEvery: 1, EvalBatchSize: 1, Workers: 1}
	if err := base.Validate(); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		l    Lock
		want string
	}{
		{Lock{ImageUnlockedLayers: 1}, "give --lock-image"},
		{Lock{Image: true, ImageUnlockedLayers: -1}, "want 0 or more"},
	} {
		o := base
		o.Lock = c.l
		if err := o.Validate(); err == nil || !strings.HasPrefix(err.Error(), "--lock-image-unlocked-layers") || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: Validate gave %v, want an error naming the flag and %q", c.l, err, c.want)
		}
	}
	l := Lock{Image: true, ImageUnlockedLayers: int(cfg.Vision.NumHiddenLayers) + 1}
	if err := l.Check(cfg); err == nil || !strings.Contains(err.Error(), "--lock-image-unlocked-layers") || !strings.Contains(err.Error(), "encoder layers") {
		t.Errorf("%+v: %v, want an error naming the flag and the tower's layers", l, err)
	}
}
