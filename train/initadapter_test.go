package train

// InitAdapter (goclip finetune --init-adapter): an adapter folder or a LoRA run folder
// is injected with its saved configuration and weights; conflicting settings and weights
// that do not fit are reported by name.

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"goclip/clip"
	"goclip/lora"
	"goclip/nn"
	"goclip/torch"
)

// initAdapterModel is a small model (seeded: equal weights for equal seeds).
func initAdapterModel(t *testing.T, seed uint64) *clip.Model {
	t.Helper()
	cfg, err := clip.Preset("tiny")
	if err != nil {
		t.Fatal(err)
	}
	cfg.Text.VocabSize, cfg.Text.MaxPositionEmbeddings = 300, 16
	cfg.Text.BOSTokenID, cfg.Text.EOSTokenID, cfg.Text.PadTokenID = 298, 299, 299
	cfg.Vision.ImageSize = 32
	cfg.Vision.HiddenSize, cfg.Text.HiddenSize = 32, 32
	cfg.Vision.IntermediateSize, cfg.Text.IntermediateSize = 64, 64
	cfg.Vision.NumAttentionHeads, cfg.Text.NumAttentionHeads = 2, 2
	cfg.ProjectionDim, cfg.Vision.ProjectionDim, cfg.Text.ProjectionDim = 16, 16, 16
	return newModel(t, cfg, seed)
}

// savedRun writes a LoRA run folder's adapter/ (r 4, alpha 8 on q_proj and v_proj, lora_B
// non-zero) and returns the run folder and the adapter's state dict as float32 values.
func savedRun(t *testing.T) (string, map[string][]float32) {
	t.Helper()
	m := initAdapterModel(t, 3)
	a, err := lora.Inject(m, lora.Config{R: 4, Alpha: 8, Dropout: 0.1, Targets: []string{"q_proj", "v_proj"}})
	if err != nil {
		t.Fatal(err)
	}
	run := t.TempDir()
	want := map[string][]float32{}
	if err := torch.Try(func() {
		for _, mod := range a.Modules() {
			r := torch.Randn(mod.Layer.B.Shape(), torch.Float32, torch.CPU)
			torch.NoGrad(func() { mod.Layer.B.CopyFrom(r) })
			r.Free()
		}
		for k, v := range a.StateDict() {
			want[k] = v.Float32s()
		}
	}); err != nil {
		t.Fatal(err)
	}
	if err := a.Save(filepath.Join(run, AdapterDir), "base"); err != nil {
		t.Fatal(err)
	}
	return run, want
}

func plainModel(t *testing.T, m *clip.Model) {
	t.Helper()
	for _, s := range m.Projections() {
		if _, ok := (*s.Ptr).(*nn.Linear); !ok {
			t.Errorf("%s holds %T, not the base linear layer", s.Name, *s.Ptr)
		}
	}
}

func TestInitAdapterLoadsRunFolder(t *testing.T) {
	run, want := savedRun(t)
	for _, dir := range []string{run, filepath.Join(run, AdapterDir)} {
		m := initAdapterModel(t, 3)
		a, err := InitAdapter(m, dir, LoRASettings{})
		if err != nil {
			t.Fatalf("%s: %v", dir, err)
		}
		c := a.Config
		if c.R != 4 || c.Alpha != 8 || c.Dropout != 0.1 || !slices.Equal(sortedSet(c.Targets), []string{"q_proj", "v_proj"}) {
			t.Errorf("%s: config %+v, want r 4, alpha 8, dropout 0.1, targets q_proj, v_proj", dir, c)
		}
		got := a.StateDict()
		if len(got) != len(want) {
			t.Errorf("%s: %d adapter tensors, saved %d", dir, len(got), len(want))
		}
		for k, w := range want {
			g, ok := got[k]
			if !ok {
				t.Errorf("%s: no %s", dir, k)
				continue
			}
			if !slices.Equal(g.Float32s(), w) {
				t.Errorf("%s: %s differs from the saved tensor", dir, k)
			}
		}
		// Only the adapter trains, as after a fresh injection.
		if n := len(a.Trainable()); n != len(want) {
			t.Errorf("%s: %d trainable tensors, want %d", dir, n, len(want))
		}
		if err := a.Unload(); err != nil {
			t.Fatal(err)
		}
	}
}

func TestInitAdapterSettings(t *testing.T) {
	run, _ := savedRun(t)
	r, alpha, p := 8, 16.0, 0.25
	m := initAdapterModel(t, 3)
	_, err := InitAdapter(m, run, LoRASettings{R: &r, Alpha: &alpha, Targets: []string{"q_proj"}})
	if err == nil {
		t.Fatal("conflicting settings accepted")
	}
	for _, w := range []string{"--lora-r 8", "r 4", "--lora-alpha 16", "lora_alpha 8", "--lora-targets q_proj", "q_proj,v_proj",
		filepath.Join(run, AdapterDir, lora.ConfigFile)} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("the error does not say %q: %v", w, err)
		}
	}
	plainModel(t, m)

	// Agreeing settings (targets in another order) are accepted, and the dropout replaces
	// the saved one.
	r, alpha = 4, 8
	a, err := InitAdapter(m, run, LoRASettings{R: &r, Alpha: &alpha, Dropout: &p, Targets: []string{"v_proj", "q_proj", "q_proj"}})
	if err != nil {
		t.Fatal(err)
	}
	if a.Config.Dropout != p {
		t.Errorf("dropout %g, want %g", a.Config.Dropout, p)
	}
	for _, mod := range a.Modules() {
		if mod.Layer.Dropout != p {
			t.Errorf("%s: dropout %g, want %g", mod.Name, mod.Layer.Dropout, p)
		}
	}
	a.Unload()

	bad := 1.5
	if _, err := InitAdapter(m, run, LoRASettings{Dropout: &bad}); err == nil || !strings.Contains(err.Error(), "--lora-dropout") {
		t.Errorf("dropout 1.5: %v", err)
	}
	plainModel(t, m)
}

// TestInitAdapterReportsBadWeights: a missing and an unknown tensor are named with their
// shapes, and the model is left without an adapter.
func TestInitAdapterReportsBadWeights(t *testing.T) {
	run, _ := savedRun(t)
	dir := filepath.Join(run, AdapterDir)
	path := filepath.Join(dir, lora.WeightsFile)
	sd, err := torch.LoadTensors(path, torch.CPU)
	if err != nil {
		t.Fatal(err)
	}
	const gone = "base_model.model.text_model.encoder.layers.1.self_attn.v_proj.lora_A.weight"
	const extra = "base_model.model.text_model.encoder.layers.1.self_attn.k_proj.lora_A.weight"
	if sd[gone] == nil {
		t.Fatalf("%s holds no %s", path, gone)
	}
	sd[extra] = sd[gone]
	delete(sd, gone)
	if err := torch.SaveSafetensors(path, sd, nil); err != nil {
		t.Fatal(err)
	}
	torch.FreeMap(sd)
	m := initAdapterModel(t, 3)
	_, err = InitAdapter(m, dir, LoRASettings{})
	if err == nil {
		t.Fatal("an adapter with a missing and an unknown tensor loaded")
	}
	for _, w := range []string{path, "1 missing keys: " + gone + " [4 32]", "1 unexpected keys: " + extra + " [4 32]"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("the error does not say %q: %v", w, err)
		}
	}
	plainModel(t, m)
}

func TestAdapterFolderErrors(t *testing.T) {
	dir := t.TempDir()
	if _, err := AdapterFolder(filepath.Join(dir, "nothing")); err == nil || !strings.Contains(err.Error(), "nothing") {
		t.Errorf("missing folder: %v", err)
	}
	if _, err := AdapterFolder(dir); err == nil || !strings.Contains(err.Error(), lora.ConfigFile) {
		t.Errorf("folder without an adapter: %v", err)
	}
	if err := os.WriteFile(filepath.Join(dir, lora.ConfigFile), []byte(`{"peft_type": "LORA", "r": 4, "target_modules": ["q_proj"]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	m := initAdapterModel(t, 3)
	if _, err := InitAdapter(m, dir, LoRASettings{}); err == nil || !strings.Contains(err.Error(), lora.WeightsFile) {
		t.Errorf("adapter without weights: %v", err)
	}
	plainModel(t, m)
}
