package clip

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"goclip/internal/tensortest"
	"goclip/internal/testutil"
	"goclip/torch"
	"goclip/torch/serialize"
)

// openCLIPTolerance is the relative error (max |goclip - open_clip| / max |open_clip|)
// allowed between goclip's and open_clip's embeddings of the same inputs in float32.
const openCLIPTolerance = 1e-5

// TestOpenCLIPTable: the table maps every HF parameter exactly once, and open_clip's
// state dict has as many values as HF's.
func TestOpenCLIPTable(t *testing.T) {
	for _, name := range []string{"tiny", "vit-b-16", "vit-l-14"} {
		cfg, err := Preset(name)
		if err != nil {
			t.Fatal(err)
		}
		seen := map[string]int{}
		for _, r := range openCLIPRules(cfg) {
			for _, k := range r.hf {
				seen[k]++
			}
		}
		for _, p := range ParamShapes(cfg) {
			if seen[p.Name] != 1 {
				t.Errorf("%s: %s mapped %d times", name, p.Name, seen[p.Name])
			}
			delete(seen, p.Name)
		}
		if len(seen) > 0 {
			t.Errorf("%s: the table names HF keys the model lacks: %v", name, seen)
		}
		var n int64
		for _, p := range OpenCLIPShapes(cfg) {
			n += p.Numel()
		}
		if hf, err := ParamCount(cfg); err != nil || n != hf {
			t.Errorf("%s: open_clip layout holds %d values, HF %d (%v)", name, n, hf, err)
		}
	}
}

// configJSON is cfg as config.json text.
func configJSON(t *testing.T, cfg Config) string {
	t.Helper()
	b, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// shapesOf is a ParamShape list as a map.
func shapesOf(ps []ParamShape) map[string][]int64 {
	m := map[string][]int64{}
	for _, p := range ps {
		m[p.Name] = p.Shape
	}
	return m
}

// TestInferOpenCLIPConfig: the architecture read back from the open_clip shapes of
// vit-b-16 is vit-b-16's, with GELU; what cannot be inferred is named.
func TestInferOpenCLIPConfig(t *testing.T) {
	want, _ := Preset("vit-b-16")
	got, err := InferOpenCLIPConfig(shapesOf(OpenCLIPShapes(want)))
	if err != nil {
		t.Fatal(err)
	}
	want.Text.HiddenAct, want.Vision.HiddenAct = "gelu", "gelu"
	if g, w := configJSON(t, got), configJSON(t, want); g != w {
		t.Errorf("inferred\n %s\nwant\n %s", g, w)
	}

	shapes := shapesOf(OpenCLIPShapes(want))
	delete(shapes, "visual.conv1.weight")
	delete(shapes, "token_embedding.weight")
	_, err = InferOpenCLIPConfig(shapes)
	if !errors.Is(err, ErrArchitectureUnknown) || !strings.Contains(err.Error(), "2 missing keys: token_embedding.weight, visual.conv1.weight") {
		t.Errorf("missing keys: %v", err)
	}
	tiny, _ := Preset("tiny") // width 128 with 4 heads: not width/64
	tiny.Vision.HiddenSize, tiny.Vision.NumAttentionHeads = 96, 2
	_, err = InferOpenCLIPConfig(shapesOf(OpenCLIPShapes(tiny)))
	if !errors.Is(err, ErrArchitectureUnknown) || !strings.Contains(err.Error(), "vision width 96 is not a multiple of 64") {
		t.Errorf("width 96: %v", err)
	}
}

// TestOpenCLIPRoundTripInMemory: HF -> open_clip -> HF gives every parameter bit for
// bit, and frees what it made.
func TestOpenCLIPRoundTripInMemory(t *testing.T) {
	cfg, _ := Preset("tiny")
	cfg.Vision.NumHiddenLayers, cfg.Text.NumHiddenLayers = 2, 3
	base := torch.Live()
	a, err := New(cfg, torch.CPU)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Free()
	b, err := New(cfg, torch.CPU)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Free()
	func() {
		s := torch.NewScope()
		defer s.Close()
		oc, release, err := OpenCLIPStateDict(a, torch.Float32)
		if err != nil {
			t.Fatal(err)
		}
		defer release()
		if got, want := len(oc), len(OpenCLIPShapes(cfg)); got != want {
			t.Fatalf("%d open_clip keys, want %d", got, want)
		}
		for _, p := range OpenCLIPShapes(cfg) {
			if !slices.Equal(oc[p.Name].Shape(), p.Shape) {
				t.Errorf("%s: shape %v, want %v", p.Name, oc[p.Name].Shape(), p.Shape)
			}
		}
		hf, err := FromOpenCLIP(oc, cfg)
		if err != nil {
			t.Fatal(err)
		}
		if err := b.LoadStateDict(hf); err != nil {
			t.Fatal(err)
		}
		// in_proj is q, k, v in that order; visual.proj is visual_projection transposed.
		hf0 := a.StateDict()
		in := oc["visual.transformer.resblocks.1.attn.in_proj_weight"] // [3D, D]
		d := cfg.Vision.HiddenSize
		for i, name := range []string{"q_proj", "k_proj", "v_proj"} {
			w := hf0["vision_model.encoder.layers.1.self_attn."+name+".weight"]
			if !slices.Equal(in.Narrow(0, int64(i)*d, d).Float32s(), w.Float32s()) {
				t.Errorf("in_proj_weight part %d is not %s", i, name)
			}
		}
		if !slices.Equal(oc["visual.proj"].T().Contiguous().Float32s(), hf0["visual_projection.weight"].Float32s()) {
			t.Error("visual.proj is not visual_projection.weight transposed")
		}
	}()
	pa, pb := a.NamedParameters(), b.NamedParameters()
	for i := range pa {
		if !bytes.Equal(pa[i].T.Bytes(), pb[i].T.Bytes()) {
			t.Errorf("%s differs after HF -> open_clip -> HF", pa[i].Name)
		}
	}
	if live := torch.Live() - base; live != int64(len(pa)+len(pb)) {
		t.Errorf("%d live tensors, want the two models' %d", live, len(pa)+len(pb))
	}
}

// TestOpenCLIPErrors: a missing, an unexpected and a mis-shaped key are reported
// together, in open_clip's names.
func TestOpenCLIPErrors(t *testing.T) {
	cfg, _ := Preset("tiny")
	m, err := New(cfg, torch.CPU)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Free()
	s := torch.NewScope()
	defer s.Close()
	oc, release, err := OpenCLIPStateDict(m, torch.Float32)
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	delete(oc, "transformer.resblocks.1.mlp.c_fc.bias")
	oc["visual.transformer.resblocks.0.ls_1.gamma"] = torch.Zeros([]int64{128}, torch.Float32, torch.CPU)
	oc["visual.proj"] = oc["visual.proj"].T() // [P, Dv]: HF's orientation
	oc["attn_mask"] = torch.Zeros([]int64{77, 77}, torch.Float32, torch.CPU)
	_, err = FromOpenCLIP(oc, cfg)
	var serr *StateDictError
	if !errors.As(err, &serr) {
		t.Fatalf("want a *StateDictError, got %v", err)
	}
	if !slices.Equal(serr.Missing, []string{"transformer.resblocks.1.mlp.c_fc.bias"}) ||
		!slices.Equal(serr.Unexpected, []string{"visual.transformer.resblocks.0.ls_1.gamma"}) ||
		len(serr.Mismatched) != 1 || serr.Mismatched[0].Key != "visual.proj" ||
		!slices.Equal(serr.Mismatched[0].Expected, []int64{128, 64}) {
		t.Errorf("error: %v", err)
	}
}

// openCLIPPython runs testdata/openclip_ref.py with the venv's python from a temporary
// folder.
func openCLIPPython(t *testing.T, args ...string) {
	t.Helper()
	py := testutil.PythonTorch(t, "open_clip", "transformers", "safetensors")
	script, err := filepath.Abs("testdata/openclip_ref.py")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(py, append([]string{script}, args...)...)
	cmd.Dir = t.TempDir()
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("openclip_ref.py %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// writeOpenCLIPConfig writes an open_clip model config JSON as name.json in dir.
func writeOpenCLIPConfig(t *testing.T, dir, name, body string) string {
	t.Helper()
	p := filepath.Join(dir, name+".json")
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// captionsFile writes the captions the embedding comparisons use.
func captionsFile(t *testing.T, dir string) string {
	t.Helper()
	p := filepath.Join(dir, "captions.txt")
	text := "a photo of a cat.\nAn astronaut, smiling in her orange suit!\na rocket launch at dawn\n"
	if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// images lists fixture images by name.
func images(t *testing.T, names ...string) string {
	t.Helper()
	var ps []string
	for _, n := range names {
		ps = append(ps, testutil.Fixtures(t, "images", n))
	}
	return strings.Join(ps, ",")
}

// checkEmbeddings compares m's embeddings and logits_per_image (exp(logit_scale) times
// the cosine similarities) of ref's pixels.npy and ids.npy with open_clip's
// image_embeds.npy, text_embeds.npy and logits.npy there.
func checkEmbeddings(t *testing.T, what string, m *Model, ref string) {
	t.Helper()
	s := torch.NewScope()
	defer s.Close()
	pixels := tensortest.ReadNpy(t, filepath.Join(ref, "pixels.npy"))
	ids := tensortest.ReadNpy(t, filepath.Join(ref, "ids.npy"))
	var img, txt, logits *torch.Tensor
	if err := torch.Try(func() {
		torch.NoGrad(func() {
			m.SetTrain(false)
			img, txt, logits = m.EncodeImage(pixels), m.EncodeText(ids), m.Forward(pixels, ids)
		})
	}); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		got  *torch.Tensor
	}{{"image_embeds", img}, {"text_embeds", txt}, {"logits", logits}} {
		want := tensortest.ReadNpy(t, filepath.Join(ref, c.name+".npy"))
		if e := relErr(t, c.name, c.got, want); e > openCLIPTolerance {
			t.Errorf("%s %s: relative error %.3g > %g", what, c.name, e, openCLIPTolerance)
		} else {
			t.Logf("%s %s: relative error %.3g", what, c.name, e)
		}
	}
}

// rawWeights reads a weights file's tensors (a {"state_dict": ...} .pt's inner dict),
// "module." prefixes removed.
func rawWeights(t *testing.T, path string) map[string]serialize.RawTensor {
	t.Helper()
	sd := map[string]serialize.RawTensor{}
	if err := readWeights(path, func(name string, raw serialize.RawTensor) error {
		sd[name] = raw
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return StripModulePrefix(sd)
}

// sameWeights fails unless two weight files hold the same keys with bit-identical
// tensors (position_ids buffers aside).
func sameWeights(t *testing.T, what, got, want string) {
	t.Helper()
	g, w := rawWeights(t, got), rawWeights(t, want)
	for k := range w {
		if strings.HasSuffix(k, positionIDsSuffix) {
			delete(w, k)
		}
	}
	if len(g) != len(w) {
		t.Errorf("%s: %d tensors, want %d", what, len(g), len(w))
	}
	for k, wt := range w {
		gt, ok := g[k]
		if !ok {
			t.Errorf("%s: %s missing", what, k)
		} else if gt.DType != wt.DType || !slices.Equal(gt.Shape, wt.Shape) || !bytes.Equal(gt.Data, wt.Data) {
			t.Errorf("%s: %s differs", what, k)
		}
	}
}

// TestOpenCLIPSmall: open_clip's CLIP of a small custom config, written as a bare .pt,
// a DataParallel {"state_dict": {"module.*": ...}} .bin and a .safetensors, loads with
// the architecture inferred from the shapes (GELU, width/64 heads, 3 text layers and 2
// visual ones, MLP ratio 3, 32-token context) and gives open_clip's embeddings; goclip's
// open_clip file loads in open_clip with strict=True and holds the original tensors bit
// for bit; its HF folder converts back to the same HF weights.
func TestOpenCLIPSmall(t *testing.T) {
	dir := t.TempDir()
	arch := writeOpenCLIPConfig(t, dir, "goclip-oc-small", `{"embed_dim": 64,
		"vision_cfg": {"image_size": 48, "layers": 2, "width": 128, "patch_size": 16, "mlp_ratio": 3},
		"text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 128, "heads": 2, "layers": 3}}`)
	ref := filepath.Join(dir, "ref")
	captions := captionsFile(t, dir)
	pics := images(t, "astronaut.png", "chelsea.png", "camera.png")
	cases := []struct{ file, wrap string }{
		{"bare.pt", "bare"}, {"ddp.bin", "module"}, {"open_clip.safetensors", "bare"},
	}
	var files, wraps []string
	for _, c := range cases {
		files, wraps = append(files, filepath.Join(dir, c.file)), append(wraps, c.wrap)
	}
	openCLIPPython(t, "make", "--arch", arch, "--seed", "1", "--weights", strings.Join(files, ","),
		"--wrap", strings.Join(wraps, ","), "--images", pics, "--texts", captions, "--ref", ref)
	for _, c := range cases {
		path := filepath.Join(dir, c.file)
		src, err := FindCheckpoint(path)
		if err != nil {
			t.Fatal(err)
		}
		m, cfg, layout, err := src.LoadAnyLayout(nil, torch.CPU, torch.Float32)
		if err != nil {
			t.Fatalf("%s: %v", c.file, err)
		}
		defer m.Free()
		if layout != LayoutOpenCLIP || cfg.Text.NumHiddenLayers != 3 || cfg.Vision.NumHiddenLayers != 2 ||
			cfg.Vision.ImageSize != 48 || cfg.Text.MaxPositionEmbeddings != 32 || cfg.Vision.IntermediateSize != 384 ||
			cfg.Text.NumAttentionHeads != 2 || cfg.Text.HiddenAct != "gelu" || cfg.ProjectionDim != 64 {
			t.Errorf("%s: layout %s, config %+v", c.file, layout, cfg)
		}
		checkEmbeddings(t, c.file, m, ref)

		// Back to open_clip's layout: strict load in open_clip, the same tensors.
		back := filepath.Join(dir, "back-"+c.file)
		if err := SaveOpenCLIP(back, m, torch.Float32); err != nil {
			t.Fatal(err)
		}
		sameWeights(t, c.file+" -> goclip -> open_clip", back, path)
		if c.wrap == "module" {
			out := filepath.Join(dir, "py")
			openCLIPPython(t, "embed", "--arch", arch, "--weights", back, "--ref", ref, "--out", out)
			for _, name := range []string{"image_embeds.npy", "text_embeds.npy"} {
				_, got := testutil.ReadNpyFloat32(t, filepath.Join(out, name))
				_, want := testutil.ReadNpyFloat32(t, filepath.Join(ref, name))
				if !slices.Equal(got, want) {
					t.Errorf("open_clip's %s of goclip's file differs from the original's", name)
				}
			}
		}

		// HF -> open_clip -> HF, bit for bit.
		hf1, hf2 := filepath.Join(dir, "hf1-"+c.file), filepath.Join(dir, "hf2-"+c.file)
		if err := SaveHF(hf1, m, cfg, ""); err != nil {
			t.Fatal(err)
		}
		src, err = FindCheckpoint(back)
		if err != nil {
			t.Fatal(err)
		}
		m2, _, _, err := src.LoadAnyLayout(&cfg, torch.CPU, torch.Float32)
		if err != nil {
			t.Fatal(err)
		}
		err = SaveHF(hf2, m2, cfg, "")
		m2.Free()
		if err != nil {
			t.Fatal(err)
		}
		sameWeights(t, "HF -> open_clip -> HF", filepath.Join(hf2, SafetensorsFile), filepath.Join(hf1, SafetensorsFile))
	}
}

// TestOpenCLIPFixture: the OpenAI reference fixture (HF keys, quick_gelu, 2 and 4
// heads: not width/64) written in open_clip's layout loads in open_clip's CLIP of the
// same architecture with strict=True and gives the embeddings OpenAI's reference code
// computed; read back with its config.json it is the fixture's HF weights bit for bit.
// A wrong architecture is reported by key.
func TestOpenCLIPFixture(t *testing.T) {
	dir := t.TempDir()
	m := loadTinyOpenAI(t)
	defer m.Free()
	oc := filepath.Join(dir, "openai.pt")
	if err := SaveOpenCLIP(oc, m, torch.Float32); err != nil {
		t.Fatal(err)
	}
	arch := writeOpenCLIPConfig(t, dir, "goclip-oc-fixture", `{"embed_dim": 48, "quick_gelu": true,
		"vision_cfg": {"image_size": 32, "layers": 2, "width": 128, "patch_size": 8, "head_width": 64},
		"text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 4, "layers": 2}}`)
	ref := filepath.Join(dir, "ref")
	if err := os.Mkdir(ref, 0o755); err != nil {
		t.Fatal(err)
	}
	for from, to := range map[string]string{"pixel_values.npy": "pixels.npy", "input_ids.npy": "ids.npy",
		"image_embeds.npy": "image_embeds.npy", "text_embeds.npy": "text_embeds.npy"} {
		if err := os.Symlink(fixture(t, from), filepath.Join(ref, to)); err != nil {
			t.Fatal(err)
		}
	}
	out := filepath.Join(dir, "py")
	openCLIPPython(t, "embed", "--arch", arch, "--weights", oc, "--ref", ref, "--out", out)
	for _, name := range []string{"image_embeds", "text_embeds"} {
		_, got := testutil.ReadNpyFloat32(t, filepath.Join(out, name+".npy"))
		_, want := testutil.ReadNpyFloat32(t, filepath.Join(ref, name+".npy"))
		g, w := make([]float64, len(got)), make([]float64, len(want))
		for i := range got {
			g[i] = float64(got[i])
		}
		for i := range want {
			w[i] = float64(want[i])
		}
		if e := testutil.RelErr(g, w); e > openCLIPTolerance {
			t.Errorf("open_clip's %s of goclip's open_clip file: relative error %.3g > %g", name, e, openCLIPTolerance)
		}
	}

	cfg, err := LoadConfig(fixture(t, "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	src, err := FindCheckpoint(oc)
	if err != nil {
		t.Fatal(err)
	}
	base := torch.Live()
	m2, _, layout, err := src.LoadAnyLayout(&cfg, torch.CPU, torch.Float32)
	if err != nil || layout != LayoutOpenCLIP {
		t.Fatalf("layout %s: %v", layout, err)
	}
	hf := filepath.Join(dir, "hf")
	err = SaveHF(hf, m2, cfg, "")
	m2.Free()
	if err != nil {
		t.Fatal(err)
	}
	sameWeights(t, "fixture -> open_clip -> HF", filepath.Join(hf, SafetensorsFile), fixture(t, "model.safetensors"))

	// A preset of other widths fails, naming the keys in open_clip's names.
	tiny, _ := Preset("tiny")
	_, _, _, err = src.LoadAnyLayout(&tiny, torch.CPU, torch.Float32)
	if err == nil || !strings.Contains(err.Error(), "visual.positional_embedding: expected [65 128], got [17 128]") ||
		!strings.Contains(err.Error(), "text_projection: expected [128 64], got [64 48]") {
		t.Errorf("tiny preset on the fixture: %v", err)
	}
	if live := torch.Live() - base; live != 0 {
		t.Errorf("%d tensors left alive by LoadAnyLayout, SaveHF and Free", live)
	}
}

// TestOpenCLIPViTB16: open_clip.create_model("ViT-B-16", pretrained=None), perturbed,
// as a .safetensors: goclip infers vit-b-16's architecture with GELU (what open_clip's
// ViT-B-16 config uses), gives open_clip's embeddings of two images and three captions,
// and writes the open_clip layout back bit for bit.
func TestOpenCLIPViTB16(t *testing.T) {
	if testing.Short() {
		t.Skip("ViT-B/16 (150M parameters) in -short mode")
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "vit-b-16.safetensors")
	ref := filepath.Join(dir, "ref")
	openCLIPPython(t, "make", "--arch", "ViT-B-16", "--seed", "2", "--weights", path,
		"--images", images(t, "astronaut.png", "coffee.png"), "--texts", captionsFile(t, dir), "--ref", ref)
	src, err := FindCheckpoint(path)
	if err != nil {
		t.Fatal(err)
	}
	m, cfg, _, err := src.LoadAnyLayout(nil, torch.CPU, torch.Float32)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Free()
	want, _ := Preset("vit-b-16")
	want.Text.HiddenAct, want.Vision.HiddenAct = "gelu", "gelu"
	if g, w := configJSON(t, cfg), configJSON(t, want); g != w {
		t.Errorf("inferred\n %s\nwant vit-b-16 with gelu\n %s", g, w)
	}
	checkEmbeddings(t, "ViT-B-16", m, ref)
	back := filepath.Join(dir, "back.safetensors")
	if err := SaveOpenCLIP(back, m, torch.Float32); err != nil {
		t.Fatal(err)
	}
	sameWeights(t, "ViT-B-16 -> goclip -> open_clip", back, path)
}

// openCLIPModelConfigs is the folder of open_clip's built-in model configs in the venv.
func openCLIPModelConfigs(t *testing.T) string {
	t.Helper()
	py := testutil.PythonTorch(t, "open_clip")
	cmd := exec.Command(py, "-c", "import open_clip, os; print(os.path.join(os.path.dirname(open_clip.__file__), 'model_configs'))")
	cmd.Dir = t.TempDir()
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("locating open_clip's model_configs: %v", err)
	}
	return strings.TrimSpace(string(out))
}

// TestParseOpenCLIPConfig: open_clip's own ViT-B-16, ViT-B-16-quickgelu and ViT-L-14
// configs are goclip's vit-b-16 and vit-l-14 presets (with GELU where open_clip's name
// has no -quickgelu); OpenCLIPModelConfig writes a config that reads back the same;
// configs of other architectures are refused, naming every field at fault.
func TestParseOpenCLIPConfig(t *testing.T) {
	dir := openCLIPModelConfigs(t)
	for file, preset := range map[string]string{"ViT-B-16.json": "vit-b-16", "ViT-B-16-quickgelu.json": "vit-b-16", "ViT-L-14.json": "vit-l-14"} {
		got, err := LoadOpenCLIPConfig(filepath.Join(dir, file))
		if err != nil {
			t.Fatal(err)
		}
		want, _ := Preset(preset)
		if !strings.Contains(file, "quickgelu") {
			want.Text.HiddenAct, want.Vision.HiddenAct = "gelu", "gelu"
		}
		if g, w := configJSON(t, got), configJSON(t, want); g != w {
			t.Errorf("%s:\n %s\nwant\n %s", file, g, w)
		}
		if !IsOpenCLIPConfigFile(filepath.Join(dir, file)) {
			t.Errorf("%s not recognised as an open_clip config", file)
		}

		mc, err := OpenCLIPModelConfig(got)
		if err != nil {
			t.Fatal(err)
		}
		data, _ := json.Marshal(map[string]any{"model_cfg": mc})
		back, err := ParseOpenCLIPConfig(data)
		if err != nil {
			t.Fatal(err)
		}
		if g, w := configJSON(t, back), configJSON(t, got); g != w {
			t.Errorf("%s through OpenCLIPModelConfig:\n %s\nwant\n %s", file, g, w)
		}
	}
	if IsOpenCLIPConfigFile(fixture(t, "config.json")) {
		t.Error("an HF config.json taken for an open_clip one")
	}

	for file, want := range map[string][]string{
		"ViT-B-16-SigLIP.json": {"init_logit_bias", "custom_text", "text_cfg.no_causal_mask"},
		"RN50.json":            {"vision_cfg: json"},
		"coca_ViT-B-32.json":   {"multimodal_cfg", "vision_cfg.attentional_pool = true"},
	} {
		_, err := LoadOpenCLIPConfig(filepath.Join(dir, file))
		t.Logf("%s: %v", file, err)
		for _, w := range want {
			if err == nil || !strings.Contains(err.Error(), w) {
				t.Errorf("%s: error lacks %q: %v", file, w, err)
			}
		}
	}
	tiny, _ := Preset("tiny")
	tiny.Text.HiddenAct = "gelu_new"
	tiny.Vision.LayerNormEps = 1e-6
	if _, err := OpenCLIPModelConfig(tiny); err == nil || !strings.Contains(err.Error(), "hidden_act") || !strings.Contains(err.Error(), "layer_norm_eps") {
		t.Errorf("tiny with gelu_new and eps 1e-6: %v", err)
	}
}
