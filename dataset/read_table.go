package dataset

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"unicode/utf8"
)

// The formats of a table named directly (OpenTable), as Dataset.Format spells them.
const (
	FormatTableCSV   = "csv-file"
	FormatTableJSONL = "jsonl-file"
)

// open_clip's defaults for --csv-img-key and --csv-caption-key.
const (
	DefaultTableImageKey   = "filepath"
	DefaultTableCaptionKey = "title"
)

// TableOptions configure OpenTable.
type TableOptions struct {
	// ImageKey and CaptionKey name the columns (CSV, TSV) or fields (JSONL) holding a
	// row's image path and caption (defaults DefaultTableImageKey and
	// DefaultTableCaptionKey, open_clip's), matched without regard to case.
	ImageKey, CaptionKey string
	// Separator is the CSV field separator, one character; "" takes a tab for a .tsv
	// file and a comma otherwise. "\t" and "tab" both mean a tab.
	Separator string
	// Root, when set, is the folder that relative image paths are relative to (else
	// the file's folder), and absolute image paths must lie within it.
	Root string
	// SplitOptions size the validation and test splits, drawn by name hash as Open
	// does without a split file.
	SplitOptions
}

// OpenTable reads a CSV, TSV or JSONL file of image paths and captions, as open_clip's
// --train-data names one: a header row (CSV, TSV) naming ImageKey and CaptionKey, or
// one object per line (JSONL); several rows per image allowed. Image paths are
// relative to the file's folder (or Root), or absolute; an absolute path outside Root
// (when Root is set) and a relative one leaving it are skipped as malformed. Missing
// images are skipped, counted like Open's; splits are drawn by name hash.
func OpenTable(file string, opts TableOptions) (*Dataset, error) {
	if opts.ImageKey == "" {
		opts.ImageKey = DefaultTableImageKey
	}
	if opts.CaptionKey == "" {
		opts.CaptionKey = DefaultTableCaptionKey
	}
	ext := strings.ToLower(filepath.Ext(file))
	sep := ','
	if ext == ".tsv" {
		sep = '\t'
	}
	switch s := opts.Separator; {
	case s == "":
	case s == `\t` || strings.EqualFold(s, "tab"):
		sep = '\t'
	case utf8.RuneCountInString(s) == 1 && s != "\n" && s != "\r" && s != `"`:
		sep, _ = utf8.DecodeRuneInString(s)
	default:
		return nil, fmt.Errorf("--csv-separator %q: want one character (\\t or tab for a tab)", s)
	}
	root := opts.Root
	if root != "" {
		abs, err := filepath.Abs(root)
		if err != nil {
			return nil, err
		}
		if st, err := os.Stat(abs); err != nil || !st.IsDir() {
			return nil, fmt.Errorf("--data-root %s: not a folder", root)
		}
		root = abs
	}
	base := root
	if base == "" {
		base = filepath.Dir(file)
	}
	keys := tableKeys{image: opts.ImageKey, caption: opts.CaptionKey, sep: sep, nameOK: func(name string) bool {
		if filepath.IsAbs(name) {
			return utf8.ValidString(name) && !strings.ContainsAny(name, "\x00\r\n") && (root == "" || within(root, name))
		}
		return validName(name)
	}}
	f, err := os.Open(file)
	if err != nil {
		return nil, fmt.Errorf("data set: %w", err)
	}
	defer f.Close()
	d := &Dataset{Root: base}
	d.Report.SetSource(file)
	var items []Item
	if ext == ".jsonl" {
		d.Format = FormatTableJSONL
		items, err = readJSONLKeys(f, file, &d.Report, keys)
	} else {
		d.Format = FormatTableCSV
		items, err = readDelimited(f, file, &d.Report, keys)
	}
	if err != nil {
		return nil, err
	}
	kept := items[:0]
	byPath := map[string]int{} // one item per image, however its rows spell the path
	for _, it := range items {
		if !filepath.IsAbs(it.Image) {
			it.Image = filepath.Join(base, filepath.FromSlash(it.Image))
		}
		it.Image = filepath.Clean(it.Image)
		if i, ok := byPath[it.Image]; ok {
			kept[i].Captions = append(kept[i].Captions, it.Captions...)
			continue
		}
		st, err := os.Stat(it.Image)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			d.Report.AddSkippedImage(MissingImage, it.Name)
		case err != nil || !st.Mode().IsRegular():
			d.Report.AddSkippedImage(UnreadableImage, it.Name)
		default:
			byPath[it.Image] = len(kept)
			kept = append(kept, it)
		}
	}
	if len(kept) == 0 {
		return nil, fmt.Errorf("%s: no usable images with captions (%s)", file, d.Report.Summary())
	}
	val, test, err := opts.SplitSizes(len(kept))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	names := make([]string, len(kept))
	for i, it := range kept {
		names[i] = it.Name
	}
	for i, s := range AssignSplits(names, val, test) {
		kept[i].Split = s
	}
	d.Items = kept
	return d, nil
}

// within reports whether the absolute path p lies inside the absolute folder root.
func within(root, p string) bool {
	rel, err := filepath.Rel(root, filepath.Clean(p))
	return err == nil && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator)) && !filepath.IsAbs(rel)
}
