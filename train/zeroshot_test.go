package train

import (
	"context"
	"encoding/json"
	"math"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"goclip/clip"
	"goclip/embedding"
	"goclip/internal/testutil"
	"goclip/torch"
)

// The built-in templates are open_clip's OPENAI_IMAGENET_TEMPLATES (the list OpenAI
// published), string for string and in order.
func TestImageNetTemplatesMatchOpenCLIP(t *testing.T) {
	py := testutil.PythonTorch(t, "open_clip")
	cmd := exec.Command(py, "-c", `
import json
from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES as T
print(json.dumps([f("{}") for f in T]))
`)
	cmd.Dir = t.TempDir()
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("python: %v", err)
	}
	var want []string
	if err := json.Unmarshal(out, &want); err != nil {
		t.Fatal(err)
	}
	if len(ImageNetTemplates) != 80 || !slices.Equal(ImageNetTemplates, want) {
		t.Fatalf("%d templates differ from open_clip's %d:\n%q\n%q", len(ImageNetTemplates), len(want), ImageNetTemplates, want)
	}
}

// scoreZeroshot on scores made by hand: ranks, ties in class order, top-5 with more
// than 5 classes, confusions.
func TestScoreZeroshot(t *testing.T) {
	classes := []string{"a", "b", "c", "d", "e", "f"}
	scores := []float32{
		0.9, 0.1, 0.1, 0.1, 0.1, 0.1, // a: right
		0.5, 0.5, 0.1, 0.1, 0.1, 0.1, // b: tie with a, which ranks first: wrong, top-5
		0.9, 0.8, 0.7, 0.6, 0.5, 0.1, // f: last of 6: wrong, not top-5
		0.1, 0.2, 0.3, 0.4, 0.5, 0.45, // f again: taken for e, second
		0.2, 0.1, 0.9, 0.1, 0.1, 0.1, // a: taken for c
	}
	labels := []int{0, 1, 5, 5, 0}
	r := scoreZeroshot(scores, labels, classes, 3)
	if r.Top1 != 1.0/5 || r.Top5 != 4.0/5 || r.Images != 5 || r.Classes != 6 || r.Templates != 3 {
		t.Fatalf("%+v", r)
	}
	a, b, f := r.PerClass["a"], r.PerClass["b"], r.PerClass["f"]
	if a.Images != 2 || a.Top1 != 0.5 || a.Top5 != 1 || !slices.Equal(a.Confused, []Confusion{{"c", 1}}) {
		t.Errorf("a: %+v", a)
	}
	if b.Top1 != 0 || b.Top5 != 1 || !slices.Equal(b.Confused, []Confusion{{"a", 1}}) {
		t.Errorf("b: %+v", b)
	}
	if f.Images != 2 || f.Top1 != 0 || f.Top5 != 0.5 || !slices.Equal(f.Confused, []Confusion{{"a", 1}, {"e", 1}}) {
		t.Errorf("f: %+v", f)
	}
	if c := r.PerClass["c"]; c.Images != 0 || c.Top1 != 0 {
		t.Errorf("c (no images): %+v", c)
	}
	if w := r.WorstClasses(3); !slices.Equal(w, []string{"b", "f", "a"}) {
		t.Errorf("worst: %v", w)
	}
}

// Classify's probabilities are the softmax over classes of exp(logit_scale)·cos(image,
// class), computed here in float64 from the embedder's normalised rows, the class rows
// being the normalised means of the normalised prompt rows; an unreadable image is left
// out, or is the error naming it under Strict; no tensor outlives the call.
func TestClassifyMatchesDefinition(t *testing.T) {
	dir := testutil.Fixtures(t, "clip-tiny-openai")
	imgDir := testutil.Fixtures(t, "images")
	pre, err := clip.FindPretrained(dir, true)
	if err != nil {
		t.Fatal(err)
	}
	m, _, err := pre.Load(torch.CPU)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Free()
	m.SetTrain(false)
	var paths []string
	for _, n := range []string{"astronaut.png", "chelsea.png", "truncated.jpg", "rocket.jpg", "coffee.png"} {
		paths = append(paths, filepath.Join(imgDir, n))
	}
	classes := []string{"astronaut", "cat", "rocket", "cup of coffee"}
	templates := []string{"a photo of a {}.", "a drawing of the {}"}
	base := torch.Live()
	emb := embedding.New(m, pre.Tokenizer, embedding.Options{BatchSize: 2})
	got, err := Classify(context.Background(), emb, embedding.ImageItems(paths), classes, templates)
	if err != nil {
		t.Fatal(err)
	}
	if live := torch.Live(); live != base {
		t.Errorf("torch.Live() %d after Classify, %d before", live, base)
	}

	img, kept, _, err := emb.ImageRows(context.Background(), embedding.ImageItems(paths), true)
	if err != nil {
		t.Fatal(err)
	}
	txt, err := emb.TextRows(Prompts(classes, templates), true)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 4 || !slices.Equal(kept, []int{0, 1, 3, 4}) {
		t.Fatalf("%d results, kept %v", len(got), kept)
	}
	var scale float64
	if err := torch.Try(func() { scale = math.Exp(m.LogitScale.Item()) }); err != nil {
		t.Fatal(err)
	}
	p, nt := len(img[0]), len(templates)
	cls := make([][]float64, len(classes))
	for c := range cls {
		cls[c] = make([]float64, p)
		for j := range nt {
			for d := range p {
				cls[c][d] += float64(txt[c*nt+j][d])
			}
		}
		var n2 float64
		for _, v := range cls[c] {
			n2 += v * v
		}
		for d := range cls[c] {
			cls[c][d] /= math.Sqrt(n2)
		}
	}
	for i, r := range got {
		if r.Item != kept[i] || len(r.Probabilities) != len(classes) {
			t.Fatalf("result %d: %+v", i, r)
		}
		logits := make([]float64, len(classes))
		var z float64
		for c := range cls {
			for d := range p {
				logits[c] += scale * float64(img[i][d]) * cls[c][d]
			}
		}
		mx := slices.Max(logits)
		for c := range logits {
			z += math.Exp(logits[c] - mx)
		}
		best := 0
		for c := range logits {
			want := math.Exp(logits[c]-mx) / z
			if d := math.Abs(r.Probabilities[c] - want); d > 1e-5 {
				t.Errorf("image %d class %d: probability %g, definition %g", r.Item, c, r.Probabilities[c], want)
			}
			if logits[c] > logits[best] {
				best = c
			}
		}
		if r.Best != best {
			t.Errorf("image %d: best class %d, definition %d", r.Item, r.Best, best)
		}
		t.Logf("%s: %v", filepath.Base(paths[r.Item]), r.Probabilities)
	}

	strict := embedding.New(m, pre.Tokenizer, embedding.Options{BatchSize: 2, Strict: true})
	if _, err := Classify(context.Background(), strict, embedding.ImageItems(paths), classes, templates); err == nil || !strings.Contains(err.Error(), "truncated.jpg") {
		t.Errorf("Strict with truncated.jpg: %v", err)
	}
	if _, err := Classify(context.Background(), strict, embedding.ImageItems(paths[:1]), classes, nil); err == nil {
		t.Error("no templates accepted")
	}
	if live := torch.Live(); live != base {
		t.Errorf("torch.Live() %d after failed Classify calls, %d before", live, base)
	}
}
