package lora

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"goclip/clip"
	"goclip/torch"
	"goclip/torch/serialize"
)

// TestAdapterKnowsItsBase: a saved adapter carries its base's fingerprint; it loads on
// that base, is refused (naming both fingerprints) on another model and on a model
// that holds it merged already, unless forced; an adapter without a fingerprint
// (peft's) loads where its shapes fit, with a warning when its base path cannot vouch.
func TestAdapterKnowsItsBase(t *testing.T) {
	m := tinyModel(t, 6)
	defer m.Free()
	sd := baseCopy(m)
	defer torch.FreeMap(sd)
	cfg := Config{R: 2, Alpha: 4, Targets: qkv, TrainProjections: true}
	want, err := Fingerprint(baseParams(m, cfg)) // all but the modules the adapter trains
	if err != nil {
		t.Fatal(err)
	}
	a := inject(t, m, cfg)
	randomizeB(a)
	// Training the modules to save does not change the base's fingerprint.
	torch.NoGrad(func() { m.LogitScale.Fill(2.5) })
	dir := filepath.Join(t.TempDir(), "adapter")
	if err := a.Save(dir, ""); err != nil {
		t.Fatal(err)
	}
	_, meta, err := serialize.ReadSafetensorsHeader(filepath.Join(dir, WeightsFile))
	if err != nil {
		t.Fatal(err)
	}
	if meta[MetaBaseFingerprint] != want || meta["format"] != "pt" {
		t.Fatalf("adapter metadata %v: want format pt and %s", meta, MetaBaseFingerprint)
	}
	if err := a.Unload(); err != nil {
		t.Fatal(err)
	}
	// The same base (a twin loaded from the same weights) takes it.
	same := twin(t, sd)
	defer same.Free()
	if fp, _ := Fingerprint(baseParams(same, cfg)); fp != want {
		t.Fatalf("a copy of the base has fingerprint %s, the base %s", fp, want)
	}
	b, err := Load(dir, same)
	if err != nil {
		t.Fatalf("the adapter on its own base: %v", err)
	}

	// Another model of the same architecture is refused, naming both fingerprints.
	other := tinyModel(t, 7)
	defer other.Free()
	otherFP, _ := Fingerprint(baseParams(other, cfg))
	_, err = LoadWith(dir, other, LoadOptions{Model: "other-model"})
	if err == nil || !strings.Contains(err.Error(), meta[MetaBaseFingerprint]) || !strings.Contains(err.Error(), otherFP) ||
		!strings.Contains(err.Error(), "other-model") {
		t.Fatalf("the adapter on another base: %v; want an error naming both fingerprints and the model", err)
	}
	var warned []string
	forced, err := LoadWith(dir, other, LoadOptions{Force: true, Warn: func(s string) { warned = append(warned, s) }})
	if err != nil || len(warned) != 1 {
		t.Fatalf("--force: %v, warnings %q", err, warned)
	}
	forced.Unload()

	// Merged into a saved model, which records it: applying it again is refused.
	entry, err := b.MergedEntry(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.MergeAndUnload(); err != nil {
		t.Fatal(err)
	}
	mdir := filepath.Join(t.TempDir(), "merged")
	if err := clip.SaveHF(mdir, same, same.Config, ""); err != nil {
		t.Fatal(err)
	}
	if err := MarkMerged(filepath.Join(mdir, clip.ConfigFile), []MergedAdapter{entry}); err != nil {
		t.Fatal(err)
	}
	if list, err := MergedInto(mdir); err != nil || len(list) != 1 || list[0].Adapter != entry.Adapter || list[0].Base != want {
		t.Fatalf("MergedInto = %+v, %v", list, err)
	}
	if _, _, err := clip.LoadPretrained(mdir, torch.CPU, torch.Float32); err != nil {
		t.Fatalf("a marked config.json no longer loads: %v", err)
	}
	_, err = LoadWith(dir, same, LoadOptions{Model: mdir})
	if err == nil || !strings.Contains(err.Error(), "already merged") {
		t.Fatalf("the adapter on the model it is merged into: %v; want an already-merged error", err)
	}
	// Without the record, the merged weights' fingerprint tells it too.
	if _, err := Load(dir, same); err == nil || !strings.Contains(err.Error(), "fingerprint") {
		t.Fatalf("the adapter on merged weights, no record: %v", err)
	}

	// A peft adapter: no fingerprint. Its base path names the model: silent; another
	// path: a warning, and it loads (the shapes fit).
	peft := filepath.Join(t.TempDir(), "peft")
	if err := os.MkdirAll(peft, 0o755); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(dir, ConfigFile))
	if err != nil {
		t.Fatal(err)
	}
	cfgText := strings.Replace(string(data), `"base_model_name_or_path": null`, `"base_model_name_or_path": "`+mdir+`"`, 1)
	if err := os.WriteFile(filepath.Join(peft, ConfigFile), []byte(cfgText), 0o644); err != nil {
		t.Fatal(err)
	}
	ts, err := torch.LoadTensors(filepath.Join(dir, WeightsFile), torch.CPU)
	if err != nil {
		t.Fatal(err)
	}
	err = torch.SaveSafetensors(filepath.Join(peft, WeightsFile), ts, map[string]string{"format": "pt"})
	torch.FreeMap(ts)
	if err != nil {
		t.Fatal(err)
	}
	fresh := twin(t, sd)
	defer fresh.Free()
	warned = nil
	p, err := LoadWith(peft, fresh, LoadOptions{Model: t.TempDir(), Warn: func(s string) { warned = append(warned, s) }})
	if err != nil || len(warned) != 1 || !strings.Contains(warned[0], "cannot be told") {
		t.Fatalf("peft adapter, other path: %v, warnings %q", err, warned)
	}
	p.Unload()
	warned = nil
	base := filepath.Join(t.TempDir(), "base")
	if err := clip.SaveHF(base, fresh, fresh.Config, ""); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(peft, ConfigFile), []byte(strings.Replace(cfgText, mdir, base, 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	if p, err = LoadWith(peft, fresh, LoadOptions{Model: base, Warn: func(s string) { warned = append(warned, s) }}); err != nil || len(warned) != 0 {
		t.Fatalf("peft adapter on the folder it names: %v, warnings %q", err, warned)
	}
	p.Unload()
}
