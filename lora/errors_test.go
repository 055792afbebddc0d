package lora

// The error boundary of lora: a missing model or a nil or freed tensor handed to an
// exported function comes back as an error naming the model, key, parameter or module at
// fault, never as a panic.

import (
	"strings"
	"testing"

	"goclip/internal/testutil"
	"goclip/nn"
	"goclip/torch"
)

func TestNilModel(t *testing.T) {
	lc := Config{R: 4, Alpha: 8, Targets: qkv}
	_, err := Inject(nil, lc)
	testutil.WantErrNaming(t, "Inject(nil)", err, "no model")

	// A valid adapter folder, loaded onto no model.
	m := tinyModel(t, 1)
	defer m.Free()
	a := inject(t, m, lc)
	dir := t.TempDir()
	if err := a.Save(dir, ""); err != nil {
		t.Fatal(err)
	}
	_, err = Load(dir, nil)
	testutil.WantErrNaming(t, "Load(dir, nil)", err, dir, "no model")
	_, err = LoadAs(dir, nil, lc)
	testutil.WantErrNaming(t, "LoadAs(dir, nil)", err, dir, "no model")
}

func TestLoadStateDictFreedEntry(t *testing.T) {
	m := tinyModel(t, 1)
	defer m.Free()
	a := inject(t, m, Config{R: 4, Alpha: 8, Targets: qkv})
	s := torch.NewScope()
	defer s.Close()
	sd := map[string]*torch.Tensor{}
	for k, w := range a.StateDict() {
		// The adapter name peft may keep in a key: named in the error as given.
		k = strings.Replace(k, ".lora_A.weight", ".lora_A.default.weight", 1)
		sd[k] = torch.Zeros(w.Shape(), torch.Float32, torch.CPU)
	}
	const key = "base_model.model.text_model.encoder.layers.0.self_attn.k_proj.lora_A.default.weight"
	if sd[key] == nil {
		t.Fatalf("no %s among the adapter's keys", key)
	}
	sd[key].Free()
	b := a.Modules()[0].Layer.B
	before := b.Float32s()
	err := a.LoadStateDict(sd)
	testutil.WantErrNaming(t, "LoadStateDict with a freed entry", err, key, "freed")
	for i, v := range b.Float32s() {
		if v != before[i] {
			t.Fatal("a failed load changed lora_B")
		}
	}
}

func TestFreedTensorNamed(t *testing.T) {
	m := tinyModel(t, 1)
	defer m.Free()
	a := inject(t, m, Config{R: 4, Alpha: 8, Targets: qkv})
	mod := a.Modules()[1]
	mod.Layer.B.Free() // a broken adapter: each function must say where
	key := mod.Name + ".lora_B.weight"

	_, _, err := a.Counts()
	testutil.WantErrNaming(t, "Counts", err, key, "freed")
	_, err = a.AdapterFingerprint()
	testutil.WantErrNaming(t, "AdapterFingerprint", err, "base_model.model."+key, "freed")
	_, err = Fingerprint([]nn.Named{{Name: "fine", T: m.LogitScale}, {Name: "broken", T: mod.Layer.B}})
	testutil.WantErrNaming(t, "Fingerprint", err, "broken", "freed")
	_, _, err = a.MergedStateDict()
	testutil.WantErrNaming(t, "MergedStateDict", err, mod.Name, "freed")
	_, err = a.MergedEntry("")
	testutil.WantErrNaming(t, "MergedEntry", err, key, "freed")
	err = a.Merge()
	testutil.WantErrNaming(t, "Merge", err, mod.Name, "freed")
	err = a.Save(t.TempDir(), "")
	testutil.WantErrNaming(t, "Save", err, key, "freed")
}
