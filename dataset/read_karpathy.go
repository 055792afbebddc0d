package dataset

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"path"
	"unicode/utf8"
)

// karpathyImage is one entry of a Karpathy split file's "images" array.
type karpathyImage struct {
	Filename  string            `json:"filename"`
	Filepath  string            `json:"filepath"` // COCO: "train2014", "val2014"; absent for Flickr
	Split     string            `json:"split"`
	Sentences []json.RawMessage `json:"sentences"`
}

type karpathySentence struct {
	Raw json.RawMessage `json:"raw"`
}

// karpathySplit maps a Karpathy split name to a Split: restval joins train.
func karpathySplit(s string) (Split, bool) {
	switch s {
	case "train", "restval":
		return Train, true
	case "val":
		return Val, true
	case "test":
		return Test, true
	case "":
		return "", true
	}
	return "", false
}

// splitName is a split as people read it ("unassigned" for none).
func splitName(s Split) string {
	if s == "" {
		return "unassigned"
	}
	return string(s)
}

// readKarpathy reads a Karpathy split file (dataset_flickr30k.json, dataset_coco.json):
// {"images": [{"filename", "filepath"?, "split", "sentences": [{"raw"}, ...]}, ...]}.
// Each item's Image is "filepath/filename" (or just filename). An entry that cannot be
// decoded, lacks a usable filename or names an unknown split is skipped as malformed,
// named "images[i]". An image listed again in another split keeps its first split; the
// later listing is skipped and reported (TwoSplits). With captions false only names and splits are read (for a split
// file that accompanies another caption file) and items may have no captions.
func readKarpathy(data []byte, file string, rep *Report, captions bool) ([]Item, error) {
	var doc struct {
		Images []json.RawMessage `json:"images"`
	}
	if err := json.Unmarshal(data, &doc); err != nil {
		return nil, jsonError(file, data, err)
	}
	if doc.Images == nil {
		return nil, fmt.Errorf("%s: no \"images\" array: not a Karpathy split file", file)
	}
	var c collector
	splitOf := map[string]Split{} // the first listing's split of each image
	for i, raw := range doc.Images {
		where := Place{Name: fmt.Sprintf("images[%d]", i)}
		var im karpathyImage
		if err := json.Unmarshal(raw, &im); err != nil || !validName(im.Filename) || (im.Filepath != "" && !validName(im.Filepath)) {
			rep.AddSkipped(Malformed, where)
			continue
		}
		split, ok := karpathySplit(im.Split)
		if !ok {
			rep.AddSkipped(Malformed, where)
			continue
		}
		rel := im.Filename
		if im.Filepath != "" {
			rel = path.Join(im.Filepath, im.Filename)
		}
		if first, seen := splitOf[im.Filename]; seen && first != split {
			// One image in two splits would leak between training and evaluation.
			rep.AddSkipped(TwoSplits, Place{Name: fmt.Sprintf("images[%d] (%s: %s, already %s)", i, im.Filename, splitName(split), splitName(first))})
			continue
		}
		splitOf[im.Filename] = split
		if !captions {
			if _, dup := c.index[im.Filename]; !dup {
				c.add(im.Filename, rel, "", split)
				c.items[len(c.items)-1].Captions = nil
			}
			continue
		}
		got := 0
		for j, sraw := range im.Sentences {
			at := Place{Name: fmt.Sprintf("images[%d].sentences[%d] (%s)", i, j, im.Filename)}
			var s karpathySentence
			var text string
			if err := json.Unmarshal(sraw, &s); err != nil || s.Raw == nil {
				rep.AddSkipped(Malformed, at)
				continue
			}
			if !utf8.Valid(s.Raw) { // encoding/json would turn bad bytes into U+FFFD silently
				rep.AddSkipped(NonUTF8Caption, at)
				continue
			}
			if err := json.Unmarshal(s.Raw, &text); err != nil {
				rep.AddSkipped(Malformed, at)
				continue
			}
			text, why := checkCaption(text)
			if why != "" {
				rep.AddSkipped(why, at)
				continue
			}
			c.add(im.Filename, rel, text, split)
			got++
		}
		if got == 0 {
			if _, dup := c.index[im.Filename]; !dup {
				rep.AddSkippedImage(NoCaptions, im.Filename)
			}
		}
	}
	return c.items, nil
}

// jsonError names the line of a JSON syntax or type error.
func jsonError(file string, data []byte, err error) error {
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syn):
		return lineError(file, lineOf(data, syn.Offset), "%v", err)
	case errors.As(err, &typ):
		return lineError(file, lineOf(data, typ.Offset), "%v", err)
	}
	return fmt.Errorf("%s: %w", file, err)
}

// lineOf is the 1-based line holding byte offset off of data.
func lineOf(data []byte, off int64) int {
	off = min(max(off, 0), int64(len(data)))
	return bytes.Count(data[:off], []byte("\n")) + 1
}
