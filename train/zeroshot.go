package train

// Zero-shot classification as an evaluation, as in the CLIP paper (section 3.1.4):
// each class's embedding is the mean over prompt templates of the L2-normalised text
// embeddings of the templates filled with the class name, normalised again; an image
// is classified by cosine similarity to the class embeddings.

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"

	"goclip/clip"
	"goclip/clip/tokenizer"
	"goclip/dataset"
	"goclip/embedding"
	"goclip/torch"
)

// ImageNetTemplates are the 80 prompt templates OpenAI published for zero-shot ImageNet
// (the CLIP repository's "Prompt Engineering for ImageNet" notebook), in its order;
// "{}" stands for the class name.
var ImageNetTemplates = []string{
	"a bad photo of a {}.",
	"a photo of many {}.",
	"a sculpture of a {}.",
	"a photo of the hard to see {}.",
	"a low resolution photo of the {}.",
	"a rendering of a {}.",
	"graffiti of a {}.",
	"a bad photo of the {}.",
	"a cropped photo of the {}.",
	"a tattoo of a {}.",
	"the embroidered {}.",
	"a photo of a hard to see {}.",
	"a bright photo of a {}.",
	"a photo of a clean {}.",
	"a photo of a dirty {}.",
	"a dark photo of the {}.",
	"a drawing of a {}.",
	"a photo of my {}.",
	"the plastic {}.",
	"a photo of the cool {}.",
	"a close-up photo of a {}.",
	"a black and white photo of the {}.",
	"a painting of the {}.",
	"a painting of a {}.",
	"a pixelated photo of the {}.",
	"a sculpture of the {}.",
	"a bright photo of the {}.",
	"a cropped photo of a {}.",
	"a plastic {}.",
	"a photo of the dirty {}.",
	"a jpeg corrupted photo of a {}.",
	"a blurry photo of the {}.",
	"a photo of the {}.",
	"a good photo of the {}.",
	"a rendering of the {}.",
	"a {} in a video game.",
	"a photo of one {}.",
	"a doodle of a {}.",
	"a close-up photo of the {}.",
	"a photo of a {}.",
	"the origami {}.",
	"the {} in a video game.",
	"a sketch of a {}.",
	"a doodle of the {}.",
	"a origami {}.",
	"a low resolution photo of a {}.",
	"the toy {}.",
	"a rendition of the {}.",
	"a photo of the clean {}.",
	"a photo of a large {}.",
	"a rendition of a {}.",
	"a photo of a nice {}.",
	"a photo of a weird {}.",
	"a blurry photo of a {}.",
	"a cartoon {}.",
	"art of a {}.",
	"a sketch of the {}.",
	"a embroidered {}.",
	"a pixelated photo of a {}.",
	"itap of the {}.",
	"a jpeg corrupted photo of the {}.",
	"a good photo of a {}.",
	"a plushie {}.",
	"a photo of the nice {}.",
	"a photo of the small {}.",
	"a photo of the weird {}.",
	"the cartoon {}.",
	"art of the {}.",
	"a drawing of the {}.",
	"a photo of the large {}.",
	"a black and white photo of a {}.",
	"the plushie {}.",
	"a dark photo of a {}.",
	"itap of a {}.",
	"graffiti of the {}.",
	"a toy {}.",
	"itap of my {}.",
	"a photo of a cool {}.",
	"a photo of a small {}.",
	"a tattoo of the {}.",
}

// ReadTemplates reads prompt templates from path, one per non-empty line (trimmed);
// each must contain "{}", the class name's place.
func ReadTemplates(path string) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("templates: %w", err)
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for line := 1; sc.Scan(); line++ {
		t := strings.TrimSpace(sc.Text())
		if t == "" {
			continue
		}
		if !strings.Contains(t, "{}") {
			return nil, fmt.Errorf(`%s:%d: template %q has no "{}" for the class name`, path, line, t)
		}
		out = append(out, t)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s holds no templates (one per line, with {} for the class name)", path)
	}
	return out, nil
}

// Prompts fills every template with every class name: class c's prompts are
// out[c*len(templates) : (c+1)*len(templates)], in template order.
func Prompts(classes, templates []string) []string {
	out := make([]string, 0, len(classes)*len(templates))
	for _, c := range classes {
		for _, t := range templates {
			out = append(out, strings.ReplaceAll(t, "{}", c))
		}
	}
	return out
}

// ClassEmbeddings returns the zero-shot classifier [K, P] for classes: row c is the
// mean over templates of the normalised text embeddings of class c's prompts
// (Prompts), normalised. The tensor is made in the current scope. opts.Progress, when
// set, is told the prompts embedded. With opts.ProcessGroup the prompts are shared over
// the ranks as Evaluate shares the captions.
func ClassEmbeddings(m *clip.Model, tok *tokenizer.Tokenizer, classes, templates []string, opts EvalOptions) (*torch.Tensor, error) {
	lo, hi := shareOf(opts.ProcessGroup, len(classes)*len(templates))
	report := progressOf(opts.Progress, hi-lo)
	cls, err := classEmbeddings(opts.embedder(m, tok, report), opts.ProcessGroup, classes, templates)
	if err != nil {
		return nil, fmt.Errorf("class embeddings: %w", err)
	}
	report(-1)
	return cls, nil
}

// classEmbeddings is ClassEmbeddings with emb, in the current scope.
func classEmbeddings(emb *embedding.Embedder, pg *torch.ProcessGroup, classes, templates []string) (cls *torch.Tensor, err error) {
	if len(classes) == 0 || len(templates) == 0 {
		return nil, errors.New("no classes or no templates")
	}
	txt, err := textsOf(emb, Prompts(classes, templates), pg) // [K*T, P]
	if err != nil {
		return nil, err
	}
	k, t := int64(len(classes)), int64(len(templates))
	err = torch.Try(func() {
		cls = clip.Normalized(clip.Normalized(txt).View(k, t, -1).Mean(false, 1)) // [K, P]
	})
	return cls, err
}

// Classified is one image's zero-shot classification (Classify).
type Classified struct {
	Item          int       // the image's index in the items
	Probabilities []float64 // per class, in class order
	Best          int       // the most probable class (the first of equal ones)
}

// Classify classifies the images of items among classes with the classifier of
// ClassEmbeddings over templates, emb's model in evaluation mode (it leaves it so):
// the probabilities are the softmax over classes of the logits (clip.Logits, the
// model's logit scale) of the image and class embeddings, as CLIPModel's
// logits_per_image. Unreadable images are left out, or are an error under emb.Strict.
// It frees every tensor it makes.
func Classify(ctx context.Context, emb *embedding.Embedder, items []dataset.Item, classes, templates []string) ([]Classified, error) {
	m := emb.Model
	m.SetTrain(false)
	scope := torch.NewScope()
	defer scope.Close()
	img, err := emb.Images(ctx, items) // [N, P]
	if err != nil {
		return nil, fmt.Errorf("zero-shot: %w", err)
	}
	cls, err := classEmbeddings(emb, nil, classes, templates) // [K, P]
	if err != nil {
		return nil, fmt.Errorf("zero-shot: %w", err)
	}
	var probs []float64 // [N, K], row-major
	err = torch.Try(func() {
		logits := clip.Logits(clip.Normalized(img.Embeddings), cls, m.LogitScale) // [N, K]
		probs = logits.To(torch.Float64).Softmax(1).Float64s()                    // [N, K]
	})
	if err != nil {
		return nil, fmt.Errorf("zero-shot: %w", err)
	}
	k := len(classes)
	out := make([]Classified, len(img.Kept))
	for i, idx := range img.Kept {
		row := probs[i*k : (i+1)*k : (i+1)*k]
		best := 0
		for j := range row {
			if row[j] > row[best] {
				best = j
			}
		}
		out[i] = Classified{Item: idx, Probabilities: row, Best: best}
	}
	return out, nil
}

// Confusion is how often a class's images were taken for another class.
type Confusion struct {
	Class string `json:"class"`
	Count int    `json:"count"`
}

// ClassScore is one class's zero-shot accuracy.
type ClassScore struct {
	Images int     `json:"images"`
	Top1   float64 `json:"top1"`
	Top5   float64 `json:"top5"`
	// Confused lists the wrong top-1 predictions for the class's images, most
	// frequent first (ties by class name).
	Confused []Confusion `json:"confused_with,omitempty"`
}

// ZeroshotResult is what `goclip zeroshot --data DIR --json` prints. Top1 and Top5
// are fractions of all images; a class is among the top k when fewer than k classes
// score higher than it (ties rank in class order), so with fewer than 5 classes Top5
// is 1.
type ZeroshotResult struct {
	Top1      float64               `json:"top1"`
	Top5      float64               `json:"top5"`
	Classes   int                   `json:"classes"`
	Images    int                   `json:"images"`
	Templates int                   `json:"templates"`
	PerClass  map[string]ClassScore `json:"per_class"`
}

// String is a one-line summary for logs.
func (r ZeroshotResult) String() string {
	return fmt.Sprintf("zero-shot top-1 %.4f  top-5 %.4f  (%d images, %d classes, %d templates)", r.Top1, r.Top5, r.Images, r.Classes, r.Templates)
}

// WorstClasses returns up to n names of classes with images, those of lowest top-1
// accuracy, lowest first (ties by name).
func (r ZeroshotResult) WorstClasses(n int) []string {
	names := make([]string, 0, len(r.PerClass))
	for c, s := range r.PerClass {
		if s.Images > 0 {
			names = append(names, c)
		}
	}
	sort.Slice(names, func(i, j int) bool {
		a, b := r.PerClass[names[i]], r.PerClass[names[j]]
		if a.Top1 != b.Top1 {
			return a.Top1 < b.Top1
		}
		return names[i] < names[j]
	})
	return names[:min(n, len(names))]
}

// Zeroshot classifies the images of folder among its classes with the classifier of
// ClassEmbeddings over templates and reports the accuracy, m in evaluation mode (it
// leaves m so). Unreadable images are left out and recorded in opts.Report. With
// opts.ProcessGroup the images and prompts are shared over the ranks as in Evaluate;
// opts.Progress is told this rank's images and prompts as Evaluate tells its own.
// opts.CacheDir is not used (the folder is not the data set a cache holds).
func Zeroshot(ctx context.Context, m *clip.Model, tok *tokenizer.Tokenizer, folder *dataset.ImageFolder, templates []string, opts EvalOptions) (res ZeroshotResult, err error) {
	if len(folder.Items) == 0 || len(folder.Classes) == 0 {
		return res, errors.New("zero-shot: the image folder holds no images")
	}
	if len(templates) == 0 {
		return res, errors.New("zero-shot: no templates")
	}
	if opts.BatchSize <= 0 {
		opts.BatchSize = DefaultEvalBatch
	}
	opts.CacheDir = "" // the folder is not the data set that a cache holds
	m.SetTrain(false)
	pg := opts.ProcessGroup
	lo, hi := shareOf(pg, len(folder.Items))
	p0, p1 := shareOf(pg, len(folder.Classes)*len(templates))
	report := progressOf(opts.Progress, hi-lo+p1-p0)
	emb := opts.embedder(m, tok, report)
	scope := torch.NewScope()
	defer scope.Close()
	img, kept, err := imagesOf(ctx, emb, folder.Items, pg) // [N, P]
	if err != nil {
		return res, fmt.Errorf("zero-shot: %w", err)
	}
	if len(kept) == 0 {
		return res, fmt.Errorf("zero-shot: no image of %s could be read", folder.Dir)
	}
	cls, err := classEmbeddings(emb, pg, folder.Classes, templates) // [K, P]
	if err != nil {
		return res, fmt.Errorf("zero-shot: %w", err)
	}
	report(-1)
	var scores []float32 // [N, K] cosine similarities, row-major
	err = torch.Try(func() {
		scores = clip.Normalized(img).Matmul(cls.T()).Float32s() // [N, K]
	})
	if err != nil {
		return res, fmt.Errorf("zero-shot: %w", err)
	}
	labels := make([]int, len(kept))
	for i, idx := range kept {
		labels[i] = folder.Labels[idx]
	}
	return scoreZeroshot(scores, labels, folder.Classes, len(templates)), nil
}

// scoreZeroshot computes the accuracies from scores [N, K] (row-major) of N images
// whose true classes are labels.
func scoreZeroshot(scores []float32, labels []int, classes []string, templates int) ZeroshotResult {
	k := len(classes)
	type tally struct {
		n, top1, top5 int
		wrong         map[int]int
	}
	per := make([]tally, k)
	var top1, top5 int
	for i, y := range labels {
		row := scores[i*k : (i+1)*k]
		rank, pred := 0, 0 // classes ranked above y; the first best class
		for j, s := range row {
			if s > row[y] || (s == row[y] && j < y) {
				rank++
			}
			if s > row[pred] {
				pred = j
			}
		}
		t := &per[y]
		t.n++
		if rank < 1 {
			t.top1++
			top1++
		} else {
			if t.wrong == nil {
				t.wrong = map[int]int{}
			}
			t.wrong[pred]++
		}
		if rank < 5 {
			t.top5++
			top5++
		}
	}
	n := len(labels)
	res := ZeroshotResult{
		Top1: float64(top1) / float64(n), Top5: float64(top5) / float64(n),
		Classes: k, Images: n, Templates: templates, PerClass: make(map[string]ClassScore, k),
	}
	for c, t := range per {
		s := ClassScore{Images: t.n}
		if t.n > 0 {
			s.Top1, s.Top5 = float64(t.top1)/float64(t.n), float64(t.top5)/float64(t.n)
		}
		for j, cnt := range t.wrong {
			s.Confused = append(s.Confused, Confusion{Class: classes[j], Count: cnt})
		}
		sort.Slice(s.Confused, func(a, b int) bool {
			if s.Confused[a].Count != s.Confused[b].Count {
				return s.Confused[a].Count > s.Confused[b].Count
			}
			return s.Confused[a].Class < s.Confused[b].Class
		})
		res.PerClass[classes[c]] = s
	}
	return res
}
