package clip

// The error boundary of clip's IO: a nil or freed tensor handed to a loading, converting
// or saving function comes back as an error naming the key, never as a panic.

import (
	"os"
	"path/filepath"
	"testing"

	"goclip/internal/testutil"
	"goclip/torch"
)

func TestLoadStateDictFreedEntry(t *testing.T) {
	m := ckptNewModel(t, ckptSmallConfig(t))
	base := torch.Live()
	s := torch.NewScope()
	sd := map[string]*torch.Tensor{}
	for _, p := range m.NamedParameters() {
		sd[p.Name] = torch.Zeros(p.T.Shape(), torch.Float32, torch.CPU)
	}
	const key = "text_model.final_layer_norm.weight"
	sd[key].Free()
	before := m.LogitScale.Item()
	err := m.LoadStateDict(sd)
	testutil.WantErrNaming(t, "LoadStateDict with a freed entry", err, key, "freed")
	if v := m.LogitScale.Item(); v != before {
		t.Errorf("a failed load changed logit_scale from %g to %g", before, v)
	}
	s.Close()
	if d := torch.Live() - base; d != 0 {
		t.Errorf("%d tensors leaked", d)
	}
}

func TestFromOpenCLIPBadEntry(t *testing.T) {
	cfg := ckptSmallConfig(t)
	m := ckptNewModel(t, cfg)
	s := torch.NewScope()
	defer s.Close()
	oc, release, err := OpenCLIPStateDict(m, torch.Float32)
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	const key = "visual.transformer.resblocks.0.attn.in_proj_weight"
	if _, ok := oc[key]; !ok {
		t.Fatalf("OpenCLIPStateDict has no %s", key)
	}
	oc[key] = nil
	_, err = FromOpenCLIP(oc, cfg)
	testutil.WantErrNaming(t, "FromOpenCLIP with a nil entry", err, key)

	freed := torch.Zeros([]int64{3}, torch.Float32, torch.CPU)
	freed.Free()
	oc[key] = freed
	_, err = FromOpenCLIP(oc, cfg)
	testutil.WantErrNaming(t, "FromOpenCLIP with a freed entry", err, key, "freed")
}

func TestSaveNilModel(t *testing.T) {
	cfg := ckptSmallConfig(t)
	dir := t.TempDir()
	for _, save := range []struct {
		name string
		path string
		f    func(path string) error
	}{
		{"SaveWeights", filepath.Join(dir, "w.safetensors"), func(p string) error { return SaveWeights(p, nil, torch.Float32) }},
		{"SavePT", filepath.Join(dir, "w.pt"), func(p string) error { return SavePT(p, nil) }},
		{"SaveOpenCLIP", filepath.Join(dir, "oc.pt"), func(p string) error { return SaveOpenCLIP(p, nil, torch.Float32) }},
		{"SaveHF", filepath.Join(dir, "hf"), func(p string) error { return SaveHF(p, nil, cfg, "") }},
		{"SaveOpenCLIPFolder", filepath.Join(dir, "ocf"), func(p string) error { return SaveOpenCLIPFolder(p, nil, torch.Float32, "") }},
	} {
		err := save.f(save.path)
		testutil.WantErrNaming(t, save.name+" of no model", err, save.path, "no model")
		if _, serr := os.Stat(save.path); serr == nil {
			t.Errorf("%s: %s was written despite the error", save.name, save.path)
		}
	}
}

func TestSaveFreedParameter(t *testing.T) {
	cfg := ckptSmallConfig(t)
	m := ckptNewModel(t, cfg)
	m.LogitScale.Free() // the model is broken: saving it must say where
	dir := t.TempDir()
	for _, save := range []struct {
		name string
		path string
		f    func(path string) error
	}{
		{"SaveWeights", filepath.Join(dir, "w.safetensors"), func(p string) error { return SaveWeights(p, m, torch.Float16) }},
		{"SavePT", filepath.Join(dir, "w.pt"), func(p string) error { return SavePT(p, m) }},
		{"SaveOpenCLIP", filepath.Join(dir, "oc.pt"), func(p string) error { return SaveOpenCLIP(p, m, torch.Float32) }},
		{"SaveHF", filepath.Join(dir, "hf"), func(p string) error { return SaveHF(p, m, cfg, "") }},
	} {
		err := save.f(save.path)
		testutil.WantErrNaming(t, save.name+" of a model with a freed parameter", err, save.path, "logit_scale", "freed")
		if _, serr := os.Stat(save.path); serr == nil {
			t.Errorf("%s: %s was written despite the error", save.name, save.path)
		}
	}
	ocf := filepath.Join(dir, "ocf")
	err := SaveOpenCLIPFolder(ocf, m, torch.Float32, "")
	testutil.WantErrNaming(t, "SaveOpenCLIPFolder of a model with a freed parameter", err, ocf, "logit_scale", "freed")
	if _, serr := os.Stat(filepath.Join(ocf, OpenCLIPConfigFile)); serr == nil {
		t.Errorf("SaveOpenCLIPFolder wrote %s despite the error", OpenCLIPConfigFile)
	}
}
