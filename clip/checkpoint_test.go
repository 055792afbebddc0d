package clip

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"goclip/internal/testutil"
	"goclip/torch"
	"goclip/torch/serialize"
)

// ckptSmallConfig is a CLIP small enough to build in milliseconds.
func ckptSmallConfig(t *testing.T) Config {
	t.Helper()
	cfg, err := Preset("tiny")
	if err != nil {
		t.Fatal(err)
	}
	cfg.Text.VocabSize, cfg.Text.EOSTokenID, cfg.Text.BOSTokenID = 600, 599, 598
	cfg.Text.HiddenSize, cfg.Text.IntermediateSize, cfg.Text.NumAttentionHeads, cfg.Text.NumHiddenLayers = 32, 64, 2, 1
	cfg.Text.MaxPositionEmbeddings = 16
	cfg.Vision.HiddenSize, cfg.Vision.IntermediateSize, cfg.Vision.NumAttentionHeads, cfg.Vision.NumHiddenLayers = 32, 64, 2, 1
	cfg.Vision.ImageSize, cfg.Vision.PatchSize = 16, 8
	cfg.ProjectionDim = 8
	cfg.Text.ProjectionDim, cfg.Vision.ProjectionDim = 8, 8
	return cfg
}

// ckptNewModel builds a model and frees it when the test ends.
func ckptNewModel(t *testing.T, cfg Config) *Model {
	t.Helper()
	m, err := New(cfg, torch.CPU)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Free)
	return m
}

// ckptSaveSmall writes a random small model as an HF folder and returns the folder, the
// model and its config.
func ckptSaveSmall(t *testing.T) (string, *Model, Config) {
	t.Helper()
	cfg := ckptSmallConfig(t)
	m := ckptNewModel(t, cfg)
	dir := filepath.Join(t.TempDir(), "hf")
	if err := SaveHF(dir, m, cfg, ""); err != nil {
		t.Fatal(err)
	}
	return dir, m, cfg
}

// ckptLoad loads dir with LoadPretrained and frees the model at the end of the test.
func ckptLoad(t *testing.T, dir string) (*Model, Config) {
	t.Helper()
	m, cfg, err := LoadPretrained(dir, torch.CPU, torch.Float32)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Free)
	return m, cfg
}

// ckptSameWeights fails unless a and b hold bit-identical parameters.
func ckptSameWeights(t *testing.T, a, b *Model) {
	t.Helper()
	sa, sb := a.StateDict(), b.StateDict()
	if len(sa) != len(sb) {
		t.Fatalf("%d vs %d parameters", len(sa), len(sb))
	}
	for k, ta := range sa {
		tb, ok := sb[k]
		if !ok {
			t.Fatalf("%s missing", k)
		}
		if ta.DType() != tb.DType() || !slices.Equal(ta.Shape(), tb.Shape()) || !bytes.Equal(ta.Bytes(), tb.Bytes()) {
			t.Fatalf("%s differs", k)
		}
	}
}

func TestParamShapesMatchModel(t *testing.T) {
	for _, cfg := range []Config{ckptSmallConfig(t), mustPreset(t, "tiny")} {
		m := ckptNewModel(t, cfg)
		got := map[string][]int64{}
		for _, p := range ParamShapes(cfg) {
			got[p.Name] = p.Shape
		}
		params := m.NamedParameters()
		if len(got) != len(params) {
			t.Fatalf("ParamShapes lists %d parameters, the model has %d", len(got), len(params))
		}
		var total int64
		for _, p := range params {
			if s, ok := got[p.Name]; !ok || !slices.Equal(s, p.T.Shape()) {
				t.Errorf("%s: ParamShapes %v, model %v", p.Name, s, p.T.Shape())
			}
			total += p.T.Numel()
		}
		if n, err := ParamCount(cfg); err != nil || n != total {
			t.Errorf("ParamCount %d (%v), model %d", n, err, total)
		}
	}
	// openai/clip-vit-base-patch16 as transformers counts it.
	if n, _ := ParamCount(mustPreset(t, "vit-b-16")); n != 149_620_737 {
		t.Errorf("vit-b-16: %d parameters, want 149,620,737", n)
	}
}

func mustPreset(t *testing.T, name string) Config {
	t.Helper()
	cfg, err := Preset(name)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// TestLoadPretrainedFixture loads the reference folder and checks every tensor against
// the file, and that no tensor handle leaks.
func TestLoadPretrainedFixture(t *testing.T) {
	dir := testutil.Fixtures(t, "clip-tiny-openai")
	base := torch.Live()
	m, cfg, err := LoadPretrained(dir, torch.CPU, torch.Float32)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Vision.ImageSize != 32 || cfg.ProjectionDim != 48 {
		t.Errorf("config: image %d projection %d", cfg.Vision.ImageSize, cfg.ProjectionDim)
	}
	raw, _, err := serialize.ReadSafetensors(filepath.Join(dir, SafetensorsFile))
	if err != nil {
		t.Fatal(err)
	}
	sd := m.StateDict()
	for k, r := range raw {
		if strings.HasSuffix(k, ".position_ids") {
			continue
		}
		p, ok := sd[k]
		if !ok {
			t.Fatalf("%s not loaded", k)
		}
		if !bytes.Equal(p.Bytes(), r.Data) {
			t.Errorf("%s differs from the file", k)
		}
	}
	src, err := FindCheckpoint(dir)
	if err != nil {
		t.Fatal(err)
	}
	if src.Tokenizer != dir || src.Kind != "hf" {
		t.Errorf("source %+v", src)
	}
	m.Free()
	if d := torch.Live() - base; d != 0 {
		t.Errorf("%d tensors leaked", d)
	}
}

// TestLoadErrorsTogether: a missing key, an unexpected key and a wrong shape are all
// reported in one error, by name, with the file.
func TestLoadErrorsTogether(t *testing.T) {
	dir, _, _ := ckptSaveSmall(t)
	file := filepath.Join(dir, SafetensorsFile)
	raw, meta, err := serialize.ReadSafetensors(file)
	if err != nil {
		t.Fatal(err)
	}
	delete(raw, "text_projection.weight")
	raw["vision_model.extra.weight"] = raw["logit_scale"]
	ln := raw["vision_model.post_layernorm.weight"]
	ln.Shape, ln.Data = []int64{16}, ln.Data[:16*4]
	raw["vision_model.post_layernorm.weight"] = ln
	raw["text_model.embeddings.position_ids"] = serialize.RawTensor{DType: serialize.I64, Shape: []int64{1, 1}, Data: make([]byte, 8)}
	if err := serialize.WriteSafetensors(file, raw, meta); err != nil {
		t.Fatal(err)
	}
	base := torch.Live()
	_, _, err = LoadPretrained(dir, torch.CPU, torch.Float32)
	if err == nil {
		t.Fatal("loaded a broken state dict")
	}
	msg := err.Error()
	for _, want := range []string{file, "missing", "text_projection.weight", "unexpected", "vision_model.extra.weight",
		"vision_model.post_layernorm.weight", "[32]", "[16]"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error lacks %q: %s", want, msg)
		}
	}
	if strings.Contains(msg, "position_ids") {
		t.Errorf("position_ids reported: %s", msg)
	}
	if d := torch.Live() - base; d != 0 {
		t.Errorf("%d tensors leaked on error", d)
	}
}

func TestLoadTruncatedSafetensors(t *testing.T) {
	dir, _, _ := ckptSaveSmall(t)
	file := filepath.Join(dir, SafetensorsFile)
	st, err := os.Stat(file)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(file, st.Size()-100); err != nil {
		t.Fatal(err)
	}
	_, _, err = LoadPretrained(dir, torch.CPU, torch.Float32)
	if err == nil || !strings.Contains(err.Error(), file) {
		t.Fatalf("want an error naming %s, got %v", file, err)
	}
	t.Log(err)
}

func TestLoadMissingConfig(t *testing.T) {
	dir, _, _ := ckptSaveSmall(t)
	if err := os.Remove(filepath.Join(dir, ConfigFile)); err != nil {
		t.Fatal(err)
	}
	_, _, err := LoadPretrained(dir, torch.CPU, torch.Float32)
	if err == nil || !strings.Contains(err.Error(), dir) || !strings.Contains(err.Error(), ConfigFile) {
		t.Fatalf("want an error naming %s and %s, got %v", dir, ConfigFile, err)
	}
	empty := t.TempDir()
	_, _, err = LoadPretrained(empty, torch.CPU, torch.Float32)
	if err == nil || !strings.Contains(err.Error(), empty) {
		t.Fatalf("want an error naming %s, got %v", empty, err)
	}
}

// TestLoadHalfPrecision: float16 and bfloat16 checkpoints load into a float32 model,
// with the values of the half-precision file.
func TestLoadHalfPrecision(t *testing.T) {
	_, m, cfg := ckptSaveSmall(t)
	for _, dt := range []torch.DType{torch.Float16, torch.BFloat16} {
		dir := filepath.Join(t.TempDir(), dt.String())
		if err := SaveHFAs(dir, m, cfg, "", dt); err != nil {
			t.Fatal(err)
		}
		hdr, _, err := serialize.ReadSafetensorsHeader(filepath.Join(dir, SafetensorsFile))
		if err != nil {
			t.Fatal(err)
		}
		if got := hdr["logit_scale"].DType; got != torch.SerialDType(dt) {
			t.Fatalf("%s file holds %s", dt, got)
		}
		var c map[string]any
		if data, err := os.ReadFile(filepath.Join(dir, ConfigFile)); err != nil || json.Unmarshal(data, &c) != nil || c["torch_dtype"] != dt.String() {
			t.Errorf("config torch_dtype %v, want %s (%v)", c["torch_dtype"], dt, err)
		}
		loaded, _ := ckptLoad(t, dir)
		want := m.StateDict()
		for k, p := range loaded.StateDict() {
			if p.DType() != torch.Float32 {
				t.Fatalf("%s loaded as %s", k, p.DType())
			}
			var rounded *torch.Tensor
			torch.NoGrad(func() { rounded = want[k].To(dt).To(torch.Float32) })
			if !bytes.Equal(p.Bytes(), rounded.Bytes()) {
				t.Fatalf("%s: %s values differ from the file's", k, dt)
			}
			rounded.Free()
		}
	}
}

// TestRoundTripPT: HF folder -> .pt -> HF folder gives identical tensors, and the .pt
// opens with torch.load(weights_only=True) in Python with the safetensors header's keys
// and shapes.
func TestRoundTripPT(t *testing.T) {
	dir := testutil.Fixtures(t, "clip-tiny-openai")
	m, cfg := ckptLoad(t, dir)
	tmp := t.TempDir()
	pt := filepath.Join(tmp, "model.pt")
	if err := SavePT(pt, m); err != nil {
		t.Fatal(err)
	}
	src, err := FindCheckpoint(pt)
	if err != nil {
		t.Fatal(err)
	}
	m2, err := src.Load(cfg, torch.CPU, torch.Float32)
	if err != nil {
		t.Fatal(err)
	}
	defer m2.Free()
	ckptSameWeights(t, m, m2)

	out := filepath.Join(tmp, "hf")
	if err := SaveHF(out, m2, cfg, src.Tokenizer); err != nil {
		t.Fatal(err)
	}
	m3, _ := ckptLoad(t, out)
	ckptSameWeights(t, m, m3)
	a, _, err := serialize.ReadSafetensors(filepath.Join(dir, SafetensorsFile))
	if err != nil {
		t.Fatal(err)
	}
	b, meta, err := serialize.ReadSafetensors(filepath.Join(out, SafetensorsFile))
	if err != nil {
		t.Fatal(err)
	}
	if meta["format"] != "pt" {
		t.Errorf("metadata %v, want format pt", meta)
	}
	for k, ra := range a {
		if strings.HasSuffix(k, ".position_ids") {
			continue
		}
		if rb, ok := b[k]; !ok || !bytes.Equal(ra.Data, rb.Data) || !slices.Equal(ra.Shape, rb.Shape) {
			t.Errorf("%s differs after the round trip", k)
		}
	}

	hdr, _, err := serialize.ReadSafetensorsHeader(filepath.Join(out, SafetensorsFile))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][]int64{}
	for k, info := range hdr {
		want[k] = info.Shape
	}
	got := ckptPythonShapes(t, pt)
	if len(got) != len(want) {
		t.Fatalf("torch.load: %d keys, safetensors %d", len(got), len(want))
	}
	for k, s := range want {
		if g, ok := got[k]; !ok || !slices.Equal(g, s) {
			t.Errorf("torch.load: %s shape %v, safetensors %v", k, g, s)
		}
	}
}

// ckptPythonShapes opens path with torch.load(weights_only=True) in Debian's python3
// (testutil.PythonTorch) and returns each key's shape (float32 checked).
func ckptPythonShapes(t *testing.T, path string) map[string][]int64 {
	t.Helper()
	py := testutil.PythonTorch(t)
	script := `import json, sys, torch
sd = torch.load(sys.argv[1], weights_only=True)
assert all(v.dtype == torch.float32 for v in sd.values()), "not float32"
print(json.dumps({k: list(v.shape) for k, v in sd.items()}))`
	out, err := exec.Command(py, "-c", script, path).CombinedOutput()
	if err != nil {
		t.Fatalf("torch.load(%s, weights_only=True): %v\n%s", path, err, out)
	}
	var shapes map[string][]int64
	if err := json.Unmarshal(out, &shapes); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	return shapes
}

// TestFolderLayouts: sharded safetensors, pytorch_model.bin, a run folder with model/
// and one with only checkpoints/last.pt all load the same weights.
func TestFolderLayouts(t *testing.T) {
	dir, m, cfg := ckptSaveSmall(t)
	raw, _, err := serialize.ReadSafetensors(filepath.Join(dir, SafetensorsFile))
	if err != nil {
		t.Fatal(err)
	}
	writeConfig := func(d string) {
		t.Helper()
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := cfg.Save(filepath.Join(d, ConfigFile)); err != nil {
			t.Fatal(err)
		}
	}

	sharded := filepath.Join(t.TempDir(), "sharded")
	writeConfig(sharded)
	shards := [2]map[string]serialize.RawTensor{{}, {}}
	weightMap := map[string]string{}
	for k, r := range raw {
		i := 0
		if strings.HasPrefix(k, "text_") {
			i = 1
		}
		shards[i][k] = r
		weightMap[k] = []string{"model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"}[i]
	}
	for i, name := range []string{"model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"} {
		if err := serialize.WriteSafetensors(filepath.Join(sharded, name), shards[i], map[string]string{"format": "pt"}); err != nil {
			t.Fatal(err)
		}
	}
	index, _ := json.Marshal(map[string]any{"metadata": map[string]any{"total_size": 0}, "weight_map": weightMap})
	if err := os.WriteFile(filepath.Join(sharded, SafetensorsIndex), index, 0o644); err != nil {
		t.Fatal(err)
	}

	bin := filepath.Join(t.TempDir(), "bin")
	writeConfig(bin)
	if err := SavePT(filepath.Join(bin, PyTorchFile), m); err != nil {
		t.Fatal(err)
	}

	runFinished := filepath.Join(t.TempDir(), "run")
	if err := SaveHF(filepath.Join(runFinished, RunModelDir), m, cfg, ""); err != nil {
		t.Fatal(err)
	}

	runCkpt := filepath.Join(t.TempDir(), "run")
	writeConfig(runCkpt)
	if err := os.MkdirAll(filepath.Join(runCkpt, "checkpoints"), 0o755); err != nil {
		t.Fatal(err)
	}
	model := map[string]any{}
	for k, r := range raw {
		model[k] = r
	}
	if err := serialize.WritePTObject(filepath.Join(runCkpt, RunCheckpointPath), map[string]any{"model": model, "step": int64(3)}); err != nil {
		t.Fatal(err)
	}

	for name, d := range map[string]string{"sharded": sharded, "bin": bin, "run/model": runFinished, "run/last.pt": runCkpt} {
		t.Run(strings.ReplaceAll(name, "/", "_"), func(t *testing.T) {
			loaded, _ := ckptLoad(t, d)
			ckptSameWeights(t, m, loaded)
		})
	}
}

// TestSaveHFReplaces: saving over an existing folder replaces its files and leaves no
// temporary folder behind; tokenizer files are copied.
func TestSaveHFReplaces(t *testing.T) {
	fx := testutil.Fixtures(t, "clip-tiny-openai")
	cfg := ckptSmallConfig(t)
	a, b := ckptNewModel(t, cfg), ckptNewModel(t, cfg)
	parent := t.TempDir()
	dir := filepath.Join(parent, "out")
	if err := SaveHF(dir, a, cfg, fx); err != nil {
		t.Fatal(err)
	}
	if err := SaveHF(dir, b, cfg, fx); err != nil {
		t.Fatal(err)
	}
	loaded, _ := ckptLoad(t, dir)
	ckptSameWeights(t, b, loaded)
	entries, _ := os.ReadDir(parent)
	if len(entries) != 1 {
		t.Errorf("parent holds %d entries, want only out/", len(entries))
	}
	for _, f := range []string{"vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json", PreprocessorFile} {
		if !isFile(filepath.Join(dir, f)) {
			t.Errorf("%s not written", f)
		}
	}
	want, _ := os.ReadFile(filepath.Join(fx, "vocab.json"))
	got, _ := os.ReadFile(filepath.Join(dir, "vocab.json"))
	if !bytes.Equal(want, got) {
		t.Error("vocab.json differs from the source")
	}
}
