package interop

import (
	"encoding/json"
	"image"
	"image/png"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"goclip/dataset"
	"goclip/internal/testutil"
)

// exportCaptions are the texts embedded on both sides of the export tests.
var exportCaptions = []string{
	"A dog runs across the grass .",
	"Zwei Hunde spielen im Schnee ❄️",
	"an   empty street at night,   lit by neon signs",
	strings.Repeat("a bowl of fruit on a wooden table ", 12),
}

// finetune runs a short LoRA fine-tune of base (3 steps, a learning rate high enough
// to move the weights) on a small synthetic data set, and returns the run folder.
func finetune(t *testing.T, base, out string) string {
	t.Helper()
	data := filepath.Join(filepath.Dir(out), "synth-"+filepath.Base(out))
	goclip(t, "synth", "--out", data, "--images", "24", "--size", "48", "--seed", "3")
	goclip(t, "finetune", "--model", base, "--data", data, "--out", out, "--device", "cpu", "--precision", "fp32",
		"--batch-size", "8", "--max-steps", "3", "--warmup", "0", "--lr", "2e-2", "--schedule", "constant",
		"--lora-r", "4", "--lora-alpha", "12", "--lora-dropout", "0.1", "--lora-targets", "q_proj,k_proj,v_proj,fc1",
		"--workers", "1", "--log-every", "1", "--seed", "5")
	for _, f := range []string{"model/config.json", "model/model.safetensors", "model.pt", "adapter/adapter_config.json", "adapter/adapter_model.safetensors"} {
		if _, err := os.Stat(filepath.Join(out, f)); err != nil {
			t.Fatalf("the fine-tune wrote no %s: %v", f, err)
		}
	}
	return out
}

// exactSizeImages writes PNG crops of the fixture images at exactly size x size, which
// every CLIPImageProcessor backend leaves unresized (only rescaled and normalised).
func exactSizeImages(t *testing.T, dir string, size int) []string {
	t.Helper()
	fx := testutil.Fixtures(t, "images")
	var out []string
	for _, name := range []string{"astronaut.png", "chelsea.png", "coffee.png"} {
		img, err := dataset.ReadImage(filepath.Join(fx, name), 0)
		if err != nil {
			t.Fatal(err)
		}
		m := image.NewNRGBA(image.Rect(0, 0, size, size))
		for y := 0; y < size; y++ {
			for x := 0; x < size; x++ {
				p := img.Pix[((y+40)*img.W+x+60)*3:]
				i := m.PixOffset(x, y)
				m.Pix[i], m.Pix[i+1], m.Pix[i+2], m.Pix[i+3] = p[0], p[1], p[2], 255
			}
		}
		p := filepath.Join(dir, "exact-"+name)
		f, err := os.Create(p)
		if err != nil {
			t.Fatal(err)
		}
		if err := png.Encode(f, m); err != nil {
			t.Fatal(err)
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
		out = append(out, p)
	}
	return out
}

// readInfo reads clipref.py reference's info.json.
func readInfo(t *testing.T, dir string) map[string]any {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(dir, "info.json"))
	if err != nil {
		t.Fatal(err)
	}
	var info map[string]any
	if err := json.Unmarshal(raw, &info); err != nil {
		t.Fatal(err)
	}
	return info
}

// TestExportedModelLoadsInTransformers: the model/ folder and model.pt of a goclip
// fine-tune load in transformers and give goclip's embeddings within 1e-5 relative:
//   - CLIPModel.from_pretrained(RUN/model) and CLIPProcessor.from_pretrained(RUN/model)
//     (tokenizer and image processor from the files goclip wrote): the default
//     processor (transformers 5's torchvision CLIPImageProcessor) on images at the
//     model's size, the PIL one (backend="pil") on images it resizes, and texts;
//   - torch.load(RUN/model.pt) with PyTorch 2's defaults (weights_only=True) into
//     CLIPModel(config).load_state_dict(strict=True).
//
// Two bases: the fixture's (vocab.json and merges.txt, for which goclip writes the
// tokenizer_config.json, special_tokens_map.json and preprocessor_config.json) and a
// folder written by transformers 5 (tokenizer.json only, copied).
func TestExportedModelLoadsInTransformers(t *testing.T) {
	bases := map[string]string{"fixture": testutil.Fixtures(t, "clip-tiny-openai"), "transformers": ""}
	fx := testutil.Fixtures(t, "images")
	var resized []string
	for _, n := range fixtureImages[:4] {
		resized = append(resized, filepath.Join(fx, n))
	}
	for name, base := range bases {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			var run string
			if base == "" { // the small model transformers wrote
				base, run = smallCase(t).model, smallFinetune(t)
			} else {
				run = finetune(t, base, filepath.Join(dir, "run"))
			}
			model := filepath.Join(run, "model")
			cfg := readConfigSize(t, model)
			exact := exactSizeImages(t, dir, cfg)
			texts := filepath.Join(dir, "texts.txt")
			writeLines(t, texts, exportCaptions)

			ref := filepath.Join(dir, "ref")
			python(t, append(hfModules, "torchvision"), "reference", "--model", model, "--backends", "torchvision,pil",
				"--images", strings.Join(append(exact, resized...), ","), "--texts", texts, "--out", ref)
			info := readInfo(t, ref)
			t.Logf("CLIPProcessor.from_pretrained(RUN/model): image processors %v", info["image_processors"])
			refPT := filepath.Join(dir, "ref-pt")
			python(t, hfModules, "reference", "--model", model, "--state-dict", filepath.Join(run, "model.pt"),
				"--images", strings.Join(resized, ","), "--texts", texts, "--out", refPT)
			t.Logf("torch.load(model.pt): %v", readInfo(t, refPT))

			n := len(exact)
			gotExact := goclipEmbed(t, filepath.Join(dir, "exact.npy"), "--model", run, "--images", strings.Join(exact, ","))
			gotResized := goclipEmbed(t, filepath.Join(dir, "resized.npy"), "--model", run, "--images", strings.Join(resized, ","))
			gotText := goclipEmbed(t, filepath.Join(dir, "text.npy"), "--model", run, "--texts", texts)
			tv, shape := readMatrix(t, filepath.Join(ref, "image_embeds_torchvision.npy"))
			pil, _ := readMatrix(t, filepath.Join(ref, "image_embeds_pil.npy"))
			p := shape[1]
			checkClose(t, "exact-size images, default CLIPProcessor (torchvision)", gotExact, tv[:n*p], fp32Tol)
			checkClose(t, "resized images, CLIPProcessor backend=pil", gotResized, pil[n*p:], fp32Tol)
			t.Logf("resized images, default torchvision CLIPProcessor: relative error %.3g (its resize is up to one uint8 level off PIL's)",
				relErr(gotResized, tv[n*p:]))
			want, _ := readMatrix(t, filepath.Join(ref, "text_embeds.npy"))
			checkClose(t, "texts, CLIPProcessor's tokenizer from goclip's files", gotText, want, fp32Tol)

			want, _ = readMatrix(t, filepath.Join(refPT, "image_embeds_pil.npy"))
			checkClose(t, "model.pt via torch.load + load_state_dict(strict=True): images", gotResized, want, fp32Tol)
			want, _ = readMatrix(t, filepath.Join(refPT, "text_embeds.npy"))
			checkClose(t, "model.pt via torch.load + load_state_dict(strict=True): texts", gotText, want, fp32Tol)

			// The fine-tune moved the model, so these comparisons see the merged weights.
			baseImg := goclipEmbed(t, filepath.Join(dir, "base.npy"), "--model", base, "--images", strings.Join(resized, ","))
			if e := relErr(gotResized, baseImg); e < 1e-3 {
				t.Errorf("the fine-tuned model's embeddings are within %.3g of the base's: the run did not change the weights", e)
			} else {
				t.Logf("fine-tuned vs base embeddings: relative difference %.3g", e)
			}
		})
	}
}

// readConfigSize is the vision_config.image_size of model's config.json.
func readConfigSize(t *testing.T, model string) int {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(model, "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	var cfg struct {
		Vision struct {
			ImageSize int `json:"image_size"`
		} `json:"vision_config"`
	}
	if err := json.Unmarshal(raw, &cfg); err != nil || cfg.Vision.ImageSize <= 0 {
		t.Fatalf("%s/config.json: image size %d, %v", model, cfg.Vision.ImageSize, err)
	}
	return cfg.Vision.ImageSize
}
