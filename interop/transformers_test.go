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
	textList []string   // its lines
	data     string     // the eval data set (captions.csv and images/)
	items    []evalItem // its images and captions, in order
	eval     evalResult // reference eval with the PIL backend
}

// newTransformersCase writes a model for config with transformers (binDir: also as
// pytorch_model.bin), a data set of the fixture images named with their captions, and
// transformers' reference outputs with the image processor backends named.
func newTransformersCase(t *testing.T, config string, images []string, captions [][]string, binDir bool, backends ...string) *transformersCase {
	t.Helper()
	return newTransformersCaseIn(t, t.TempDir(), config, images, captions, binDir, backends...)
}

// newTransformersCaseIn is newTransformersCase in dir.
func newTransformersCaseIn(t *testing.T, dir, config string, images []string, captions [][]string, binDir bool, backends ...string) *transformersCase {
	t.Helper()
	c := &transformersCase{model: filepath.Join(dir, "model"), ref: filepath.Join(dir, "ref")}
	bin := ""
	if binDir {
		bin = filepath.Join(dir, "model-bin")
	}
	makeModel(t, config, c.model, bin, 7)
	data, spec := writeDataset(t, filepath.Join(dir, "data"), images, captions)
	c.data = data
	for i, name := range images {
		c.images = append(c.images, filepath.Join(data, "images", name))
		c.items = append(c.items, evalItem{Image: c.images[i], Captions: captions[i]})
		c.textList = append(c.textList, captions[i]...)
	}
	c.texts = filepath.Join(dir, "texts.txt")
	writeLines(t, c.texts, c.textList)
	python(t, append(hfModules, "torchvision"), "reference", "--model", c.model, "--backends", strings.Join(backends, ","),
		"--images", strings.Join(c.images, ","), "--texts", c.texts, "--eval", spec, "--out", c.ref)
	c.eval = readEval(t, filepath.Join(c.ref, "eval.json"))["pil"]
	return c
}

// check compares goclip's outputs for model (c.model or a copy of its weights) with
// transformers': the image and text embeddings (from goclip embed when embedCLI, else
// from the clip package), goclip eval's loss and recall, and the clip package's logits
// and loss. It returns goclip's image embeddings.
func (c *transformersCase) check(t *testing.T, model, tag string, embedCLI bool) []float32 {
	t.Helper()
	lib := goclipLibrary(t, model, c.images, c.textList, c.items)
	img, txt, how := lib.images, lib.texts, "clip.Model.EncodeImage/EncodeText"
	if embedCLI {
		tmp := t.TempDir()
		img = goclipEmbed(t, filepath.Join(tmp, "img.npy"), "--model", model, "--images", strings.Join(c.images, ","))
		txt = goclipEmbed(t, filepath.Join(tmp, "txt.npy"), "--model", model, "--texts", c.texts)
		how = "goclip embed"
	}
	want, _ := readMatrix(t, filepath.Join(c.ref, "image_embeds_pil.npy"))
	checkClose(t, tag+": "+how+" images vs get_image_features (CLIPProcessor, PIL backend)", img, want, fp32Tol)
	want, _ = readMatrix(t, filepath.Join(c.ref, "text_embeds.npy"))
	checkClose(t, tag+": "+how+" texts vs get_text_features (CLIPProcessor)", txt, want, fp32Tol)

	got := goclipEval(t, "--model", model, "--data", c.data)
	checkEval(t, tag+": goclip eval", got, c.eval, fp32Tol)

	want, _ = readMatrix(t, filepath.Join(c.ref, "logits_per_image_pil.npy"))
	checkClose(t, tag+": clip.Model.Forward vs logits_per_image", lib.logits, want, fp32Tol)
	checkScalar(t, tag+": clip.ContrastiveLoss vs CLIPModel(return_loss=True).loss", lib.loss, c.eval.Loss, fp32Tol)
	return img
}

// libraryOutputs are what goclipLibrary computes.
type libraryOutputs struct {
	images, texts []float32 // projected embeddings [N, P], [M, P]
	logits        []float32 // logits_per_image of the items' first captions [K, K]
	loss          float64
}

// goclipLibrary loads model with the clip package and computes, with goclip's
// preprocessing and tokenizer, the embeddings of images and texts, and
// logits_per_image and the loss of items' images paired with their first captions.
func goclipLibrary(t *testing.T, model string, images, texts []string, items []evalItem) libraryOutputs {
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
	size, ctx := cfg.Vision.ImageSize, cfg.Text.MaxPositionEmbeddings
	pixels := func(paths []string) *torch.Tensor {
		var px []float32
		for _, p := range paths {
			img, err := dataset.ReadImage(p, 0)
			if err != nil {
				t.Fatal(err)
			}
			px = append(px, dataset.Preprocess(img, int(size))...)
		}
		return torch.FromFloat32(px, int64(len(paths)), 3, size, size) // [N, 3, S, S]
	}
	ids := func(texts []string) *torch.Tensor {
		v, _ := tok.Batch(texts, int(ctx))
		return torch.FromInt64(v, int64(len(texts)), ctx) // [M, T]
	}
	var out libraryOutputs
	var itemImages, first []string
	for _, it := range items {
		itemImages = append(itemImages, it.Image)
		first = append(first, it.Captions[0])
	}
	err = torch.Try(func() {
		scope := torch.NewScope()
		defer scope.Close()
		torch.NoGrad(func() {
			out.images = m.EncodeImage(pixels(images)).Float32s() // [N, P]
			out.texts = m.EncodeText(ids(texts)).Float32s()       // [M, P]
			l := m.Forward(pixels(itemImages), ids(first))        // [K, K]
			out.logits = l.Float32s()
			out.loss = clip.ContrastiveLoss(l).Item()
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

var small shared[*transformersCase]

// smallCase is the small model's case (the fixture images and smallCaptions, PIL and
// torchvision references, a pytorch_model.bin copy), made once for the package's tests.
func smallCase(t *testing.T) *transformersCase {
	t.Helper()
	return small.get(t, "the small transformers model", func(dir string) *transformersCase {
		return newTransformersCaseIn(t, dir, "small_config.json", fixtureImages, smallCaptions, true, "pil", "torchvision")
	})
}

var smallRun shared[string]

// smallFinetune is a goclip fine-tune of smallCase's model (see finetune), run once for
// the package's tests.
func smallFinetune(t *testing.T) string {
	t.Helper()
	c := smallCase(t)
	return smallRun.get(t, "the fine-tune of the small model", func(dir string) string {
		return finetune(t, c.model, filepath.Join(dir, "run"))
	})
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
	c := smallCase(t)
	img := c.check(t, c.model, "small", true)

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
// pooling, CLIPImageProcessor() at 224), on two images with one caption each. To keep
// it to seconds of compute, goclip loads it twice: in the clip package (embeddings,
// logits, loss) and in goclip eval; TestTransformersSmallModel runs goclip embed.
func TestTransformersViTB16(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: the ViT-B/16 model takes a minute of CPU to build, write and run")
	}
	c := newTransformersCase(t, "vit_b16_config.json", []string{"chelsea.png", "logo.png"},
		[][]string{{"A tabby cat looks up from the floor 🐈"}, {"a LOGO with a snake   and the words scikit-image"}}, false, "pil")
	c.check(t, c.model, "vit-b-16", false)
}
