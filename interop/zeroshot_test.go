package interop

import (
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"testing"
)

// zeroshotScores are the fields of goclip zeroshot --json and clipref.py zeroshot
// that are compared.
type zeroshotScores struct {
	Top1     float64 `json:"top1"`
	Top5     float64 `json:"top5"`
	Classes  int     `json:"classes"`
	Images   int     `json:"images"`
	PerClass map[string]struct {
		Images int     `json:"images"`
		Top1   float64 `json:"top1"`
		Top5   float64 `json:"top5"`
	} `json:"per_class"`
	MinGap float64 `json:"min_gap"` // Python's: the smallest |score - true class's score|
}

// TestZeroshotMatchesTransformers: goclip zeroshot --data on an image folder of the
// fixture images (8 classes, 9 images, one image in two classes) gives the top-1, top-5
// and per-class accuracies that transformers' CLIPModel and CLIPProcessor (PIL) give
// with the CLIP paper's prompt ensembling, computed in clipref.py.
func TestZeroshotMatchesTransformers(t *testing.T) {
	c := smallCase(t)
	byName := map[string]string{}
	for _, p := range c.images {
		byName[filepath.Base(p)] = p
	}
	layout := []struct {
		folder, name string
		files        []string
	}{
		{"a", "astronaut", []string{"astronaut.png"}},
		{"b", "camera", []string{"camera.png"}},
		{"c", "cat", []string{"chelsea.png"}},
		{"d", "coffee", []string{"coffee.png"}},
		{"e", "logo", []string{"logo.png"}},
		{"f", "motorcycle", []string{"motorcycle_left.png"}},
		{"g", "horse", []string{"horse.png"}},
		{"h", "animal", []string{"horse.png", "chelsea.png"}},
	}
	dir := filepath.Join(t.TempDir(), "folder")
	var spec struct {
		Classes []string `json:"classes"`
		Images  [][]any  `json:"images"`
	}
	for label, l := range layout {
		spec.Classes = append(spec.Classes, l.name)
		for _, f := range l.files {
			dst := filepath.Join(dir, l.folder, f)
			if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
				t.Fatal(err)
			}
			copyFile(t, dst, byName[f])
			spec.Images = append(spec.Images, []any{dst, label})
		}
	}
	writeLines(t, filepath.Join(dir, "classes.txt"), spec.Classes)
	specFile := filepath.Join(t.TempDir(), "spec.json")
	data, _ := json.Marshal(spec)
	writeFile(t, specFile, string(data))
	templates := filepath.Join(t.TempDir(), "templates.txt")
	writeLines(t, templates, []string{"a photo of a {}.", "a blurry photo of the {}.", "itap of my {}.", "art of the {}."})

	out := filepath.Join(t.TempDir(), "zs.json")
	python(t, hfModules, "zeroshot", "--model", c.model, "--folder", specFile, "--templates", templates, "--out", out)
	var want, got zeroshotScores
	raw, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(raw, &want); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal([]byte(goclip(t, "zeroshot", "--device", "cpu", "--precision", "fp32", "--model", c.model,
		"--data", dir, "--templates", templates, "--json")), &got); err != nil {
		t.Fatal(err)
	}
	t.Logf("transformers: top-1 %.4f top-5 %.4f; smallest score gap to the true class %.3g", want.Top1, want.Top5, want.MinGap)
	const tol = 1e-6 // the Python side averages in float32
	close := func(a, b float64) bool { return math.Abs(a-b) <= tol }
	if got.Images != want.Images || got.Classes != want.Classes || !close(got.Top1, want.Top1) || !close(got.Top5, want.Top5) {
		t.Errorf("goclip %+v\ntransformers %+v", got, want)
	}
	for name, w := range want.PerClass {
		g, ok := got.PerClass[name]
		if !ok || g.Images != w.Images || !close(g.Top1, w.Top1) || !close(g.Top5, w.Top5) {
			t.Errorf("class %q: goclip %+v, transformers %+v", name, g, w)
		}
	}
	if want.Top5 == 1 || want.Top5 == 0 {
		t.Errorf("top-5 %g on this folder: the comparison would not see a ranking error", want.Top5)
	}
}
