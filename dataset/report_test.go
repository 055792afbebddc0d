package dataset

import (
	"strings"
	"sync"
	"testing"
)

func TestReportSummary(t *testing.T) {
	var r Report
	if got := r.Summary(); got != "nothing skipped or repaired" {
		t.Errorf("empty Summary = %q", got)
	}
	r.SetSource("results.csv")
	r.AddSkippedLine(Malformed, 17)
	r.AddSkippedLine(EmptyCaption, 22)
	r.AddSkippedLine(Malformed, 40)
	r.AddRepairedLine(9)
	want := "skipped 3 rows of results.csv: 2 malformed (lines 17, 40), 1 empty caption (line 22); repaired 1 row (line 9)"
	if got := r.Summary(); got != want {
		t.Errorf("Summary =\n %q\nwant\n %q", got, want)
	}
	r.AddSkippedImage(MissingImage, "a.jpg")
	r.AddSkippedImage(UnreadableImage, "b.jpg")
	r.AddSkippedImage(UnreadableImage, "c.jpg")
	want += "; skipped 3 images: 1 missing image (a.jpg), 2 unreadable image (b.jpg, c.jpg)"
	if got := r.Summary(); got != want {
		t.Errorf("Summary =\n %q\nwant\n %q", got, want)
	}
	if r.Skipped() != 6 || r.Repaired() != 1 || r.SkippedFor(Malformed) != 2 || r.SkippedFor(OversizedImage) != 0 {
		t.Errorf("counts: skipped %d repaired %d malformed %d", r.Skipped(), r.Repaired(), r.SkippedFor(Malformed))
	}
	if ex := r.Examples(UnreadableImage); len(ex) != 2 || ex[1].Name != "c.jpg" {
		t.Errorf("Examples = %v", ex)
	}
}

func TestReportKeepsFirstExamples(t *testing.T) {
	var r Report
	for i := 1; i <= 12; i++ {
		r.AddSkippedLine(NonUTF8Caption, i*10)
	}
	r.AddSkipped("odd reason", Place{Line: 3, Name: "x.jpg"})
	got := r.Summary()
	want := "skipped 13 rows: 12 non-UTF-8 caption (lines 10, 20, 30, 40, 50, ... 7 more), 1 odd reason (line 3 (x.jpg))"
	if got != want {
		t.Errorf("Summary =\n %q\nwant\n %q", got, want)
	}
	if n := len(r.Examples(NonUTF8Caption)); n != MaxExamples {
		t.Errorf("%d examples kept, want %d", n, MaxExamples)
	}
}

func TestReportConcurrent(t *testing.T) {
	var r Report
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 500; i++ {
				r.AddSkippedImage(UnreadableImage, "img.jpg")
				r.AddRepairedLine(i + 1)
				_ = r.Summary()
				_ = r.Skipped()
			}
		}()
	}
	wg.Wait()
	if r.Skipped() != 4000 || r.Repaired() != 4000 {
		t.Errorf("skipped %d repaired %d, want 4000 each", r.Skipped(), r.Repaired())
	}
	if !strings.Contains(r.Summary(), "skipped 4000 images: 4000 unreadable image (img.jpg") {
		t.Errorf("Summary = %q", r.Summary())
	}
}
