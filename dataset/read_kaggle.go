package dataset

import (
	"io"
	"strconv"
	"strings"
)

// kaggleHeader is the header of the Kaggle Flickr30k results.csv, fields trimmed.
var kaggleHeader = []string{"image_name", "comment_number", "comment"}

// readKaggle reads a Kaggle Flickr30k results.csv: a header line
// "image_name| comment_number| comment", then one "name| n| caption" row per caption.
// Blank lines are ignored. A comment holding '|' keeps it.
//
// A row that lost its second separator, "2199200615.jpg| 4 A dog runs across the grass .",
// is repaired when the number is the image's next comment number (the count of earlier
// rows for that image), so that a caption starting with a number is never mistaken for
// one; other malformed rows are skipped. file names the file in errors.
func readKaggle(r io.Reader, file string, rep *Report) ([]Item, error) {
	var c collector
	seen := make(map[string]int) // rows so far per image name, usable or not
	header := false
	err := eachLine(r, file, func(line string, n int) error {
		line = strings.TrimSuffix(line, "\r")
		if strings.TrimSpace(line) == "" {
			return nil
		}
		fields := strings.Split(line, "|")
		if !header {
			header = true
			ok := len(fields) == len(kaggleHeader)
			for i := 0; ok && i < len(fields); i++ {
				ok = strings.EqualFold(strings.TrimSpace(fields[i]), kaggleHeader[i])
			}
			if !ok {
				return lineError(file, n, "header is %q, want \"image_name| comment_number| comment\"", clip(line, 80))
			}
			return nil
		}
		name := strings.TrimSpace(fields[0])
		if len(fields) < 2 || !validName(name) {
			rep.AddSkippedLine(Malformed, n)
			return nil
		}
		want := seen[name]
		seen[name]++
		var caption string
		if len(fields) >= 3 {
			if _, err := strconv.Atoi(strings.TrimSpace(fields[1])); err != nil {
				rep.AddSkippedLine(Malformed, n)
				return nil
			}
			caption = strings.Join(fields[2:], "|")
		} else {
			// "name| 4 A dog runs": the separator after the number is missing.
			rest := strings.TrimLeft(fields[1], " \t")
			digits := len(rest) - len(strings.TrimLeft(rest, "0123456789"))
			num, err := strconv.Atoi(rest[:digits])
			if digits == 0 || err != nil || num != want || digits == len(rest) || (rest[digits] != ' ' && rest[digits] != '\t') {
				rep.AddSkippedLine(Malformed, n)
				return nil
			}
			caption = rest[digits:]
			if _, why := checkCaption(caption); why == "" {
				rep.AddRepairedLine(n)
			}
		}
		caption, why := checkCaption(caption)
		if why != "" {
			rep.AddSkippedLine(why, n)
			return nil
		}
		c.add(name, name, caption, "")
		return nil
	})
	if err != nil {
		return nil, err
	}
	if !header {
		return nil, lineError(file, 1, "empty file: want the header \"image_name| comment_number| comment\"")
	}
	return c.items, nil
}

// clip shortens s to at most n bytes for an error message.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
