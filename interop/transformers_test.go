package interop

import (
	"path/filepath"
	"strings"
	"testing"

	"goclip/clip"
	"goclip/clip/tokenizer"
	"goclip/dataset"
	"goclip/torch"
)

// smallCaptions are two captions for each of fixtureImages: accents, emoji, CJK, runs of
// white space, capitals, punctuation, and one caption longer than the small model's
// 40-token context (cut, the end token kept). They avoid what CLIPTokenizer's
// normaliser does differently from OpenAI's cleaning (HTML entities, Python's white
// space and case rules): TestTokenizerMatchesTransformersAndOpenCLIP covers those.
var smallCaptions = [][]string{
	{"An astronaut in a white suit poses before a flag", "a woman smiling at the camera 👩‍🚀🚀"},
	{"A man with a camera on a tripod, in black and white", "   a photographer   in a    field   "},
	{"A tabby cat looks up from the floor", "Die Katze schläft — le chat est très mignon, 猫"},
	{"A cup of coffee on a saucer, seen from above", "☕ espresso with latte art on a wooden table!!!"},
	{"A logo with a snake and the word scikit image", "LOGO: SCIKIT-IMAGE (Python), version 0.19.3"},
	{"A red motorcycle parked against a white wall", strings.Repeat("a very long caption about a motorcycle that goes on and on ", 4)},
	{"A horse silhouette on a transparent background", "black horse, running; 12345 horses & a dog's tail"},
}

// transformersCase is one model checked against transformers.
type transformersCase struct {
	model    string     // the HF folder transformers wrote
	ref      string     // clipref.py reference's output folder
	images   []string   // the images embedded, in order
	texts    string     // the file of texts embedded
	data     string     // the eval data set (captions.csv and images/)
	items    []evalItem // its images and captions, in order
	backends []string   // the image processor backends of the reference
	eval     evalResult // reference eval with the PIL backend
}

// newTransformersCase writes a model for config with transformers, a data set of the
// fixture images named (with their captions), and transformers' reference outputs.
func newTransformersCase(t *testing.T, config string, images []string, captions [][]string, binDir bool) *transformersCase {
	t.Helper()
	dir := t.TempDir()
	c := &transformersCase{model: filepath.Join(dir, "model"), ref: filepath.Join(dir, "ref"), backends: []string{"pil", "torchvision"}}
	bin := ""
	if binDir {
		bin = filepath.Join(dir, "model-bin")
	}
	makeModel(t, config, c.model, bin, 7)
	data, spec := writeDataset(t, filepath.Join(dir, "data"), images, captions)
	c.data = data
	var texts []string
	for i, name := range images {
		c.images = append(c.images, filepath.Join(data, "images", name))
		c.items = append(c.items, evalItem{Image: c.images[i], Captions: captions[i]})
		texts = append(texts, captions[i]...)
	}
	c.texts = filepath.Join(dir, "texts.txt")
	writeLines(t, c.texts, texts)
	python(t, append(hfModules, "torchvision"), "reference", "--model", c.model, "--backends", strings.Join(c.backends, ","),
		"--images", strings.Join(c.images, ","), "--texts", c.texts, "--eval", spec, "--out", c.ref)
	c.eval = readEval(t, filepath.Join(c.ref, "eval.json"))["pil"]
	return c
}

// check compares goclip's outputs for model (c.model or a copy of its weights) with
// transformers': embed of the images and of the texts, eval's loss and recall, and the
// clip package's logits and loss. It returns goclip's image embeddings.
func (c *transformersCase) check(t *testing.T, model, tag string) []float32 {
	t.Helper()
	tmp := t.TempDir()
	img := goclipEmbed(t, filepath.Join(tmp, "img.npy"), append([]string{"--model", model, "--images"}, strings.Join(c.images, ","))...)
	want, _ := readMatrix(t, filepath.Join(c.ref, "image_embeds_pil.npy"))
	checkClose(t, tag+": goclip embed --images vs get_image_features (CLIPProcessor, PIL backend)", img, want, fp32Tol)

	txt := goclipEmbed(t, filepath.Join(tmp, "txt.npy"), "--model", model, "--texts", c.texts)
	want, _ = readMatrix(t, filepath.Join(c.ref, "text_embeds.npy"))
	checkClose(t, tag+": goclip embed --texts vs get_text_features (CLIPProcessor)", txt, want, fp32Tol)

	got := goclipEval(t, "--model", model, "--data", c.data)
	checkEval(t, tag+": goclip eval", got, c.eval, fp32Tol)

	logits, loss := goclipLogits(t, model, c.items)
	want, _ = readMatrix(t, filepath.Join(c.ref, "logits_per_image_pil.npy"))
	checkClose(t, tag+": clip.Model.Forward vs logits_per_image", logits, want, fp32Tol)
	checkScalar(t, tag+": clip.ContrastiveLoss vs CLIPModel(return_loss=True).loss", loss, c.eval.Loss, fp32Tol)
	return img
}

// goclipLogits loads model with the clip package and computes logits_per_image and the
// loss of items' images paired with their first captions, preprocessed and tokenized by
// goclip.
func goclipLogits(t *testing.T, model string, items []evalItem) (logits []float32, loss float64) {
	t.Helper()
	m, cfg, err := clip.LoadPretrained(model, torch.CPU, torch.Float32)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Free()
	m.SetTrain(false)
	src, err := clip.FindCheckpoint(model)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := tokenizer.Load(src.Tokenizer)
	if err != nil {
		t.Fatal(err)
	}
	size, ctx, n := cfg.Vision.ImageSize, cfg.Text.MaxPositionEmbeddings, int64(len(items))
	var pixels []float32
	var first []string
	for _, it := range items {
		img, err := dataset.ReadImage(it.Image, 0)
		if err != nil {
			t.Fatal(err)
		}
		pixels = append(pixels, dataset.Preprocess(img, int(size))...)
		first = append(first, it.Captions[0])
	}
	ids, _ := tok.Batch(first, int(ctx))
	err = torch.Try(func() {
		scope := torch.NewScope()
		defer scope.Close()
		torch.NoGrad(func() {
			l := m.Forward(torch.FromFloat32(pixels, n, 3, size, size), torch.FromInt64(ids, n, ctx)) // [N, N]
			logits = l.Float32s()
			loss = clip.ContrastiveLoss(l).Item()
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	return logits, loss
}

// TestTransformersSmallModel: a small randomly initialised CLIPModel (every size
// distinct, exact gelu, pooling at the first eos_token_id, a 40-token context; biases,
// LayerNorms and logit_scale drawn too) written by transformers' save_pretrained with
// its CLIPProcessor (tokenizer.json only, as transformers 5 writes it) gives in goclip
// the embeddings, logits, loss and recall that transformers computes with
// CLIPProcessor on the fixture's PNGs (greyscale, RGBA, several shapes, all resized
// and cropped) and captions, within 1e-5 relative. The same weights as
// pytorch_model.bin (torch.save of the state dict: transformers 5.17 ignores
// safe_serialization=False and writes model.safetensors) give the same.
func TestTransformersSmallModel(t *testing.T) {
	c := newTransformersCase(t, "small_config.json", fixtureImages, smallCaptions, true)
	img := c.check(t, c.model, "small")

	// A preprocessing one uint8 level off on a few pixels (5.x's default torchvision
	// CLIPImageProcessor) moves the embeddings by far more than the tolerance.
	tv, _ := readMatrix(t, filepath.Join(c.ref, "image_embeds_torchvision.npy"))
	e := relErr(img, tv)
	t.Logf("goclip vs transformers with the torchvision CLIPImageProcessor: relative error %.3g", e)
	if e <= 10*fp32Tol {
		t.Errorf("goclip's embeddings are within %.3g of those of the torchvision preprocessing: the comparison would not see a one-level preprocessing error", e)
	}

	bin := filepath.Join(filepath.Dir(c.model), "model-bin")
	binImg := goclipEmbed(t, filepath.Join(t.TempDir(), "img.npy"), "--model", bin, "--images", strings.Join(c.images, ","))
	want, _ := readMatrix(t, filepath.Join(c.ref, "image_embeds_pil.npy"))
	checkClose(t, "pytorch_model.bin: goclip embed --images vs get_image_features", binImg, want, fp32Tol)
	binTxt := goclipEmbed(t, filepath.Join(t.TempDir(), "txt.npy"), "--model", bin, "--texts", c.texts)
	want, _ = readMatrix(t, filepath.Join(c.ref, "text_embeds.npy"))
	checkClose(t, "pytorch_model.bin: goclip embed --texts vs get_text_features", binTxt, want, fp32Tol)
}

// TestTransformersViTB16: the same for openai/clip-vit-base-patch16's architecture
// (149,620,737 parameters, config.json written by hand, legacy eos_token_id 2 argmax
// pooling, CLIPImageProcessor() at 224), on two images with one caption each.
func TestTransformersViTB16(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: the ViT-B/16 model takes a minute of CPU to build, write and run")
	}
	c := newTransformersCase(t, "vit_b16_config.json", []string{"chelsea.png", "logo.png"},
		[][]string{{"A tabby cat looks up from the floor 🐈"}, {"a LOGO with a snake   and the words scikit-image"}}, false)
	c.check(t, c.model, "vit-b-16")
}
