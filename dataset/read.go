package dataset

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"unicode/utf8"
)

// The data set formats, as Dataset.Format spells them.
const (
	FormatKaggle   = "flickr30k-kaggle" // results.csv, pipe-separated
	FormatKarpathy = "karpathy"         // dataset_flickr30k.json, dataset_coco.json, ...
	FormatCSV      = "csv"              // captions.csv with header image,caption
	FormatJSONL    = "jsonl"            // captions.jsonl, {"image": ..., "caption": ...} per line
)

// The file names Open looks for.
const (
	KaggleFile = "results.csv"
	CSVFile    = "captions.csv"
	JSONLFile  = "captions.jsonl"
)

// KarpathyFiles are the split files Open recognises, in order of preference.
var KarpathyFiles = []string{"dataset_flickr30k.json", "dataset_coco.json", "dataset_flickr8k.json"}

// imageDirs are the folders, relative to the data set root, where Open looks for images;
// it keeps the one holding most of the first images named by the caption file.
var imageDirs = []string{".", "images", "flickr30k_images", "flickr30k_images/flickr30k_images"}

// Options control Open. The zero value detects the format, uses a split file when there
// is one and sizes hash-based splits by the defaults of SplitOptions.
type Options struct {
	// SplitOptions size the validation and test splits when there is no split file
	// (or IgnoreSplitFile is set).
	SplitOptions

	// Format forces a format (FormatKaggle, FormatKarpathy, FormatCSV, FormatJSONL)
	// instead of detecting it.
	Format string

	// IgnoreSplitFile makes Open split by name hashes even when a Karpathy split file
	// is present (its captions are still read when it is the only caption file).
	IgnoreSplitFile bool

	// SkipImageCheck skips checking that image files exist.
	SkipImageCheck bool
}

// layout is what detect found in a folder.
type layout struct {
	root      string // data set root: the folder given, or its flickr30k_images/ for a Kaggle download
	format    string
	captions  string // caption file, relative to root
	splitFile string // Karpathy split file relative to root, or ""
}

func exists(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.Mode().IsRegular()
}

// detect finds the caption file and the split file of a data set folder. Caption files
// are preferred in the order results.csv, captions.csv, captions.jsonl, Karpathy JSON.
func detect(dir, format string) (layout, error) {
	st, err := os.Stat(dir)
	if err != nil {
		return layout{}, fmt.Errorf("data set: %w", err)
	}
	if !st.IsDir() {
		return layout{}, fmt.Errorf("data set %s: not a folder", dir)
	}
	roots := []string{dir}
	// A Kaggle download unpacks to flickr30k_images/{results.csv,flickr30k_images/}.
	if nested := filepath.Join(dir, "flickr30k_images"); exists(filepath.Join(nested, KaggleFile)) {
		roots = append(roots, nested)
	}
	var lay layout
	for _, root := range roots {
		var split string
		for _, k := range KarpathyFiles {
			if exists(filepath.Join(root, k)) {
				split = k
				break
			}
		}
		if split == "" && root != dir {
			for _, k := range KarpathyFiles {
				if exists(filepath.Join(dir, k)) {
					split, _ = filepath.Rel(root, filepath.Join(dir, k))
					break
				}
			}
		}
		cands := []struct{ format, file string }{
			{FormatKaggle, KaggleFile}, {FormatCSV, CSVFile}, {FormatJSONL, JSONLFile}, {FormatKarpathy, split},
		}
		for _, c := range cands {
			if c.file == "" || (format != "" && format != c.format) {
				continue
			}
			if exists(filepath.Join(root, c.file)) {
				lay = layout{root: root, format: c.format, captions: c.file, splitFile: split}
				return lay, nil
			}
		}
	}
	switch format {
	case "", FormatKaggle, FormatKarpathy, FormatCSV, FormatJSONL:
	default:
		return layout{}, fmt.Errorf("unknown data set format %q: want %s, %s, %s or %s", format, FormatKaggle, FormatKarpathy, FormatCSV, FormatJSONL)
	}
	return layout{}, fmt.Errorf("no data set in %s: want %s (Kaggle Flickr30k), %s (Karpathy split JSON), %s or %s",
		dir, KaggleFile, strings.Join(KarpathyFiles, " or "), CSVFile, JSONLFile)
}

// Open reads the data set in dir, detecting its layout by the files it holds:
//
//   - results.csv: Kaggle Flickr30k, images in flickr30k_images/ (or images/);
//   - captions.csv (header image,caption) or captions.jsonl ({"image":..,"caption":..});
//   - dataset_flickr30k.json, dataset_coco.json: Karpathy split JSON.
//
// A Kaggle download's folder holding flickr30k_images/results.csv works too. Rows for
// the same image become one Item with its captions in file order; items are in the
// order of their first row. When a Karpathy file is present its splits win (restval
// joins train; images it does not list go to train); otherwise splits are a hash of
// each image name, sized by opts (see SplitOptions and AssignSplits).
//
// Malformed rows are repaired when the repair is unambiguous and skipped otherwise;
// empty or non-UTF-8 captions and missing images are skipped. All of it is counted in
// Dataset.Report. Open fails when the caption file cannot be read or has no usable row.
func Open(dir string, opts Options) (*Dataset, error) {
	lay, err := detect(dir, opts.Format)
	if err != nil {
		return nil, err
	}
	d := &Dataset{Root: lay.root, Format: lay.format}
	d.Report.SetSource(lay.captions)
	label := lay.captions
	if lay.root != dir {
		label = filepath.Join(lay.root, lay.captions)
	}
	data, err := os.ReadFile(filepath.Join(lay.root, lay.captions))
	if err != nil {
		return nil, err
	}
	var items []Item
	switch lay.format {
	case FormatKaggle:
		items, err = readKaggle(bytes.NewReader(data), label, &d.Report)
	case FormatCSV:
		items, err = readCSV(bytes.NewReader(data), label, &d.Report)
	case FormatJSONL:
		items, err = readJSONL(bytes.NewReader(data), label, &d.Report)
	case FormatKarpathy:
		items, err = readKarpathy(data, label, &d.Report, true)
	}
	if err != nil {
		return nil, err
	}

	useSplitFile := lay.splitFile != "" && !opts.IgnoreSplitFile
	if useSplitFile && lay.format != FormatKarpathy {
		splitData, err := os.ReadFile(filepath.Join(lay.root, lay.splitFile))
		if err != nil {
			return nil, err
		}
		var ignored Report // caption problems of a file used only for its splits do not count
		listed, err := readKarpathy(splitData, lay.splitFile, &ignored, false)
		if err != nil {
			return nil, err
		}
		d.Report.copyReason(&ignored, TwoSplits) // an image in two splits counts, wherever listed
		byName := make(map[string]Split, len(listed))
		for _, it := range listed {
			byName[it.Name] = it.Split
		}
		for i := range items {
			items[i].Split = byName[items[i].Name]
		}
	}

	if !opts.SkipImageCheck {
		items = resolveImages(lay.root, items, &d.Report)
	} else {
		dirRel := bestImageDir(lay.root, items)
		for i := range items {
			items[i].Image = filepath.Join(lay.root, dirRel, filepath.FromSlash(items[i].Image))
		}
	}
	if len(items) == 0 {
		return nil, fmt.Errorf("%s: no usable images with captions (%s)", label, d.Report.Summary())
	}

	listedAny := false
	if useSplitFile {
		for _, it := range items {
			if it.Split != "" {
				listedAny = true
				break
			}
		}
	}
	if listedAny {
		d.SplitFile = lay.splitFile
		for i := range items {
			if items[i].Split == "" {
				items[i].Split = Train
			}
		}
	} else {
		val, test, err := opts.SplitSizes(len(items))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", label, err)
		}
		names := make([]string, len(items))
		for i, it := range items {
			names[i] = it.Name
		}
		for i, s := range AssignSplits(names, val, test) {
			items[i].Split = s
		}
	}
	d.Items = items
	return d, nil
}

// bestImageDir returns the folder of imageDirs (relative to root) that holds most of
// the first images; ties go to the earlier folder.
func bestImageDir(root string, items []Item) string {
	best, bestN := imageDirs[0], -1
	for _, dir := range imageDirs {
		st, err := os.Stat(filepath.Join(root, dir))
		if err != nil || !st.IsDir() {
			continue
		}
		n := 0
		for i := 0; i < len(items) && i < 32; i++ {
			if exists(filepath.Join(root, dir, filepath.FromSlash(items[i].Image))) {
				n++
			}
		}
		if n > bestN {
			best, bestN = dir, n
		}
	}
	return best
}

// resolveImages turns each item's relative image path into a path under the best image
// folder and drops the items whose file is missing or not a regular file, counting them.
func resolveImages(root string, items []Item, rep *Report) []Item {
	dir := bestImageDir(root, items)
	kept := items[:0]
	for _, it := range items {
		it.Image = filepath.Join(root, dir, filepath.FromSlash(it.Image))
		st, err := os.Stat(it.Image)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			rep.AddSkippedImage(MissingImage, it.Name)
		case err != nil || !st.Mode().IsRegular():
			rep.AddSkippedImage(UnreadableImage, it.Name)
		default:
			kept = append(kept, it)
		}
	}
	return kept
}

// collector groups caption rows by image, keeping the order of first appearance.
type collector struct {
	items []Item
	index map[string]int
}

// add appends a caption to the item of name, creating it (with image path rel and
// split s) on first sight.
func (c *collector) add(name, rel, caption string, s Split) {
	if c.index == nil {
		c.index = make(map[string]int)
	}
	i, ok := c.index[name]
	if !ok {
		i = len(c.items)
		c.index[name] = i
		c.items = append(c.items, Item{Name: name, Image: rel, Split: s})
	}
	c.items[i].Captions = append(c.items[i].Captions, caption)
}

// checkCaption trims a caption and says why it is unusable, if it is.
func checkCaption(s string) (string, Reason) {
	if !utf8.ValidString(s) {
		return "", NonUTF8Caption
	}
	s = strings.TrimSpace(s)
	if s == "" {
		return "", EmptyCaption
	}
	return s, ""
}

// validName reports whether an image name (or relative path) from a caption file is
// usable: valid UTF-8, no control characters, relative and not escaping the folder.
func validName(name string) bool {
	if name == "" || !utf8.ValidString(name) || strings.ContainsAny(name, "\x00\r\n\\") {
		return false
	}
	if path.IsAbs(name) || filepath.IsAbs(name) {
		return false
	}
	for _, part := range strings.Split(name, "/") {
		if part == ".." {
			return false
		}
	}
	clean := path.Clean(name)
	return clean != "." && clean != "/"
}

// lineError is a parse error at a line of a file.
func lineError(file string, line int, format string, args ...any) error {
	return fmt.Errorf("%s:%d: %s", file, line, fmt.Sprintf(format, args...))
}

// maxLine is the longest line the line-based readers accept.
const maxLine = 16 << 20

// eachLine calls fn with every line of r (without its line ending, a leading UTF-8 BOM
// removed from the first) and its 1-based number.
func eachLine(r io.Reader, file string, fn func(line string, n int) error) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), maxLine)
	n := 0
	for sc.Scan() {
		n++
		line := sc.Text()
		if n == 1 {
			line = strings.TrimPrefix(line, "\ufeff")
		}
		if err := fn(line, n); err != nil {
			return err
		}
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return lineError(file, n+1, "line longer than %d MiB", maxLine>>20)
		}
		return fmt.Errorf("%s: %w", file, err)
	}
	return nil
}
