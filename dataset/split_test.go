package dataset

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
)

func TestSplitSizes(t *testing.T) {
	for _, tc := range []struct {
		n         int
		o         SplitOptions
		val, test int
	}{
		{0, SplitOptions{}, 0, 0},
		{2, SplitOptions{}, 0, 0},
		{3, SplitOptions{}, 1, 1},
		{10, SplitOptions{}, 1, 1},
		{100, SplitOptions{}, 5, 5},
		{1000, SplitOptions{}, 50, 50},
		{20000, SplitOptions{}, 1000, 1000},
		{31783, SplitOptions{}, 1000, 1000},
		{31783, SplitOptions{ValFraction: 0.1, TestCount: 500}, 3178, 500},
		{1000, SplitOptions{ValCount: 7, TestFraction: 0.2}, 7, 200},
		{1000, SplitOptions{ValCount: -1, TestFraction: -1}, 0, 0},
		{1000, SplitOptions{ValCount: 3, ValFraction: 0.5}, 3, 50},
		{5, SplitOptions{ValFraction: 0.01}, 1, 1},
	} {
		val, test, err := tc.o.SplitSizes(tc.n)
		if err != nil || val != tc.val || test != tc.test {
			t.Errorf("%d images, %+v: val %d test %d (%v), want %d %d", tc.n, tc.o, val, test, err, tc.val, tc.test)
		}
	}
	for _, o := range []SplitOptions{{ValCount: 600, TestCount: 500}, {ValFraction: 1}, {TestFraction: 1.5}} {
		if _, _, err := o.SplitSizes(1000); err == nil {
			t.Errorf("%+v: no error", o)
		}
	}
}

func names(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%d.jpg", 1000000+i)
	}
	return out
}

func TestAssignSplitsDeterministic(t *testing.T) {
	ns := names(2000)
	a := AssignSplits(ns, 100, 150)
	count := map[Split]int{}
	byName := map[string]Split{}
	for i, s := range a {
		count[s]++
		byName[ns[i]] = s
	}
	if count[Val] != 100 || count[Test] != 150 || count[Train] != 1750 {
		t.Errorf("counts %v", count)
	}
	// The order of the names does not matter.
	shuffled := append([]string(nil), ns...)
	rand.New(rand.NewPCG(1, 2)).Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
	for i, s := range AssignSplits(shuffled, 100, 150) {
		if byName[shuffled[i]] != s {
			t.Fatalf("%s: %s after shuffling, %s before", shuffled[i], s, byName[shuffled[i]])
		}
	}
	// Sequential names spread over the test split rather than clustering.
	firstHalf := 0
	for i, s := range a {
		if s == Test && i < 1000 {
			firstHalf++
		}
	}
	if firstHalf < 50 || firstHalf > 100 {
		t.Errorf("%d of 150 test images among the first half of the names", firstHalf)
	}
}

func TestAssignSplitsStable(t *testing.T) {
	ns := names(3000)
	before := AssignSplits(ns, 100, 100)
	// Adding images moves at most one old image across each of the two boundaries.
	added := append(append([]string(nil), ns...), "new1.jpg", "new2.jpg", "new3.jpg")
	after := AssignSplits(added, 100, 100)
	moved := 0
	for i := range ns {
		if before[i] != after[i] {
			moved++
		}
	}
	if moved > 6 {
		t.Errorf("adding 3 images moved %d others", moved)
	}
	// Removing images likewise.
	after = AssignSplits(ns[5:], 100, 100)
	moved = 0
	for i := range ns[5:] {
		if before[i+5] != after[i] {
			moved++
		}
	}
	if moved > 10 {
		t.Errorf("removing 5 images moved %d others", moved)
	}
}

func TestOpenDefaultSplits(t *testing.T) {
	dir := t.TempDir()
	csv := "image,caption\n"
	for i := 0; i < 200; i++ {
		csv += fmt.Sprintf("%d.jpg,caption %d\n%d.jpg,again %d\n", i, i, i, i)
	}
	writeFiles(t, dir, map[string]string{"captions.csv": csv})
	d1, err := Open(dir, Options{SkipImageCheck: true})
	if err != nil {
		t.Fatal(err)
	}
	d2, _ := Open(dir, Options{SkipImageCheck: true})
	for i := range d1.Items {
		if d1.Items[i].Split != d2.Items[i].Split || d1.Items[i].Name != fmt.Sprintf("%d.jpg", i) {
			t.Fatal("splits or order differ between two reads")
		}
	}
	if len(d1.Split(Val)) != 10 || len(d1.Split(Test)) != 10 || len(d1.Split(Train)) != 180 || len(d1.Split(All)) != 200 {
		t.Errorf("split sizes %d %d %d", len(d1.Split(Train)), len(d1.Split(Val)), len(d1.Split(Test)))
	}
	if d1.Captions(Val) != 20 || d1.Captions(All) != 400 {
		t.Errorf("captions %d %d", d1.Captions(Val), d1.Captions(All))
	}
	prev := -1
	for _, it := range d1.Split(Test) {
		var k int
		fmt.Sscanf(it.Name, "%d.jpg", &k)
		if k <= prev {
			t.Errorf("split not in data set order")
		}
		prev = k
	}
	if _, err := Open(dir, Options{SkipImageCheck: true, SplitOptions: SplitOptions{ValCount: 150, TestCount: 100}}); err == nil {
		t.Error("no error for splits larger than the data set")
	}
}

func TestParseSplit(t *testing.T) {
	for _, s := range []string{"train", "val", "test", "all"} {
		if got, err := ParseSplit(s); err != nil || string(got) != s {
			t.Errorf("ParseSplit(%q) = %q, %v", s, got, err)
		}
	}
	if _, err := ParseSplit("restval"); err == nil {
		t.Error("no error for restval")
	}
}

// TestKarpathyTwoSplits: an image that a Karpathy file lists in two splits keeps its
// first split (so it cannot leak between training and evaluation) and is reported,
// both when the file holds the captions and when it only gives the splits.
func TestKarpathyTwoSplits(t *testing.T) {
	karpathy := `{"images": [
		{"filename": "a.jpg", "split": "train", "sentences": [{"raw": "first"}]},
		{"filename": "b.jpg", "split": "val", "sentences": [{"raw": "bee"}]},
		{"filename": "a.jpg", "split": "test", "sentences": [{"raw": "again"}]},
		{"filename": "b.jpg", "split": "val", "sentences": [{"raw": "bee two"}]}]}`
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{"dataset_flickr30k.json": karpathy})
	touchImages(t, dir, "images/a.jpg", "images/b.jpg")
	d, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	a, b := itemByName(d, "a.jpg"), itemByName(d, "b.jpg")
	if a == nil || a.Split != Train || strings.Join(a.Captions, "/") != "first" {
		t.Errorf("a.jpg: %+v, want train with its first listing's caption only", a)
	}
	if b == nil || b.Split != Val || len(b.Captions) != 2 {
		t.Errorf("b.jpg (listed twice in one split): %+v, want val with both captions", b)
	}
	if n := d.Report.SkippedFor(TwoSplits); n != 1 || !strings.Contains(d.Report.Summary(), "images[2] (a.jpg: test, already train)") {
		t.Errorf("report counts %d images in two splits: %s", n, d.Report.Summary())
	}

	// A split file beside another caption file.
	dir = t.TempDir()
	writeFiles(t, dir, map[string]string{
		"results.csv":            "image_name| comment_number| comment\na.jpg| 0| one\nb.jpg| 0| two\n",
		"dataset_flickr30k.json": karpathy,
	})
	touchImages(t, dir, "flickr30k_images/a.jpg", "flickr30k_images/b.jpg")
	d, err = Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if a := itemByName(d, "a.jpg"); a == nil || a.Split != Train {
		t.Errorf("a.jpg: %+v, want train", a)
	}
	if n := d.Report.SkippedFor(TwoSplits); n != 1 {
		t.Errorf("split file: report counts %d images in two splits: %s", n, d.Report.Summary())
	}
}
