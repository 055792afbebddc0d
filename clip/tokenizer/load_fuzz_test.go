package tokenizer

import (
	"bytes"
	"compress/gzip"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
)

// fuzzTexts are encoded by every tokenizer a fuzz target loads.
var fuzzTexts = []string{"A dog runs across the grass.", "", "héllo 世界 👍", "<|startoftext|> x <|endoftext|>"}

// checkLoaded asserts what a loaded tokenizer guarantees: encodings start and end with
// its special tokens and stay inside the vocabulary, and it saves and loads back with
// the same encodings.
func checkLoaded(t *testing.T, tok *Tokenizer) {
	t.Helper()
	var before [][]int
	for _, s := range fuzzTexts {
		ids := tok.Encode(s)
		if len(ids) < 2 || ids[0] != tok.StartID() || ids[len(ids)-1] != tok.EndID() {
			t.Fatalf("Encode(%q) = %v", s, ids)
		}
		for _, id := range ids {
			if id < 0 || id >= tok.VocabSize() {
				t.Fatalf("Encode(%q): id %d outside [0, %d)", s, id, tok.VocabSize())
			}
		}
		before = append(before, ids)
	}
	dir := t.TempDir()
	if err := tok.Save(dir); err != nil {
		t.Fatalf("Save: %v", err)
	}
	again, err := Load(dir)
	if err != nil {
		t.Fatalf("a saved vocabulary does not load: %v", err)
	}
	for i, s := range fuzzTexts {
		if ids := again.Encode(s); !slices.Equal(ids, before[i]) {
			t.Fatalf("Encode(%q) after Save and Load: %v, before %v", s, ids, before[i])
		}
	}
}

// FuzzLoadHF: arbitrary vocab.json and merges.txt load into a working tokenizer or fail
// with an error. Seeds: a vocabulary trained here, and broken variants of it.
func FuzzLoadHF(f *testing.F) {
	tok, err := Train(captions(200, 3), 600)
	if err != nil {
		f.Fatal(err)
	}
	dir := f.TempDir()
	if err := tok.Save(dir); err != nil {
		f.Fatal(err)
	}
	vocab, _ := os.ReadFile(filepath.Join(dir, VocabFile))
	merges, _ := os.ReadFile(filepath.Join(dir, MergesFile))
	f.Add(vocab, merges)
	f.Add(vocab, merges[:len(merges)/2])
	f.Add(vocab[:len(vocab)/2], merges)
	f.Add([]byte(`{"a": 0, "a": 1}`), []byte("#version: 0.2\na b\n"))
	f.Add([]byte(`{"a": -1}`), []byte(""))
	f.Fuzz(func(t *testing.T, vocab, merges []byte) {
		dir := t.TempDir()
		os.WriteFile(filepath.Join(dir, VocabFile), vocab, 0o644)
		os.WriteFile(filepath.Join(dir, MergesFile), merges, 0o644)
		tok, err := Load(dir)
		if err != nil {
			return
		}
		checkLoaded(t, tok)
	})
}

// FuzzLoadOpenAI: an arbitrary OpenAI-format merges file, plain or gzipped, loads into
// a working tokenizer or fails with an error.
func FuzzLoadOpenAI(f *testing.F) {
	small := []byte("#version: 0.2\nt h\nth e</w>\na n\nan d</w>\n")
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(small)
	zw.Close()
	f.Add(small)
	f.Add(gz.Bytes())
	f.Add(gz.Bytes()[:gz.Len()/2])
	f.Add([]byte("#version\nt\n"))
	f.Add([]byte("#version\nq q\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		path := filepath.Join(t.TempDir(), "merges.txt.gz")
		os.WriteFile(path, data, 0o644)
		tok, err := Load(path)
		if err != nil {
			return
		}
		checkLoaded(t, tok)
	})
}

// TestLoadGzipBomb: a 100 kB gzip of 100 MB is refused without inflating it whole.
func TestLoadGzipBomb(t *testing.T) {
	var gz bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&gz, gzip.BestCompression)
	zw.Write([]byte("#version: 0.2\n"))
	zw.Write(make([]byte, 100<<20))
	zw.Close()
	path := filepath.Join(t.TempDir(), "bomb.txt.gz")
	os.WriteFile(path, gz.Bytes(), 0o644)
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	_, err := Load(path)
	runtime.ReadMemStats(&after)
	if err == nil || !strings.Contains(err.Error(), "inflates to more than") || !strings.Contains(err.Error(), path) {
		t.Errorf("gzip bomb (%d bytes): %v", gz.Len(), err)
	}
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 3*maxMergesBytes {
		t.Errorf("allocated %d bytes", alloc)
	}
}
