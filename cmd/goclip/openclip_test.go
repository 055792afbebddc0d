package main

// The open_clip side of convert: an open_clip checkpoint made by open_clip itself
// (clip/testdata/openclip_ref.py, the venv's python) converts to an HF folder whose
// embed output is open_clip's, and back with --format open_clip.

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"goclip/internal/testutil"
	"goclip/torch/serialize"
)

// relErr32 is testutil.RelErr of float32 rows.
func relErr32(got, want []float32) float64 {
	g, w := make([]float64, len(got)), make([]float64, len(want))
	for i, v := range got {
		g[i] = float64(v)
	}
	for i, v := range want {
		w[i] = float64(v)
	}
	return testutil.RelErr(g, w)
}

func TestConvertOpenCLIP(t *testing.T) {
	py := testutil.PythonTorch(t, "open_clip", "transformers", "safetensors")
	fx := testutil.Fixtures(t)
	script, err := filepath.Abs("../../clip/testdata/openclip_ref.py")
	if err != nil {
		t.Fatal(err)
	}
	tmp := t.TempDir()
	srcDir := filepath.Join(tmp, "src")
	if err := os.Mkdir(srcDir, 0o755); err != nil {
		t.Fatal(err)
	}
	// The tokenizer beside the checkpoint goes into the HF folder.
	for _, name := range []string{"vocab.json", "merges.txt"} {
		data, err := os.ReadFile(filepath.Join(fx, "clip-tiny-openai", name))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(srcDir, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	arch := filepath.Join(tmp, "goclip-oc-cli.json")
	if err := os.WriteFile(arch, []byte(`{"embed_dim": 64,
		"vision_cfg": {"image_size": 48, "layers": 2, "width": 128, "patch_size": 16},
		"text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 128, "heads": 2, "layers": 2}}`), 0o644); err != nil {
		t.Fatal(err)
	}
	captions := filepath.Join(tmp, "captions.txt")
	if err := os.WriteFile(captions, []byte("a photo of a cat.\nAn astronaut, smiling in her orange suit!\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	imgs := []string{filepath.Join(fx, "images", "astronaut.png"), filepath.Join(fx, "images", "chelsea.png")}
	weights, ref := filepath.Join(srcDir, "epoch_3.pt"), filepath.Join(tmp, "ref")
	cmd := exec.Command(py, script, "make", "--arch", arch, "--seed", "3", "--weights", weights, "--wrap", "module",
		"--images", strings.Join(imgs, ","), "--texts", captions, "--ref", ref)
	cmd.Dir = t.TempDir()
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("openclip_ref.py: %v\n%s", err, out)
	}

	// open_clip -> HF folder: embed gives open_clip's embeddings of the same images
	// (CLIPImageProcessor's pixels) and captions (open_clip.tokenize's ids).
	hf := filepath.Join(tmp, "hf")
	_, errOut, err := runGoclip(t, "convert", weights, hf)
	if err != nil {
		t.Fatalf("convert: %v\n%s", err, errOut)
	}
	if !strings.Contains(errOut, "architecture inferred from the shapes, hidden_act gelu") {
		t.Errorf("convert says nothing of the inferred architecture: %q", errOut)
	}
	for _, f := range []string{"config.json", "model.safetensors", "vocab.json", "merges.txt", "preprocessor_config.json"} {
		if _, err := os.Stat(filepath.Join(hf, f)); err != nil {
			t.Errorf("HF folder: %v", err)
		}
	}
	// --config with open_clip's model config JSON: the same architecture, said rather
	// than inferred.
	hfCfg := filepath.Join(tmp, "hf-config")
	_, errOut, err = runGoclip(t, "convert", "--config", arch, weights, hfCfg)
	if err != nil || strings.Contains(errOut, "inferred") {
		t.Fatalf("convert --config %s: %v\n%s", arch, err, errOut)
	}
	for _, f := range []string{"config.json", "model.safetensors"} {
		a, errA := os.ReadFile(filepath.Join(hf, f))
		b, errB := os.ReadFile(filepath.Join(hfCfg, f))
		if errA != nil || errB != nil || !bytes.Equal(a, b) {
			t.Errorf("%s with --config open_clip JSON differs from the inferred one's (%v, %v)", f, errA, errB)
		}
	}

	imgOut, txtOut := filepath.Join(tmp, "img.npy"), filepath.Join(tmp, "txt.npy")
	mustGoclip(t, "embed", "--model", hf, "--device", "cpu", "--images", imgs[0], "--images", imgs[1], "--out", imgOut)
	mustGoclip(t, "embed", "--model", hf, "--device", "cpu", "--texts", captions, "--out", txtOut)
	for got, want := range map[string]string{imgOut: "image_embeds.npy", txtOut: "text_embeds.npy"} {
		gs, g := testutil.ReadNpyFloat32(t, got)
		ws, w := testutil.ReadNpyFloat32(t, filepath.Join(ref, want))
		if !slices.Equal(gs, ws) {
			t.Fatalf("%s: shape %v, open_clip's %v", want, gs, ws)
		}
		if e := relErr32(g, w); e > 1e-5 {
			t.Errorf("goclip embed vs open_clip %s: relative error %.3g > 1e-5", want, e)
		} else {
			t.Logf("goclip embed vs open_clip %s: relative error %.3g", want, e)
		}
	}

	// HF folder -> open_clip file: the original tensors bit for bit, without "module.".
	back := filepath.Join(tmp, "back.pt")
	mustGoclip(t, "convert", "--format", "open_clip", hf, back)
	orig, err := serialize.ReadPT(weights)
	if err != nil {
		t.Fatal(err)
	}
	got, err := serialize.ReadPT(back)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(orig) {
		t.Errorf("%d tensors written, open_clip's file has %d", len(got), len(orig))
	}
	for k, o := range orig {
		g, ok := got[strings.TrimPrefix(k, "module.")]
		if !ok || !slices.Equal(g.Shape, o.Shape) || !bytes.Equal(g.Data, o.Data) {
			t.Errorf("%s differs after open_clip -> HF -> open_clip", k)
		}
	}

	// HF folder -> open_clip folder, which open_clip's create_model("local-dir:...")
	// loads (strictly) to the same embeddings; and back to HF with the architecture of
	// its open_clip_config.json, bit for bit.
	ocDir := filepath.Join(tmp, "oc-dir")
	mustGoclip(t, "convert", "--format", "open_clip", hf, ocDir)
	pyOut := filepath.Join(tmp, "py")
	cmd = exec.Command(py, script, "embed", "--arch", "local-dir:"+ocDir, "--ref", ref, "--out", pyOut)
	cmd.Dir = t.TempDir()
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("open_clip local-dir: %v\n%s", err, out)
	}
	for _, name := range []string{"image_embeds.npy", "text_embeds.npy"} {
		_, g := testutil.ReadNpyFloat32(t, filepath.Join(pyOut, name))
		_, w := testutil.ReadNpyFloat32(t, filepath.Join(ref, name))
		if !slices.Equal(g, w) {
			t.Errorf("open_clip's %s of goclip's open_clip folder differs from the original model's", name)
		}
	}
	hf2 := filepath.Join(tmp, "hf2")
	_, errOut, err = runGoclip(t, "convert", ocDir, hf2)
	if err != nil || strings.Contains(errOut, "inferred") {
		t.Fatalf("open_clip folder -> HF: %v\n%s", err, errOut)
	}
	for _, f := range []string{"model.safetensors", "config.json", "vocab.json"} {
		a, errA := os.ReadFile(filepath.Join(hf, f))
		b, errB := os.ReadFile(filepath.Join(hf2, f))
		if errA != nil || errB != nil || !bytes.Equal(a, b) {
			t.Errorf("%s differs after HF -> open_clip folder -> HF (%v, %v)", f, errA, errB)
		}
	}

	// Errors: an unknown format; an open_clip file with a missing, an unexpected and a
	// mis-shaped key names all three.
	if _, _, err := runGoclip(t, "convert", "--format", "timm", hf, filepath.Join(tmp, "x.pt")); err == nil || !strings.Contains(err.Error(), "--format") {
		t.Errorf("--format timm: %v", err)
	}
	delete(got, "ln_final.bias")
	got["visual.attnpool.positional_embedding"] = got["ln_final.weight"]
	got["visual.proj"] = serialize.RawTensor{DType: got["visual.proj"].DType, Shape: []int64{64, 128}, Data: got["visual.proj"].Data}
	broken := filepath.Join(tmp, "broken.pt")
	if err := serialize.WritePT(broken, got); err != nil {
		t.Fatal(err)
	}
	_, _, err = runGoclip(t, "convert", "--config", filepath.Join(hf, "config.json"), broken, filepath.Join(tmp, "broken-hf"))
	if err == nil {
		t.Fatal("a broken open_clip file converted")
	}
	for _, want := range []string{"missing keys: ln_final.bias", "unexpected keys: visual.attnpool.positional_embedding", "visual.proj: expected [128 64], got [64 128]"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("broken open_clip file: error lacks %q: %v", want, err)
		}
	}
	if _, err := os.Stat(filepath.Join(tmp, "broken-hf")); err == nil {
		t.Error("broken-hf written despite the errors")
	}
}
