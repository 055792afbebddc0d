package dataset

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// writeFiles writes files (path relative to dir → content) into dir.
func writeFiles(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for name, content := range files {
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// touchImages creates empty image files (Open only checks that they exist).
func touchImages(t *testing.T, dir string, names ...string) {
	t.Helper()
	files := make(map[string]string)
	for _, n := range names {
		files[n] = "jpeg"
	}
	writeFiles(t, dir, files)
}

func itemByName(d *Dataset, name string) *Item {
	for i := range d.Items {
		if d.Items[i].Name == name {
			return &d.Items[i]
		}
	}
	return nil
}

const kaggleCSV = "image_name| comment_number| comment\n" +
	"2199200615.jpg| 0| A dog in a field .\n" + // line 2
	"2199200615.jpg| 1| A brown dog runs .\n" +
	"2199200615.jpg| 2| A dog with a stick .\n" +
	"2199200615.jpg| 3| The dog is playing .\n" +
	"2199200615.jpg| 4 A dog runs across the grass .\n" + // line 6: repaired
	"1000092795.jpg| 0| Two young guys with shaggy hair look at their hands .\n" +
	"1000092795.jpg 1 Two men in green shirts\n" + // line 8: no separator, skipped
	"1000092795.jpg| 7 a number that is not the next one\n" + // line 9: ambiguous, skipped
	"1000092795.jpg| 3|   \n" + // line 10: empty caption
	"1000092795.jpg| 4| caf\xe9 au lait\n" + // line 11: Latin-1, not UTF-8
	"\n" +
	"1000092795.jpg| 5| Two friends enjoy time spent together | outdoors .\n" + // line 13: comment holds a pipe
	"missing.jpg| 0| A picture nobody has .\n" + // line 14: no image file
	"10002456.jpg| x| Several men in hard hats .\r\n" // line 15: comment number is not a number

func TestReadKaggle(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{"results.csv": kaggleCSV})
	touchImages(t, dir, "flickr30k_images/2199200615.jpg", "flickr30k_images/1000092795.jpg", "flickr30k_images/10002456.jpg")
	d, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if d.Format != FormatKaggle || d.SplitFile != "" {
		t.Errorf("format %q split file %q", d.Format, d.SplitFile)
	}
	if len(d.Items) != 2 || d.Items[0].Name != "2199200615.jpg" || d.Items[1].Name != "1000092795.jpg" {
		t.Fatalf("items %+v", d.Items)
	}
	dog := d.Items[0]
	if len(dog.Captions) != 5 || dog.Captions[4] != "A dog runs across the grass ." || dog.Captions[0] != "A dog in a field ." {
		t.Errorf("repaired captions %q", dog.Captions)
	}
	if want := filepath.Join(dir, "flickr30k_images", "2199200615.jpg"); dog.Image != want {
		t.Errorf("image path %q, want %q", dog.Image, want)
	}
	guys := d.Items[1].Captions
	if len(guys) != 2 || guys[1] != "Two friends enjoy time spent together | outdoors ." {
		t.Errorf("captions %q", guys)
	}
	r := &d.Report
	if r.Repaired() != 1 || r.SkippedFor(Malformed) != 3 || r.SkippedFor(EmptyCaption) != 1 ||
		r.SkippedFor(NonUTF8Caption) != 1 || r.SkippedFor(MissingImage) != 1 {
		t.Errorf("report: %s", r.Summary())
	}
	want := "skipped 5 rows of results.csv: 3 malformed (lines 8, 9, 15), 1 empty caption (line 10), " +
		"1 non-UTF-8 caption (line 11); repaired 1 row (line 6); skipped 1 image: 1 missing image (missing.jpg)"
	if got := r.Summary(); got != want {
		t.Errorf("Summary =\n %q\nwant\n %q", got, want)
	}
}

func TestReadKaggleNestedDownload(t *testing.T) {
	// The Kaggle archive unpacks to flickr30k_images/{results.csv, flickr30k_images/*.jpg}.
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{"flickr30k_images/results.csv": "image_name| comment_number| comment\n1.jpg| 0| A cat .\n2.jpg| 0| A hat .\n"})
	touchImages(t, dir, "flickr30k_images/flickr30k_images/1.jpg", "flickr30k_images/flickr30k_images/2.jpg")
	d, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if len(d.Items) != 2 || d.Report.Skipped() != 0 {
		t.Fatalf("items %+v, %s", d.Items, d.Report.Summary())
	}
	if want := filepath.Join(dir, "flickr30k_images", "flickr30k_images", "2.jpg"); d.Items[1].Image != want {
		t.Errorf("image %q, want %q", d.Items[1].Image, want)
	}
}

func TestReadKaggleErrors(t *testing.T) {
	for _, tc := range []struct{ content, want string }{
		{"image,caption\n1.jpg,a cat\n", "results.csv:1: header is"},
		{"", "results.csv:1: empty file"},
		{"image_name| comment_number| comment\n1.jpg 0 nothing usable\n", "no usable images"},
	} {
		dir := t.TempDir()
		writeFiles(t, dir, map[string]string{"results.csv": tc.content})
		_, err := Open(dir, Options{})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: error %v, want %q", tc.content, err, tc.want)
		}
	}
}

func TestReadKaggleImagesFolder(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{"results.csv": "\ufeffimage_name|comment_number|comment\r\na.jpg|0|x\r\n"})
	touchImages(t, dir, "images/a.jpg")
	d, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if d.Items[0].Image != filepath.Join(dir, "images", "a.jpg") || d.Items[0].Captions[0] != "x" {
		t.Errorf("item %+v", d.Items[0])
	}
}

const karpathyJSON = `{"images": [
 {"filepath": "val2014", "filename": "a.jpg", "split": "test", "sentences": [{"raw": "A cat on a mat."}, {"raw": "A cat."}]},
 {"filepath": "train2014", "filename": "b.jpg", "split": "restval", "sentences": [{"raw": "  "}, {"raw": "A dog."}]},
 {"filepath": "train2014", "filename": "c.jpg", "split": "train", "sentences": [{"raw": "caf` + "\xe9" + `"}, {"raw": "A bird."}, {"tokens": ["no", "raw"]}]},
 {"filepath": "val2014", "filename": "d.jpg", "split": "val", "sentences": [{"raw": "A fish."}]},
 {"filepath": "val2014", "split": "val", "sentences": [{"raw": "No file name."}]},
 {"filepath": "val2014", "filename": "e.jpg", "split": "holdout", "sentences": [{"raw": "Unknown split."}]},
 {"filepath": "val2014", "filename": "f.jpg", "split": "val", "sentences": []},
 {"filepath": "val2014", "filename": "g.jpg", "split": "train", "sentences": [{"raw": "Gone."}]},
 "not an object"
], "dataset": "coco"}`

func TestReadKarpathy(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{"dataset_coco.json": karpathyJSON})
	touchImages(t, dir, "images/val2014/a.jpg", "images/train2014/b.jpg", "images/train2014/c.jpg", "images/val2014/d.jpg")
	d, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if d.Format != FormatKarpathy || d.SplitFile != "dataset_coco.json" {
		t.Errorf("format %q split file %q", d.Format, d.SplitFile)
	}
	var got []string
	for _, it := range d.Items {
		got = append(got, it.Name+":"+string(it.Split)+":"+strings.Join(it.Captions, "/"))
	}
	want := []string{"a.jpg:test:A cat on a mat./A cat.", "b.jpg:train:A dog.", "c.jpg:train:A bird.", "d.jpg:val:A fish."}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("items\n %q\nwant\n %q", got, want)
	}
	if d.Items[0].Image != filepath.Join(dir, "images", "val2014", "a.jpg") {
		t.Errorf("image path %q", d.Items[0].Image)
	}
	r := &d.Report
	if r.SkippedFor(Malformed) != 4 || r.SkippedFor(EmptyCaption) != 1 || r.SkippedFor(NonUTF8Caption) != 1 ||
		r.SkippedFor(NoCaptions) != 1 || r.SkippedFor(MissingImage) != 1 {
		t.Errorf("report: %s", r.Summary())
	}
	for _, s := range []string{"images[4]", "images[5]", "images[8]", "images[2].sentences[2] (c.jpg)", "images[1].sentences[0] (b.jpg)", "missing image (g.jpg)", "no captions (f.jpg)"} {
		if !strings.Contains(r.Summary(), s) {
			t.Errorf("Summary %q does not name %q", r.Summary(), s)
		}
	}
	if d.Captions(All) != 5 || d.Captions(Test) != 2 || len(d.Split(Train)) != 2 || len(d.Split(All)) != 4 {
		t.Errorf("captions %d/%d, train %d", d.Captions(All), d.Captions(Test), len(d.Split(Train)))
	}
}

func TestReadKarpathyErrors(t *testing.T) {
	for _, tc := range []struct{ content, want string }{
		{"{\"images\": [\n{\"filename\": \"a.jpg\",\n\"split\": }]}", "dataset_flickr30k.json:3: invalid character"},
		{`{"annotations": []}`, "not a Karpathy split file"},
		{`{"images": {"filename": "a.jpg"}}`, "dataset_flickr30k.json:1: json: cannot unmarshal"},
	} {
		dir := t.TempDir()
		writeFiles(t, dir, map[string]string{"dataset_flickr30k.json": tc.content})
		_, err := Open(dir, Options{})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: error %v, want %q", tc.content, err, tc.want)
		}
	}
}

func TestReadCSV(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{"captions.csv": "id,image,caption\n" +
		"1,a.png,\"A cat, sitting\"\n" + // line 2
		"2,b.png,A dog\n" +
		"3,a.png,\"A \"\"quoted\"\" cat\nover two lines\"\n" + // lines 4-5
		"4,b.png\n" + // line 6: too few fields
		"5,b.png,\n" + // line 7: empty
		"6,b.png,na\xefve\n" + // line 8: not UTF-8
		"7,../up.png,escape\n" + // line 9: outside the folder
		"8,c.png,Missing\n"})
	touchImages(t, dir, "a.png", "b.png")
	d, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if d.Format != FormatCSV || len(d.Items) != 2 {
		t.Fatalf("format %q items %+v", d.Format, d.Items)
	}
	if c := d.Items[0].Captions; !reflect.DeepEqual(c, []string{"A cat, sitting", "A \"quoted\" cat\nover two lines"}) {
		t.Errorf("captions %q", c)
	}
	want := "skipped 4 rows of captions.csv: 2 malformed (lines 6, 9), 1 empty caption (line 7), 1 non-UTF-8 caption (line 8); skipped 1 image: 1 missing image (c.png)"
	if got := d.Report.Summary(); got != want {
		t.Errorf("Summary =\n %q\nwant\n %q", got, want)
	}
}

func TestReadJSONL(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{"captions.jsonl": `{"image": "x/1.jpg", "caption": "First."}` + "\n" +
		`{"image": "x/2.jpg", "caption": "Second."}` + "\n" +
		`{"image": "x/1.jpg", "caption": "Third, \u00e9t\u00e9."}` + "\n" +
		"\n" +
		`{"image": "x/2.jpg", "caption": 7}` + "\n" + // line 5
		`{"image": "x/2.jpg"}` + "\n" + // line 6
		`not json` + "\n" + // line 7
		`{"image": "x/2.jpg", "caption": ""}` + "\n" + // line 8
		`{"image": "x/2.jpg", "caption": "bad ` + "\xff" + `"}` + "\n"}) // line 9
	touchImages(t, dir, "images/x/1.jpg", "images/x/2.jpg")
	d, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if d.Format != FormatJSONL || len(d.Items) != 2 || !reflect.DeepEqual(d.Items[0].Captions, []string{"First.", "Third, été."}) {
		t.Fatalf("format %q items %+v", d.Format, d.Items)
	}
	want := "skipped 5 rows of captions.jsonl: 3 malformed (lines 5, 6, 7), 1 empty caption (line 8), 1 non-UTF-8 caption (line 9)"
	if got := d.Report.Summary(); got != want {
		t.Errorf("Summary =\n %q\nwant\n %q", got, want)
	}
}

func TestOpenSplitFileWins(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{
		"results.csv": "image_name| comment_number| comment\n1.jpg| 0| one\n2.jpg| 0| two\n3.jpg| 0| three\n4.jpg| 0| four\n",
		"dataset_flickr30k.json": `{"images": [{"filename": "1.jpg", "split": "test", "sentences": []},
			{"filename": "2.jpg", "split": "val", "sentences": [{"raw": ""}]},
			{"filename": "3.jpg", "split": "restval", "sentences": []}]}`,
	})
	touchImages(t, dir, "flickr30k_images/1.jpg", "flickr30k_images/2.jpg", "flickr30k_images/3.jpg", "flickr30k_images/4.jpg")
	d, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	var got []Split
	for _, it := range d.Items {
		got = append(got, it.Split)
	}
	if !reflect.DeepEqual(got, []Split{Test, Val, Train, Train}) || d.SplitFile != "dataset_flickr30k.json" {
		t.Errorf("splits %v from %q", got, d.SplitFile)
	}
	if d.Report.Skipped() != 0 {
		t.Errorf("a split file's captions are not read: %s", d.Report.Summary())
	}
	d, err = Open(dir, Options{IgnoreSplitFile: true, SplitOptions: SplitOptions{ValCount: 2, TestCount: -1}})
	if err != nil {
		t.Fatal(err)
	}
	if d.SplitFile != "" || len(d.Split(Val)) != 2 || len(d.Split(Test)) != 0 || len(d.Split(Train)) != 2 {
		t.Errorf("hash splits: val %d test %d from %q", len(d.Split(Val)), len(d.Split(Test)), d.SplitFile)
	}
}

func TestOpenNoDataset(t *testing.T) {
	dir := t.TempDir()
	touchImages(t, dir, "a.jpg")
	if _, err := Open(dir, Options{}); err == nil || !strings.Contains(err.Error(), "no data set in") {
		t.Errorf("error %v", err)
	}
	if _, err := Open(filepath.Join(dir, "nope"), Options{}); err == nil {
		t.Error("no error for a missing folder")
	}
	writeFiles(t, dir, map[string]string{"captions.csv": "image,caption\na.jpg,x\n"})
	if _, err := Open(dir, Options{Format: "parquet"}); err == nil || !strings.Contains(err.Error(), "unknown data set format") {
		t.Errorf("error %v", err)
	}
	if _, err := Open(dir, Options{Format: FormatJSONL}); err == nil {
		t.Error("no error for a forced format without its file")
	}
}

func TestOpenSkipImageCheck(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{"captions.csv": "image,caption\na.jpg,x\nb.jpg,y\n"})
	d, err := Open(dir, Options{SkipImageCheck: true})
	if err != nil || len(d.Items) != 2 || d.Items[1].Image != filepath.Join(dir, "b.jpg") {
		t.Fatalf("%v %+v", err, d)
	}
}
