package tokenizer

import (
	"bufio"
	"compress/gzip"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"

	"goclip/internal/testutil"
)

type fixtureCase struct {
	Text    string `json:"text"`
	IDs     []int  `json:"ids"`
	IDs77   []int  `json:"ids_77"`
	Decoded string `json:"decoded"`
}

func readCases(t testing.TB) []fixtureCase {
	t.Helper()
	f, err := os.Open(testutil.Fixtures(t, "clip_tokenizer_cases.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var cases []fixtureCase
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var c fixtureCase
		if err := json.Unmarshal(sc.Bytes(), &c); err != nil {
			t.Fatalf("case %d: %v", len(cases)+1, err)
		}
		cases = append(cases, c)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return cases
}

// The two reference vocabularies are loaded once; loading is tested on its own.
var (
	loadOnce sync.Once
	fromGz   *Tokenizer
	fromHF   *Tokenizer
	loadErr  error
)

func refTokenizers(t testing.TB) map[string]*Tokenizer {
	t.Helper()
	dir := testutil.Fixtures(t)
	loadOnce.Do(func() {
		if fromGz, loadErr = Load(filepath.Join(dir, OpenAIFile)); loadErr != nil {
			return
		}
		fromHF, loadErr = Load(filepath.Join(dir, "clip-tiny-openai"))
	})
	if loadErr != nil {
		t.Fatal(loadErr)
	}
	return map[string]*Tokenizer{"openai-gz": fromGz, "hf-vocab-merges": fromHF}
}

func TestFixtureCases(t *testing.T) {
	cases := readCases(t)
	if len(cases) != 300 {
		t.Fatalf("read %d cases, want the 300 of clip_tokenizer_cases.jsonl", len(cases))
	}
	for name, tok := range refTokenizers(t) {
		t.Run(name, func(t *testing.T) {
			bad := 0
			for i, c := range cases {
				ids := tok.Encode(c.Text)
				ids77 := tok.EncodeContext(c.Text, 77)
				var dec string
				if len(ids) >= 2 {
					dec = tok.Decode(ids[1 : len(ids)-1])
				}
				if !slices.Equal(ids, c.IDs) || !slices.Equal(ids77, c.IDs77) || dec != c.Decoded {
					bad++
					if bad <= 5 {
						t.Errorf("case %d %q:\n ids     %v\n want    %v\n ids_77  %v\n want    %v\n decoded %q\n want    %q",
							i+1, c.Text, ids, c.IDs, ids77, c.IDs77, dec, c.Decoded)
					}
				}
			}
			if bad > 0 {
				t.Errorf("%d of %d cases differ", bad, len(cases))
			}
		})
	}
}

func TestFormatsAgree(t *testing.T) {
	toks := refTokenizers(t)
	gz, hf := toks["openai-gz"], toks["hf-vocab-merges"]
	if gz.VocabSize() != 49408 || hf.VocabSize() != 49408 {
		t.Fatalf("vocab sizes %d and %d, want 49408", gz.VocabSize(), hf.VocabSize())
	}
	if gz.StartID() != 49406 || gz.EndID() != 49407 || hf.StartID() != 49406 || hf.EndID() != 49407 {
		t.Fatalf("special ids gz %d/%d, hf %d/%d; want 49406/49407", gz.StartID(), gz.EndID(), hf.StartID(), hf.EndID())
	}
	if !slices.Equal(gz.tokens, hf.tokens) {
		t.Error("token tables differ")
	}
	if !slices.Equal(gz.merges, hf.merges) {
		t.Error("merge rules differ")
	}
}

// Saving OpenAI's vocabulary in Hugging Face's format reproduces the
// vocab.json and merges.txt that every OpenAI CLIP checkpoint ships.
func TestSaveReproducesHFFiles(t *testing.T) {
	gz := refTokenizers(t)["openai-gz"]
	dir := t.TempDir()
	if err := gz.Save(dir); err != nil {
		t.Fatal(err)
	}
	ref := testutil.Fixtures(t, "clip-tiny-openai")
	readVocab := func(path string) map[string]int {
		raw, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		var v map[string]int
		if err := json.Unmarshal(raw, &v); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		return v
	}
	if got, want := readVocab(filepath.Join(dir, VocabFile)), readVocab(filepath.Join(ref, VocabFile)); !reflect.DeepEqual(got, want) {
		t.Errorf("saved vocab.json (%d entries) differs from the reference (%d)", len(got), len(want))
	}
	readLines := func(path string) []string {
		raw, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		return strings.Split(strings.TrimRight(string(raw), "\n"), "\n")
	}
	if got, want := readLines(filepath.Join(dir, MergesFile)), readLines(filepath.Join(ref, MergesFile)); !slices.Equal(got, want) {
		t.Errorf("saved merges.txt (%d lines) differs from the reference (%d)", len(got), len(want))
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 2 {
		t.Errorf("Save left %d files in the folder, want 2 (no temporary files)", len(entries))
	}
}

// Every way of naming a vocabulary gives the same ids.
func TestLoadPaths(t *testing.T) {
	dir := testutil.Fixtures(t)
	cases := readCases(t)
	tmp := t.TempDir()
	gzPath := filepath.Join(dir, OpenAIFile)

	// An uncompressed OpenAI file, and a folder holding the .gz file.
	f, err := os.Open(gzPath)
	if err != nil {
		t.Fatal(err)
	}
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	var plain strings.Builder
	if _, err := bufio.NewReader(zr).WriteTo(&plain); err != nil {
		t.Fatal(err)
	}
	f.Close()
	plainPath := filepath.Join(tmp, "bpe_simple_vocab_16e6.txt")
	if err := os.WriteFile(plainPath, []byte(plain.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	gzDir := filepath.Join(tmp, "gzfolder")
	if err := os.Mkdir(gzDir, 0o755); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(gzPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(gzDir, OpenAIFile), raw, 0o644); err != nil {
		t.Fatal(err)
	}

	// A model folder with the tokenizer files in its tokenizer/ subfolder.
	modelDir := filepath.Join(tmp, "model")
	if err := os.MkdirAll(filepath.Join(modelDir, "tokenizer"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{VocabFile, MergesFile} {
		raw, err := os.ReadFile(filepath.Join(dir, "clip-tiny-openai", name))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(modelDir, "tokenizer", name), raw, 0o644); err != nil {
			t.Fatal(err)
		}
	}

	paths := []string{
		plainPath,
		gzDir,
		modelDir,
		filepath.Join(dir, "clip-tiny-openai", VocabFile),
		filepath.Join(dir, "clip-tiny-openai", MergesFile),
	}
	want := refTokenizers(t)["openai-gz"]
	for _, p := range paths {
		tok, err := Load(p)
		if err != nil {
			t.Errorf("Load(%s): %v", p, err)
			continue
		}
		for _, c := range cases {
			if got := tok.Encode(c.Text); !slices.Equal(got, want.Encode(c.Text)) {
				t.Errorf("Load(%s): %q encodes to %v", p, c.Text, got)
				break
			}
		}
	}
}

func TestLoadErrors(t *testing.T) {
	tmp := t.TempDir()
	mk := func(name string, files map[string]string) string {
		d := filepath.Join(tmp, name)
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		for f, content := range files {
			if err := os.WriteFile(filepath.Join(d, f), []byte(content), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		return d
	}
	// A minimal valid vocabulary, for the variations below.
	var vocab strings.Builder
	vocab.WriteString("{")
	for id, tok := range baseTokens() {
		b, _ := json.Marshal(tok)
		vocab.WriteString(string(b))
		vocab.WriteString(":")
		vocab.WriteString(itoa(id))
		vocab.WriteString(",")
	}
	goodVocab := vocab.String() + `"in</w>":512,"<|startoftext|>":513,"<|endoftext|>":514}`
	noSpecial := vocab.String() + `"in</w>":512}`

	tests := []struct {
		name  string
		path  string
		parts []string // substrings the error must contain
	}{
		{"missing", filepath.Join(tmp, "nope"), []string{"nope"}},
		{"empty folder", mk("empty", nil), []string{"vocab.json", "merges.txt", OpenAIFile}},
		{"vocab only", mk("vonly", map[string]string{VocabFile: goodVocab}), []string{"no merges.txt"}},
		{"merges only", mk("monly", map[string]string{MergesFile: "#version: 0.2\ni n</w>\n"}), []string{"no vocab.json"}},
		{"bad json", mk("badjson", map[string]string{VocabFile: "[1,2", MergesFile: "#version: 0.2\n"}), []string{"vocab.json", "JSON"}},
		{"sparse ids", mk("sparse", map[string]string{VocabFile: `{"a":0,"b":5}`, MergesFile: "#version: 0.2\n"}), []string{"vocab.json", "ids must be"}},
		{"bad merge line", mk("badline", map[string]string{VocabFile: goodVocab, MergesFile: "#version: 0.2\ni n</w>\ni n x\n"}), []string{"merges.txt", "line 3"}},
		{"unknown merge", mk("unknown", map[string]string{VocabFile: goodVocab, MergesFile: "#version: 0.2\ni n</w>\nt h\n"}), []string{"merges.txt", "line 3", `"th"`}},
		{"no special", mk("nospecial", map[string]string{VocabFile: noSpecial, MergesFile: "#version: 0.2\ni n</w>\n"}), []string{"vocab.json", "<|startoftext|>"}},
		{"not a vocabulary", mk("junk", map[string]string{"x.txt.gz": "\x1f\x8bnot gzip"}) + "/x.txt.gz", []string{"x.txt.gz"}},
		{"short openai file", mk("short", map[string]string{"m.txt": "header only\n"}) + "/m.txt", []string{"m.txt", "no merge rules"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Load(tc.path)
			if err == nil {
				t.Fatalf("Load(%s) succeeded", tc.path)
			}
			for _, p := range tc.parts {
				if !strings.Contains(err.Error(), p) {
					t.Errorf("error %q does not mention %q", err, p)
				}
			}
		})
	}
	// And the good minimal vocabulary loads and merges "in" at the end of a piece only.
	tok, err := Load(mk("good", map[string]string{VocabFile: goodVocab, MergesFile: "#version: 0.2\ni n</w>\n"}))
	if err != nil {
		t.Fatal(err)
	}
	if got := tok.Encode("in"); !slices.Equal(got, []int{513, 512, 514}) {
		t.Errorf("Encode(in) = %v, want [513 512 514]", got)
	}
	if got, want := tok.Encode("ins"), []int{513, int(tok.byteID['i']), int(tok.byteID['n']), int(tok.byteEnd['s']), 514}; !slices.Equal(got, want) {
		t.Errorf("Encode(ins) = %v, want %v", got, want)
	}
}

func itoa(n int) string {
	b, _ := json.Marshal(n)
	return string(b)
}

// Batch agrees with the reference CLIP inputs made by transformers' tokenizer.
func TestBatchMatchesReference(t *testing.T) {
	dir := testutil.Fixtures(t, "clip-tiny-openai")
	raw, err := os.ReadFile(filepath.Join(dir, "inputs.json"))
	if err != nil {
		t.Fatal(err)
	}
	var inputs struct {
		Captions []string `json:"captions"`
	}
	if err := json.Unmarshal(raw, &inputs); err != nil {
		t.Fatal(err)
	}
	shape, wantIDs := testutil.ReadNpyInt64(t, filepath.Join(dir, "input_ids.npy"))
	_, wantMask := testutil.ReadNpyInt64(t, filepath.Join(dir, "attention_mask.npy"))
	if len(shape) != 2 || shape[0] != len(inputs.Captions) {
		t.Fatalf("input_ids.npy shape %v for %d captions", shape, len(inputs.Captions))
	}
	for name, tok := range refTokenizers(t) {
		ids, mask := tok.Batch(inputs.Captions, shape[1])
		if !slices.Equal(ids, wantIDs) {
			t.Errorf("%s: Batch ids differ from input_ids.npy", name)
		}
		if !slices.Equal(mask, wantMask) {
			t.Errorf("%s: Batch mask differs from attention_mask.npy", name)
		}
	}
}

// Batch rows are EncodeContext's ids, then zeros; the mask marks the ids.
func TestBatchLayout(t *testing.T) {
	tok := refTokenizers(t)["openai-gz"]
	var texts []string
	for _, c := range readCases(t) {
		texts = append(texts, c.Text)
	}
	for _, ctx := range []int{77, 5, 1, 0} {
		ids, mask := tok.Batch(texts, ctx)
		width := ctx
		if ctx < 1 {
			for _, s := range texts {
				width = max(width, len(tok.Encode(s)))
			}
		}
		if len(ids) != len(texts)*width || len(mask) != len(ids) {
			t.Fatalf("ctx %d: %d ids, %d mask for %d texts of width %d", ctx, len(ids), len(mask), len(texts), width)
		}
		for i, s := range texts {
			want := tok.EncodeContext(s, ctx)
			row, mrow := ids[i*width:(i+1)*width], mask[i*width:(i+1)*width]
			for j := range width {
				var id, m int64
				if j < len(want) {
					id, m = int64(want[j]), 1
				}
				if row[j] != id || mrow[j] != m {
					t.Fatalf("ctx %d, text %d, column %d: id %d mask %d, want %d %d", ctx, i, j, row[j], mrow[j], id, m)
				}
			}
			if len(want) > 0 && want[len(want)-1] != tok.EndID() {
				t.Fatalf("ctx %d, text %d: row does not end with the end id: %v", ctx, i, want)
			}
		}
	}
	if ids, mask := tok.Batch(nil, 77); len(ids) != 0 || len(mask) != 0 {
		t.Errorf("Batch(nil) = %d ids, %d mask", len(ids), len(mask))
	}
}

func TestEncodeContext(t *testing.T) {
	tok := refTokenizers(t)["openai-gz"]
	text := "a dog runs across the grass while two children watch"
	full := tok.Encode(text)
	for ctx := 1; ctx <= len(full)+2; ctx++ {
		got := tok.EncodeContext(text, ctx)
		if ctx >= len(full) {
			if !slices.Equal(got, full) {
				t.Errorf("ctx %d: %v, want the full %v", ctx, got, full)
			}
			continue
		}
		if len(got) != ctx || got[ctx-1] != tok.EndID() || !slices.Equal(got[:ctx-1], full[:ctx-1]) {
			t.Errorf("ctx %d: %v from %v", ctx, got, full)
		}
	}
	if got := tok.EncodeContext(text, 0); !slices.Equal(got, full) {
		t.Errorf("ctx 0 cut the ids: %v", got)
	}
}

// Many goroutines encoding at once (run with -race) agree with one encoding
// alone, and the shared cache does not mix pieces up.
func TestConcurrentEncode(t *testing.T) {
	cases := readCases(t)
	tok, err := Load(testutil.Fixtures(t, OpenAIFile)) // a fresh, empty cache
	if err != nil {
		t.Fatal(err)
	}
	const workers = 8
	var wg sync.WaitGroup
	errs := make(chan string, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := range cases {
				c := cases[(k*7+w*37)%len(cases)] // each worker in its own order
				if got := tok.EncodeContext(c.Text, 77); !slices.Equal(got, c.IDs77) {
					errs <- c.Text
					return
				}
				if len(c.IDs) >= 2 {
					if got := tok.Decode(c.IDs[1 : len(c.IDs)-1]); got != c.Decoded {
						errs <- c.Text
						return
					}
				}
			}
			texts := make([]string, 16)
			for i := range texts {
				texts[i] = cases[(w+i)%len(cases)].Text
			}
			tok.Batch(texts, 77)
		}()
	}
	wg.Wait()
	close(errs)
	for s := range errs {
		t.Errorf("concurrent encode of %q differs from the reference", s)
	}
}

// clearCache empties the piece cache.
func (t *Tokenizer) clearCache() {
	for i := range t.cache {
		sh := &t.cache[i]
		sh.mu.Lock()
		sh.m = nil
		sh.mu.Unlock()
	}
}

func BenchmarkEncode(b *testing.B) {
	cases := readCases(b)
	tok := refTokenizers(b)["openai-gz"]
	for i := 0; b.Loop(); i++ {
		tok.EncodeContext(cases[i%len(cases)].Text, 77)
	}
}

func BenchmarkEncodeParallel(b *testing.B) {
	cases := readCases(b)
	tok := refTokenizers(b)["openai-gz"]
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			tok.EncodeContext(cases[i%len(cases)].Text, 77)
			i++
		}
	})
}

// BenchmarkEncodeUncached measures the BPE itself: a fresh tokenizer per
// round, so every piece misses the cache once.
func BenchmarkEncodeUncached(b *testing.B) {
	cases := readCases(b)
	base := refTokenizers(b)["openai-gz"]
	for b.Loop() {
		b.StopTimer()
		base.clearCache()
		b.StartTimer()
		for _, c := range cases {
			base.EncodeContext(c.Text, 77)
		}
	}
}
