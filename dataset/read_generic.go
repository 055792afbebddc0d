package dataset

import (
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"unicode/utf8"
)

// tableKeys say which columns (CSV) or fields (JSONL) hold a row's image and caption,
// and which image names are acceptable.
type tableKeys struct {
	image, caption string
	sep            rune              // CSV field separator
	nameOK         func(string) bool // validName unless set
}

// genericKeys are those of captions.csv and captions.jsonl.
var genericKeys = tableKeys{image: "image", caption: "caption", sep: ','}

// readCSV reads a generic captions.csv: RFC 4180 CSV whose header names an "image" and
// a "caption" column (other columns are ignored), one caption per row.
func readCSV(r io.Reader, file string, rep *Report) ([]Item, error) {
	return readDelimited(r, file, rep, genericKeys)
}

// readDelimited reads CSV (or TSV, ...: keys.sep) whose header names keys.image and
// keys.caption (matched without regard to case), one caption per row.
func readDelimited(r io.Reader, file string, rep *Report, keys tableKeys) ([]Item, error) {
	nameOK := keys.nameOK
	if nameOK == nil {
		nameOK = validName
	}
	cr := csv.NewReader(r)
	cr.Comma = keys.sep
	cr.FieldsPerRecord = -1
	cr.LazyQuotes = true
	header, err := cr.Read()
	if err == io.EOF {
		return nil, lineError(file, 1, "empty file: want the header \"%s%c%s\"", keys.image, keys.sep, keys.caption)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: header: %w", file, err)
	}
	imageCol, captionCol := -1, -1
	for i, h := range header {
		h = strings.TrimSpace(strings.TrimPrefix(h, "\ufeff"))
		switch {
		case strings.EqualFold(h, keys.image) && imageCol < 0:
			imageCol = i
		case strings.EqualFold(h, keys.caption) && captionCol < 0:
			captionCol = i
		}
	}
	if imageCol < 0 || captionCol < 0 {
		return nil, lineError(file, 1, "header %q has no %q and %q columns", clip(strings.Join(header, string(keys.sep)), 80), keys.image, keys.caption)
	}
	var c collector
	lastLine := 0
	for {
		rec, err := cr.Read()
		if err == io.EOF {
			break
		}
		var perr *csv.ParseError
		if errors.As(err, &perr) {
			if perr.StartLine <= lastLine { // no progress: stop rather than loop
				break
			}
			lastLine = perr.StartLine
			rep.AddSkippedLine(Malformed, perr.StartLine)
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", file, err)
		}
		line, _ := cr.FieldPos(0)
		lastLine = line
		if len(rec) <= max(imageCol, captionCol) {
			rep.AddSkippedLine(Malformed, line)
			continue
		}
		name := strings.TrimSpace(rec[imageCol])
		if !nameOK(name) {
			rep.AddSkippedLine(Malformed, line)
			continue
		}
		caption, why := checkCaption(rec[captionCol])
		if why != "" {
			rep.AddSkippedLine(why, line)
			continue
		}
		c.add(name, name, caption, "")
	}
	return c.items, nil
}

// readJSONL reads a generic captions.jsonl: one {"image": ..., "caption": ...} object
// per line. Blank lines are ignored.
func readJSONL(r io.Reader, file string, rep *Report) ([]Item, error) {
	return readJSONLKeys(r, file, rep, genericKeys)
}

// field is obj's value for key: an exact match, else one without regard to case (as
// encoding/json matches struct fields).
func field(obj map[string]json.RawMessage, key string) json.RawMessage {
	if v, ok := obj[key]; ok {
		return v
	}
	for k, v := range obj {
		if strings.EqualFold(k, key) {
			return v
		}
	}
	return nil
}

// readJSONLKeys reads JSONL whose objects hold the image in keys.image and the caption
// in keys.caption.
func readJSONLKeys(r io.Reader, file string, rep *Report, keys tableKeys) ([]Item, error) {
	nameOK := keys.nameOK
	if nameOK == nil {
		nameOK = validName
	}
	var c collector
	err := eachLine(r, file, func(line string, n int) error {
		if strings.TrimSpace(line) == "" {
			return nil
		}
		var obj map[string]json.RawMessage
		var name, caption string
		if json.Unmarshal([]byte(line), &obj) != nil {
			rep.AddSkippedLine(Malformed, n)
			return nil
		}
		img, capt := field(obj, keys.image), field(obj, keys.caption)
		if img == nil || capt == nil || !utf8.Valid(img) || json.Unmarshal(img, &name) != nil || !nameOK(strings.TrimSpace(name)) {
			rep.AddSkippedLine(Malformed, n)
			return nil
		}
		if !utf8.Valid(capt) { // encoding/json would turn bad bytes into U+FFFD silently
			rep.AddSkippedLine(NonUTF8Caption, n)
			return nil
		}
		if json.Unmarshal(capt, &caption) != nil {
			rep.AddSkippedLine(Malformed, n)
			return nil
		}
		caption, why := checkCaption(caption)
		if why != "" {
			rep.AddSkippedLine(why, n)
			return nil
		}
		name = strings.TrimSpace(name)
		c.add(name, name, caption, "")
		return nil
	})
	return c.items, err
}
