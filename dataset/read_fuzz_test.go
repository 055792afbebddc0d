package dataset

import (
	"bytes"
	"testing"
	"unicode/utf8"
)

// checkItems asserts what every reader guarantees: each item has a usable name and at
// least one non-empty, trimmed, valid UTF-8 caption, and names are unique.
func checkItems(t *testing.T, items []Item, rep *Report) {
	seen := make(map[string]bool)
	for _, it := range items {
		if !validName(it.Name) || seen[it.Name] {
			t.Fatalf("bad or repeated name %q", it.Name)
		}
		seen[it.Name] = true
		if len(it.Captions) == 0 {
			t.Fatalf("%q has no captions", it.Name)
		}
		for _, c := range it.Captions {
			if c == "" || !utf8.ValidString(c) || c != trimmed(c) {
				t.Fatalf("%q: bad caption %q", it.Name, c)
			}
		}
	}
	if rep.Skipped() < 0 || rep.Repaired() < 0 || rep.Summary() == "" {
		t.Fatal("bad report")
	}
}

func trimmed(s string) string { c, _ := checkCaption(s); return c }

func FuzzReadKaggle(f *testing.F) {
	f.Add([]byte(kaggleCSV))
	f.Add([]byte("image_name| comment_number| comment\n2199200615.jpg| 4 A dog runs across the grass .\n"))
	f.Add([]byte("image_name|comment_number|comment\r\n|||\r\n a.jpg |0|\xff\xfe\r\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		var rep Report
		items, err := readKaggle(bytes.NewReader(data), "results.csv", &rep)
		if err != nil {
			return
		}
		checkItems(t, items, &rep)
	})
}

func FuzzReadKarpathy(f *testing.F) {
	f.Add([]byte(karpathyJSON))
	f.Add([]byte(`{"images": [{"filename": "a.jpg", "split": "train", "sentences": [{"raw": "x"}]}]}`))
	f.Add([]byte(`{"images": [null, {}, {"filename": 3}, {"filename": "b", "sentences": [null, {"raw": null}]}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, captions := range []bool{true, false} {
			var rep Report
			items, err := readKarpathy(data, "dataset_flickr30k.json", &rep, captions)
			if err != nil {
				continue
			}
			if captions {
				checkItems(t, items, &rep)
			}
			for _, it := range items {
				if _, ok := karpathySplit(string(it.Split)); !ok || it.Split == "restval" {
					t.Fatalf("split %q", it.Split)
				}
			}
		}
	})
}

func FuzzReadCSV(f *testing.F) {
	f.Add([]byte("image,caption\na.jpg,\"x, y\"\nb.jpg,\"unterminated\n"))
	f.Add([]byte("caption,image\n\"\"\"a\",b.jpg\n,\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		var rep Report
		items, err := readCSV(bytes.NewReader(data), "captions.csv", &rep)
		if err != nil {
			return
		}
		checkItems(t, items, &rep)
	})
}

func FuzzReadJSONL(f *testing.F) {
	f.Add([]byte(`{"image": "a.jpg", "caption": "x"}` + "\n" + `{"image": "a.jpg", "caption": "y\u0000"}` + "\n[]\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		var rep Report
		items, err := readJSONL(bytes.NewReader(data), "captions.jsonl", &rep)
		if err != nil {
			return
		}
		checkItems(t, items, &rep)
	})
}
