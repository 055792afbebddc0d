package dataset

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"
)

// Reason says why a row or an image was skipped.
type Reason string

// The reasons a reader or the image loader skips something. Row reasons count caption
// rows (lines of a CSV or JSONL file, sentences of a Karpathy file); image reasons count
// images.
const (
	Malformed       Reason = "malformed"            // row: cannot be parsed, or its fields make no sense
	EmptyCaption    Reason = "empty caption"        // row: caption is empty or only spaces
	NonUTF8Caption  Reason = "non-UTF-8 caption"    // row: caption bytes are not valid UTF-8
	NoCaptions      Reason = "no captions"          // image: listed without any usable caption
	MissingImage    Reason = "missing image"        // image: no such file
	UnreadableImage Reason = "unreadable image"     // image: not a regular file, truncated, or not an image
	OversizedImage  Reason = "oversized image"      // image: larger than the loader accepts
	TwoSplits       Reason = "listed in two splits" // image: a split file lists it again in another split (the first listing wins)
	CorruptShard    Reason = "corrupt shard"        // shard: a tar that cannot be read to its end
)

// reasonOrder is the order in which Summary lists the known reasons.
var reasonOrder = []Reason{Malformed, EmptyCaption, NonUTF8Caption, NoCaptions, MissingImage, UnreadableImage, OversizedImage, TwoSplits, CorruptShard}

// IsImageReason reports whether r counts images rather than caption rows.
func (r Reason) IsImageReason() bool {
	switch r {
	case NoCaptions, MissingImage, UnreadableImage, OversizedImage, TwoSplits:
		return true
	}
	return false
}

// MaxExamples is how many offenders a Report keeps per reason (and for repairs).
const MaxExamples = 5

// Place names one offender: a line of a text file, or a name (an image file, or an
// entry such as "images[12].sentences[3]"). Line is 0 when the place is only a name.
type Place struct {
	Line int
	Name string
}

// String gives "line 17", "1000092795.jpg" or "line 17 (1000092795.jpg)".
func (p Place) String() string {
	switch {
	case p.Line > 0 && p.Name != "":
		return "line " + strconv.Itoa(p.Line) + " (" + p.Name + ")"
	case p.Line > 0:
		return "line " + strconv.Itoa(p.Line)
	default:
		return p.Name
	}
}

type tally struct {
	n        int
	examples []Place
}

func (t *tally) add(p Place) {
	t.n++
	if len(t.examples) < MaxExamples {
		t.examples = append(t.examples, p)
	}
}

// Report counts what a reader repaired and what it, or the image loader, skipped, and
// keeps the first MaxExamples offenders of each kind. The zero value is an empty report
// ready to use; all methods are safe for concurrent use. A Report must not be copied
// after first use.
type Report struct {
	mu       sync.Mutex
	source   string // caption file the rows come from, e.g. "results.csv"
	skipped  map[Reason]*tally
	repaired tally
}

// SetSource names the file that row line numbers refer to (e.g. "results.csv").
func (r *Report) SetSource(name string) {
	r.mu.Lock()
	r.source = name
	r.mu.Unlock()
}

// Source is the file name set by SetSource.
func (r *Report) Source() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.source
}

// AddSkipped records one skipped row or image at place p.
func (r *Report) AddSkipped(reason Reason, p Place) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.skipped == nil {
		r.skipped = make(map[Reason]*tally)
	}
	t := r.skipped[reason]
	if t == nil {
		t = &tally{}
		r.skipped[reason] = t
	}
	t.add(p)
}

// copyReason adds o's count and examples of one reason to r.
func (r *Report) copyReason(o *Report, reason Reason) {
	o.mu.Lock()
	t := o.skipped[reason]
	var n int
	var ex []Place
	if t != nil {
		n, ex = t.n, append([]Place(nil), t.examples...)
	}
	o.mu.Unlock()
	if n == 0 {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.skipped == nil {
		r.skipped = make(map[Reason]*tally)
	}
	d := r.skipped[reason]
	if d == nil {
		d = &tally{}
		r.skipped[reason] = d
	}
	d.n += n
	for _, p := range ex {
		if len(d.examples) < MaxExamples {
			d.examples = append(d.examples, p)
		}
	}
}

// AddSkippedLine records one skipped row at a 1-based line of the source file.
func (r *Report) AddSkippedLine(reason Reason, line int) {
	r.AddSkipped(reason, Place{Line: line})
}

// AddSkippedImage records one skipped image by name; the image loader calls it with
// UnreadableImage or OversizedImage.
func (r *Report) AddSkippedImage(reason Reason, name string) {
	r.AddSkipped(reason, Place{Name: name})
}

// AddRepaired records one row that was malformed but repaired unambiguously.
func (r *Report) AddRepaired(p Place) {
	r.mu.Lock()
	r.repaired.add(p)
	r.mu.Unlock()
}

// AddRepairedLine records one repaired row at a 1-based line of the source file.
func (r *Report) AddRepairedLine(line int) { r.AddRepaired(Place{Line: line}) }

// Skipped is the number of skipped rows and images, all reasons together.
func (r *Report) Skipped() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, t := range r.skipped {
		n += t.n
	}
	return n
}

// SkippedFor is the number of rows or images skipped for one reason.
func (r *Report) SkippedFor(reason Reason) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	if t := r.skipped[reason]; t != nil {
		return t.n
	}
	return 0
}

// Examples returns the first offenders recorded for a reason, at most MaxExamples.
func (r *Report) Examples(reason Reason) []Place {
	r.mu.Lock()
	defer r.mu.Unlock()
	if t := r.skipped[reason]; t != nil {
		return append([]Place(nil), t.examples...)
	}
	return nil
}

// Repaired is the number of repaired rows.
func (r *Report) Repaired() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.repaired.n
}

// RepairedExamples returns the first repaired rows, at most MaxExamples.
func (r *Report) RepairedExamples() []Place {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Place(nil), r.repaired.examples...)
}

// Summary describes the report for people in one line, e.g.
//
//	skipped 3 rows of results.csv: 2 malformed (lines 17, 40), 1 empty caption (line 22); repaired 1 row (line 9); skipped 1 image: 1 missing image (123.jpg)
//
// or "nothing skipped or repaired".
func (r *Report) Summary() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	reasons := make([]Reason, 0, len(r.skipped))
	known := make(map[Reason]bool, len(reasonOrder))
	for _, rs := range reasonOrder {
		known[rs] = true
		if r.skipped[rs] != nil {
			reasons = append(reasons, rs)
		}
	}
	var extra []Reason
	for rs := range r.skipped {
		if !known[rs] {
			extra = append(extra, rs)
		}
	}
	sort.Slice(extra, func(i, j int) bool { return extra[i] < extra[j] })
	reasons = append(reasons, extra...)

	var rowParts, imgParts, shardParts []string
	rows, imgs := 0, 0
	for _, rs := range reasons {
		t := r.skipped[rs]
		part := strconv.Itoa(t.n) + " " + string(rs) + " (" + places(t) + ")"
		if rs == CorruptShard {
			shardParts = append(shardParts, part)
		} else if rs.IsImageReason() {
			imgs += t.n
			imgParts = append(imgParts, part)
		} else {
			rows += t.n
			rowParts = append(rowParts, part)
		}
	}
	var out []string
	if rows > 0 {
		of := ""
		if r.source != "" {
			of = " of " + r.source
		}
		out = append(out, "skipped "+plural(rows, "row")+of+": "+strings.Join(rowParts, ", "))
	}
	if r.repaired.n > 0 {
		out = append(out, "repaired "+plural(r.repaired.n, "row")+" ("+places(&r.repaired)+")")
	}
	if imgs > 0 {
		out = append(out, "skipped "+plural(imgs, "image")+": "+strings.Join(imgParts, ", "))
	}
	if len(shardParts) > 0 {
		out = append(out, "cut short "+strings.Join(shardParts, ", "))
	}
	if len(out) == 0 {
		return "nothing skipped or repaired"
	}
	return strings.Join(out, "; ")
}

// places formats a tally's examples: "lines 17, 40", "line 3", "a.jpg, b.jpg, ...".
func places(t *tally) string {
	allLines := true
	for _, p := range t.examples {
		if p.Line <= 0 || p.Name != "" {
			allLines = false
		}
	}
	var parts []string
	for _, p := range t.examples {
		if allLines {
			parts = append(parts, strconv.Itoa(p.Line))
		} else {
			parts = append(parts, p.String())
		}
	}
	s := strings.Join(parts, ", ")
	if allLines {
		if len(t.examples) == 1 {
			s = "line " + s
		} else {
			s = "lines " + s
		}
	}
	if t.n > len(t.examples) {
		s += fmt.Sprintf(", ... %d more", t.n-len(t.examples))
	}
	return s
}

func plural(n int, word string) string {
	if n == 1 {
		return "1 " + word
	}
	return strconv.Itoa(n) + " " + word + "s"
}
