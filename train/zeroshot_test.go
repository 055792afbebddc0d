package train

import (
	"encoding/json"
	"os/exec"
	"slices"
	"testing"

	"goclip/internal/testutil"
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
