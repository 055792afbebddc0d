package embedding

import (
	"context"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"goclip/clip"
	"goclip/dataset"
	"goclip/internal/testutil"
	"goclip/torch"
)

// fixture loads the tiny OpenAI CLIP fixture (in evaluation mode) with its inputs.
func fixture(t *testing.T) (m *clip.Model, pre *clip.Pretrained, dir string, images, captions []string) {
	t.Helper()
	dir = testutil.Fixtures(t, "clip-tiny-openai")
	var inputs struct {
		Images   []string `json:"images"`
		Captions []string `json:"captions"`
	}
	data, err := os.ReadFile(filepath.Join(dir, "inputs.json"))
	if err == nil {
		err = json.Unmarshal(data, &inputs)
	}
	if err != nil {
		t.Fatalf("inputs.json: %v", err)
	}
	pre, err = clip.FindPretrained(dir, true)
	if err != nil {
		t.Fatal(err)
	}
	m, _, err = pre.Load(torch.CPU)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Free)
	m.SetTrain(false)
	imgDir := testutil.Fixtures(t, "images")
	for _, name := range inputs.Images {
		images = append(images, filepath.Join(imgDir, name))
	}
	return m, pre, dir, images, inputs.Captions
}

// Images gives transformers' get_image_features of the fixture images (the reference
// embeddings image_embeds.npy), in input order, whatever the batch size; an unreadable
// image in the middle is left out (kept, Skipped and the report say which) or, under
// Strict, is the error naming it; no tensor outlives ImageRows.
func TestImagesMatchTransformers(t *testing.T) {
	m, pre, dir, images, _ := fixture(t)
	shape, ref := testutil.ReadNpyFloat32(t, filepath.Join(dir, "image_embeds.npy"))
	p := shape[1]
	bad := filepath.Join(testutil.Fixtures(t, "images"), "truncated.jpg")
	paths := slices.Insert(slices.Clone(images), 3, bad) // the bad image is input 3
	base := torch.Live()

	var first [][]float32
	for _, batch := range []int{1, 3, 64} {
		var rep dataset.Report
		e := New(m, pre.Tokenizer, Options{BatchSize: batch, Workers: 2, Report: &rep})
		rows, kept, skipped, err := e.ImageRows(context.Background(), ImageItems(paths), false)
		if err != nil {
			t.Fatalf("batch %d: %v", batch, err)
		}
		wantKept := []int{0, 1, 2, 4, 5, 6, 7, 8}
		if !slices.Equal(kept, wantKept) {
			t.Fatalf("batch %d: kept %v, want %v", batch, kept, wantKept)
		}
		if len(skipped) != 1 || !strings.Contains(skipped[0].Error(), "truncated.jpg") || rep.Skipped() != 1 {
			t.Fatalf("batch %d: skipped %v, report %q", batch, skipped, rep.Summary())
		}
		if len(rows) != len(images) || len(rows[0]) != p {
			t.Fatalf("batch %d: %d rows of %d", batch, len(rows), len(rows[0]))
		}
		for i, row := range rows {
			// The JPEG differs from PIL's decode by a level or so on a few pixels.
			if d := testutil.MaxAbsDiff(row, ref[i*p:(i+1)*p]); d > 2e-3 {
				t.Errorf("batch %d, image %s: max |diff| %g from image_embeds.npy", batch, images[i], d)
			}
		}
		if first == nil {
			first = rows
		} else {
			for i := range rows {
				if d := testutil.MaxAbsDiff(rows[i], first[i]); d > 1e-5 {
					t.Errorf("batch %d, image %d: differs from batch 1 by %g", batch, i, d)
				}
			}
		}
	}
	if live := torch.Live(); live != base {
		t.Errorf("torch.Live() %d after ImageRows, %d before", live, base)
	}

	e := New(m, nil, Options{BatchSize: 4, Strict: true})
	if _, _, _, err := e.ImageRows(context.Background(), ImageItems(paths), false); err == nil || !strings.Contains(err.Error(), "truncated.jpg") {
		t.Errorf("Strict with truncated.jpg: %v", err)
	}
	if live := torch.Live(); live != base {
		t.Errorf("torch.Live() %d after a failed ImageRows, %d before", live, base)
	}

	// Normalised rows have unit norm and the direction of the unnormalised ones.
	rows, _, _, err := e.ImageRows(context.Background(), ImageItems(images[:2]), true)
	if err != nil {
		t.Fatal(err)
	}
	for i, row := range rows {
		var n2, dot, f2 float64
		for k := range row {
			n2 += float64(row[k]) * float64(row[k])
			dot += float64(row[k]) * float64(first[i][k])
			f2 += float64(first[i][k]) * float64(first[i][k])
		}
		if math.Abs(n2-1) > 1e-5 || math.Abs(dot/math.Sqrt(f2)-1) > 1e-5 {
			t.Errorf("normalised row %d: norm² %g, cosine with the unnormalised row %g", i, n2, dot/math.Sqrt(f2))
		}
	}
}

// Texts gives transformers' get_text_features of the fixture captions
// (text_embeds.npy) whatever the batch size, and needs a tokenizer.
func TestTextsMatchTransformers(t *testing.T) {
	m, pre, dir, _, captions := fixture(t)
	shape, ref := testutil.ReadNpyFloat32(t, filepath.Join(dir, "text_embeds.npy"))
	p := shape[1]
	base := torch.Live()
	for _, batch := range []int{1, 5, 256} {
		rows, err := New(m, pre.Tokenizer, Options{BatchSize: batch}).TextRows(captions, false)
		if err != nil {
			t.Fatal(err)
		}
		if len(rows) != shape[0] {
			t.Fatalf("batch %d: %d rows, want %d", batch, len(rows), shape[0])
		}
		want := make([]float64, 0, len(ref))
		got := make([]float64, 0, len(ref))
		for i, row := range rows {
			for k := range p {
				got = append(got, float64(row[k]))
				want = append(want, float64(ref[i*p+k]))
			}
		}
		if e := testutil.RelErr(got, want); e > 1e-5 {
			t.Errorf("batch %d: relative error %.3g from text_embeds.npy", batch, e)
		}
	}
	if live := torch.Live(); live != base {
		t.Errorf("torch.Live() %d after TextRows, %d before", live, base)
	}
	if _, err := New(m, nil, Options{}).TextRows(captions, false); err == nil {
		t.Error("Texts without a tokenizer succeeded")
	}
}

// ExpandImagePaths keeps files in the order given and replaces a folder by its images
// in name order; a missing path is an error naming it.
func TestExpandImagePaths(t *testing.T) {
	dir := t.TempDir()
	for _, n := range []string{"b.png", "a.JPG", "c.txt", "d.jpeg"} {
		if err := os.WriteFile(filepath.Join(dir, n), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Mkdir(filepath.Join(dir, "sub.png"), 0o755); err != nil {
		t.Fatal(err)
	}
	one := filepath.Join(dir, "d.jpeg")
	got, err := ExpandImagePaths([]string{one, dir})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{one, filepath.Join(dir, "a.JPG"), filepath.Join(dir, "b.png"), one}
	if !slices.Equal(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
	missing := filepath.Join(dir, "nope.png")
	if _, err := ExpandImagePaths([]string{missing}); err == nil || !strings.Contains(err.Error(), missing) {
		t.Errorf("missing path: %v", err)
	}
	if _, err := ExpandImagePaths([]string{filepath.Join(dir, "sub.png")}); err == nil || !strings.Contains(err.Error(), "no .jpg") {
		t.Errorf("folder without images: %v", err)
	}
}
