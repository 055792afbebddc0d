package dataset

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestReadImageFolder(t *testing.T) {
	dir := t.TempDir()
	write := func(rel string) {
		p := filepath.Join(dir, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range []string{"b_dog/2.JPG", "b_dog/1.png", "b_dog/notes.txt", "a_cat/sub/3.webp", "a_cat/0.jpeg", ".hidden/4.jpg", "top.jpg"} {
		write(f)
	}
	f, err := ReadImageFolder(dir)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for i, it := range f.Items {
		got = append(got, f.Classes[f.Labels[i]]+":"+it.Name)
	}
	want := []string{"a cat:a_cat/0.jpeg", "a cat:a_cat/sub/3.webp", "b dog:b_dog/1.png", "b dog:b_dog/2.JPG"}
	if !slices.Equal(got, want) || !slices.Equal(f.Folders, []string{"a_cat", "b_dog"}) {
		t.Fatalf("items %v (folders %v), want %v", got, f.Folders, want)
	}

	// classes.txt names the sorted folders.
	os.WriteFile(filepath.Join(dir, ClassesFile), []byte("  kitten \n\npuppy\n"), 0o644)
	if f, err = ReadImageFolder(dir); err != nil || !slices.Equal(f.Classes, []string{"kitten", "puppy"}) {
		t.Fatalf("with classes.txt: %v %v", f, err)
	}
	os.WriteFile(filepath.Join(dir, ClassesFile), []byte("same\nsame\n"), 0o644)
	if _, err = ReadImageFolder(dir); err == nil || !strings.Contains(err.Error(), "same name") {
		t.Errorf("duplicate class names: %v", err)
	}
	os.WriteFile(filepath.Join(dir, ClassesFile), []byte("one\n"), 0o644)
	if _, err = ReadImageFolder(dir); err == nil || !strings.Contains(err.Error(), ClassesFile) {
		t.Errorf("short classes.txt: %v", err)
	}
	os.Remove(filepath.Join(dir, ClassesFile))
	os.Mkdir(filepath.Join(dir, "c_empty"), 0o755)
	if _, err = ReadImageFolder(dir); err == nil || !strings.Contains(err.Error(), "c_empty") {
		t.Errorf("empty class folder: %v", err)
	}
	if _, err = ReadImageFolder(filepath.Join(dir, "a_cat", "sub")); err == nil || !strings.Contains(err.Error(), "no class folders") {
		t.Errorf("folder without class folders: %v", err)
	}
}

// Synthesize's imagefolder layout: one shape per picture, filed under its colour and
// kind, read back by ReadImageFolder with the same classes.
func TestSynthImageFolder(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "classes")
	res, err := Synthesize(dir, SynthOptions{Images: 30, Size: 48, Seed: 3, Layout: LayoutImageFolder})
	if err != nil {
		t.Fatal(err)
	}
	f, err := ReadImageFolder(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(f.Items) != 30 {
		t.Fatalf("%d images read, want 30", len(f.Items))
	}
	byName := map[string]SynthImage{}
	for _, im := range res.Images {
		if len(im.Shapes) != 1 {
			t.Fatalf("%s has %d shapes", im.Name, len(im.Shapes))
		}
		byName[im.Name] = im
	}
	for i, it := range f.Items {
		im := byName[filepath.Base(it.Image)]
		sh := im.Shapes[0]
		if f.Classes[f.Labels[i]] != sh.Colour+" "+sh.Kind {
			t.Errorf("%s in class %q, shows a %s %s", it.Name, f.Classes[f.Labels[i]], sh.Colour, sh.Kind)
		}
		if _, err := ReadImage(it.Image, 0); err != nil {
			t.Error(err)
		}
	}
	for _, overwrite := range []bool{false, true} {
		if _, err := Synthesize(dir, SynthOptions{Images: 3, Size: 48, Layout: LayoutImageFolder, Overwrite: overwrite}); !errors.Is(err, ErrExists) {
			t.Errorf("non-empty folder (overwrite %v): %v", overwrite, err)
		}
	}
	if _, err := Synthesize(t.TempDir(), SynthOptions{Images: 3, Size: 48, Layout: "grid"}); err == nil || !strings.Contains(err.Error(), "grid") {
		t.Errorf("unknown layout: %v", err)
	}
}
