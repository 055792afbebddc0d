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

// readCSV reads a generic captions.csv: RFC 4180 CSV whose header names an "image" and
// a "caption" column (other columns are ignored), one caption per row.
func readCSV(r io.Reader, file string, rep *Report) ([]Item, error) {
	cr := csv.NewReader(r)
	cr.FieldsPerRecord = -1
	cr.LazyQuotes = true
	header, err := cr.Read()
	if err == io.EOF {
		return nil, lineError(file, 1, "empty file: want the header \"image,caption\"")
	}
	if err != nil {
		return nil, fmt.Errorf("%s: header: %w", file, err)
	}
	imageCol, captionCol := -1, -1
	for i, h := range header {
		h = strings.ToLower(strings.TrimSpace(strings.TrimPrefix(h, "\ufeff")))
		switch {
		case h == "image" && imageCol < 0:
			imageCol = i
		case h == "caption" && captionCol < 0:
			captionCol = i
		}
	}
	if imageCol < 0 || captionCol < 0 {
		return nil, lineError(file, 1, "header %q has no \"image\" and \"caption\" columns", clip(strings.Join(header, ","), 80))
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
		if !validName(name) {
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
	var c collector
	err := eachLine(r, file, func(line string, n int) error {
		if strings.TrimSpace(line) == "" {
			return nil
		}
		var row struct {
			Image   json.RawMessage `json:"image"`
			Caption json.RawMessage `json:"caption"`
		}
		var name, caption string
		if json.Unmarshal([]byte(line), &row) != nil || row.Image == nil || row.Caption == nil ||
			!utf8.Valid(row.Image) || json.Unmarshal(row.Image, &name) != nil || !validName(strings.TrimSpace(name)) {
			rep.AddSkippedLine(Malformed, n)
			return nil
		}
		if !utf8.Valid(row.Caption) { // encoding/json would turn bad bytes into U+FFFD silently
			rep.AddSkippedLine(NonUTF8Caption, n)
			return nil
		}
		if json.Unmarshal(row.Caption, &caption) != nil {
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
