package tokenizer

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"goclip/internal/testutil"
)

// writeTokenizerJSON writes the fixture's vocabulary as a tokenizers tokenizer.json in
// dir, with its merges as "left right" strings or as [left, right] pairs, and model
// fields overridden by edit.
func writeTokenizerJSON(t *testing.T, dir string, pairs bool, edit func(model map[string]any)) string {
	t.Helper()
	fx := testutil.Fixtures(t, "clip-tiny-openai")
	raw, err := os.ReadFile(filepath.Join(fx, VocabFile))
	if err != nil {
		t.Fatal(err)
	}
	var vocab map[string]int
	if err := json.Unmarshal(raw, &vocab); err != nil {
		t.Fatal(err)
	}
	raw, err = os.ReadFile(filepath.Join(fx, MergesFile))
	if err != nil {
		t.Fatal(err)
	}
	var merges []any
	for i, line := range strings.Split(strings.TrimRight(string(raw), "\n"), "\n") {
		if i == 0 {
			continue // #version
		}
		if pairs {
			merges = append(merges, strings.SplitN(line, " ", 2))
		} else {
			merges = append(merges, line)
		}
	}
	model := map[string]any{"type": "BPE", "vocab": vocab, "merges": merges, "end_of_word_suffix": "</w>",
		"continuing_subword_prefix": "", "unk_token": "<|endoftext|>"}
	if edit != nil {
		edit(model)
	}
	data, err := json.Marshal(map[string]any{"version": "1.0", "model": model})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, JSONFile)
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestLoadTokenizerJSON: a folder with only tokenizer.json (what transformers 5's
// save_pretrained writes), the file itself and a model folder's tokenizer/ subfolder
// give the ids of vocab.json + merges.txt, for both spellings of the merges.
func TestLoadTokenizerJSON(t *testing.T) {
	want := refTokenizers(t)["hf-vocab-merges"]
	cases := readCases(t)
	tmp := t.TempDir()
	strs := writeTokenizerJSON(t, filepath.Join(tmp, "strings"), false, nil)
	writeTokenizerJSON(t, filepath.Join(tmp, "pairs"), true, nil)
	writeTokenizerJSON(t, filepath.Join(tmp, "model", "tokenizer"), false, nil)
	for _, p := range []string{filepath.Dir(strs), strs, filepath.Join(tmp, "pairs"), filepath.Join(tmp, "model")} {
		tok, err := Load(p)
		if err != nil {
			t.Errorf("Load(%s): %v", p, err)
			continue
		}
		for _, c := range cases {
			if got := tok.Encode(c.Text); !slices.Equal(got, want.Encode(c.Text)) {
				t.Errorf("Load(%s): %q encodes to %v, want %v", p, c.Text, got, want.Encode(c.Text))
				break
			}
		}
	}
}

// TestLoadTokenizerJSONErrors: a tokenizer.json that is not CLIP's BPE, or is
// malformed, is an error naming the file and what is wrong.
func TestLoadTokenizerJSONErrors(t *testing.T) {
	tmp := t.TempDir()
	for _, c := range []struct {
		name string
		edit func(map[string]any)
		want string
	}{
		{"wordpiece", func(m map[string]any) { m["type"] = "WordPiece" }, `model type "WordPiece"`},
		{"no-suffix", func(m map[string]any) { delete(m, "end_of_word_suffix") }, "end_of_word_suffix"},
		{"prefix", func(m map[string]any) { m["continuing_subword_prefix"] = "##" }, "continuing_subword_prefix"},
		{"bad-merge", func(m map[string]any) { m["merges"] = []any{"i n", 7} }, "merges entry 2"},
		{"three-part-merge", func(m map[string]any) { m["merges"] = []any{"i n x"} }, "merges"},
		{"sparse-vocab", func(m map[string]any) { m["vocab"] = map[string]int{"a": 0, "b": 5} }, "ids must be"},
	} {
		path := writeTokenizerJSON(t, filepath.Join(tmp, c.name), false, c.edit)
		_, err := Load(filepath.Dir(path))
		if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), path) {
			t.Errorf("%s: error %v, want one naming %s and %q", c.name, err, path, c.want)
		}
	}
	bad := filepath.Join(tmp, "garbage", JSONFile)
	if err := os.MkdirAll(filepath.Dir(bad), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bad, []byte("{not json"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(bad); err == nil || !strings.Contains(err.Error(), bad) {
		t.Errorf("malformed tokenizer.json: %v", err)
	}
}
