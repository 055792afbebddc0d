package tokenizer

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"goclip/internal/atomicfile"
)

// File names of the vocabulary formats.
const (
	VocabFile  = "vocab.json"                   // Hugging Face: token -> id
	MergesFile = "merges.txt"                   // Hugging Face: merge rules in rank order
	JSONFile   = "tokenizer.json"               // Hugging Face tokenizers: both in one file (all transformers 5 writes)
	OpenAIFile = "bpe_simple_vocab_16e6.txt.gz" // OpenAI: merge rules, ids implied
)

// openAIMerges is how many merges OpenAI's simple_tokenizer.py reads from its
// file (lines 1 to 49152-256-2 after the header): a 49408-token vocabulary.
const openAIMerges = 49152 - 256 - 2

// maxMergesBytes bounds a gzipped merges file once inflated.
const maxMergesBytes = 64 << 20

// byteRune is OpenAI's bytes_to_unicode: every byte as a printable character,
// the printable Latin-1 bytes as themselves and the others as U+0100 onwards.
// byteOrder lists the bytes in the order of that table, which is the order of
// the first 256 ids (and of the next 256, their "</w>" forms).
var byteRune [256]rune
var byteOrder [256]byte
var runeByte map[rune]byte

func init() {
	printable := func(b int) bool {
		return ('!' <= b && b <= '~') || (0xa1 <= b && b <= 0xac) || (0xae <= b && b <= 0xff)
	}
	k, extra := 0, rune(0)
	for b := 0; b < 256; b++ {
		if printable(b) {
			byteRune[b] = rune(b)
			byteOrder[k] = byte(b)
			k++
		}
	}
	for b := 0; b < 256; b++ {
		if !printable(b) {
			byteRune[b] = 256 + extra
			byteOrder[k] = byte(b)
			extra++
			k++
		}
	}
	runeByte = make(map[rune]byte, 256)
	for b, r := range byteRune {
		runeByte[r] = byte(b)
	}
}

// baseTokens returns the first 512 tokens of a byte-level vocabulary: the 256
// byte characters, then the same followed by "</w>".
func baseTokens() []string {
	tokens := make([]string, 0, 512)
	for _, b := range byteOrder {
		tokens = append(tokens, string(byteRune[b]))
	}
	for _, b := range byteOrder {
		tokens = append(tokens, string(byteRune[b])+"</w>")
	}
	return tokens
}

// mergeLine is one merge rule as read from a file, for error messages.
type mergeLine struct {
	left, right string
	line        int
}

// Load reads a vocabulary. path is a folder holding vocab.json and merges.txt, or
// else tokenizer.json (a Hugging Face model folder, as transformers 5's
// save_pretrained writes it with tokenizer.json only; or its tokenizer/ subfolder
// holding them), or bpe_simple_vocab_16e6.txt.gz; one of those files itself; or any
// OpenAI-format merges file (gzipped or not). Errors name the file at fault.
func Load(path string) (*Tokenizer, error) {
	info, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("tokenizer: %w", err)
	}
	if !info.IsDir() {
		switch filepath.Base(path) {
		case VocabFile, MergesFile:
			return loadHF(filepath.Dir(path))
		case JSONFile:
			return loadJSON(path)
		}
		return loadOpenAI(path)
	}
	vocab, merges := filepath.Join(path, VocabFile), filepath.Join(path, MergesFile)
	hasVocab, hasMerges := exists(vocab), exists(merges)
	switch {
	case hasVocab && hasMerges:
		return loadHF(path)
	case exists(filepath.Join(path, JSONFile)):
		return loadJSON(filepath.Join(path, JSONFile))
	case exists(filepath.Join(path, OpenAIFile)):
		return loadOpenAI(filepath.Join(path, OpenAIFile))
	case hasVocab:
		return nil, fmt.Errorf("tokenizer: %s has %s but no %s", path, VocabFile, MergesFile)
	case hasMerges:
		return nil, fmt.Errorf("tokenizer: %s has %s but no %s", path, MergesFile, VocabFile)
	case exists(filepath.Join(path, "tokenizer", VocabFile)) || exists(filepath.Join(path, "tokenizer", JSONFile)):
		return Load(filepath.Join(path, "tokenizer")) // a model folder with the tokenizer beside it
	}
	return nil, fmt.Errorf("tokenizer: %s holds neither %s and %s, nor %s, nor %s", path, VocabFile, MergesFile, JSONFile, OpenAIFile)
}

func exists(path string) bool {
	info, err := os.Stat(path)
	return err == nil && !info.IsDir()
}

// loadHF reads vocab.json and merges.txt from dir.
func loadHF(dir string) (*Tokenizer, error) {
	vocabPath, mergesPath := filepath.Join(dir, VocabFile), filepath.Join(dir, MergesFile)
	raw, err := os.ReadFile(vocabPath)
	if err != nil {
		return nil, fmt.Errorf("tokenizer: %w", err)
	}
	var vocab map[string]int
	if err := json.Unmarshal(raw, &vocab); err != nil {
		return nil, fmt.Errorf("tokenizer: %s: not a JSON object of token ids: %w", vocabPath, err)
	}
	tokens, err := vocabTokens(vocab)
	if err != nil {
		return nil, fmt.Errorf("tokenizer: %s: %w", vocabPath, err)
	}
	raw, err = os.ReadFile(mergesPath)
	if err != nil {
		return nil, fmt.Errorf("tokenizer: %w", err)
	}
	lines := strings.Split(strings.TrimRight(string(raw), "\r\n"), "\n")
	merges := make([]mergeLine, 0, len(lines))
	for i, line := range lines {
		if i == 0 && strings.HasPrefix(line, "#version") {
			continue
		}
		m, err := parseMerge(line, i+1)
		if err != nil {
			return nil, fmt.Errorf("tokenizer: %s: %w", mergesPath, err)
		}
		merges = append(merges, m)
	}
	t, err := build(tokens, merges)
	if err != nil {
		return nil, fmt.Errorf("tokenizer: %s, %s: %w", vocabPath, MergesFile, err)
	}
	return t, nil
}

// vocabTokens lists a token -> id map by id; the ids must be 0..len-1, each once.
func vocabTokens(vocab map[string]int) ([]string, error) {
	tokens := make([]string, len(vocab))
	set := make([]bool, len(vocab))
	for tok, id := range vocab {
		if id < 0 || id >= len(vocab) || set[id] {
			return nil, fmt.Errorf("ids must be 0..%d, each once; got %d for %q", len(vocab)-1, id, tok)
		}
		tokens[id], set[id] = tok, true
	}
	return tokens, nil
}

// loadJSON reads the vocabulary and merges of a tokenizers tokenizer.json, which must
// describe CLIP's BPE: model type "BPE" with end-of-word suffix "</w>" and no
// continuing-subword prefix. Its merges are "left right" strings (tokenizers before
// 0.20) or [left, right] pairs. The normaliser and pre-tokeniser it names are not read:
// the text is cleaned and split as OpenAI's tokenizer does (see Tokenizer).
func loadJSON(path string) (*Tokenizer, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("tokenizer: %w", err)
	}
	var file struct {
		Model struct {
			Type           string            `json:"type"`
			Vocab          map[string]int    `json:"vocab"`
			Merges         []json.RawMessage `json:"merges"`
			EndOfWord      *string           `json:"end_of_word_suffix"`
			ContinuingWord *string           `json:"continuing_subword_prefix"`
		} `json:"model"`
	}
	if err := json.Unmarshal(raw, &file); err != nil {
		return nil, fmt.Errorf("tokenizer: %s: %w", path, err)
	}
	m := file.Model
	switch {
	case m.Type != "BPE":
		return nil, fmt.Errorf("tokenizer: %s: model type %q, want CLIP's byte-level \"BPE\"", path, m.Type)
	case m.EndOfWord == nil || *m.EndOfWord != "</w>":
		return nil, fmt.Errorf("tokenizer: %s: model.end_of_word_suffix is not \"</w>\": not CLIP's BPE", path)
	case m.ContinuingWord != nil && *m.ContinuingWord != "":
		return nil, fmt.Errorf("tokenizer: %s: model.continuing_subword_prefix %q: not CLIP's BPE", path, *m.ContinuingWord)
	}
	tokens, err := vocabTokens(m.Vocab)
	if err != nil {
		return nil, fmt.Errorf("tokenizer: %s: model.vocab: %w", path, err)
	}
	merges := make([]mergeLine, len(m.Merges))
	for i, r := range m.Merges {
		var line string
		var pair []string
		switch {
		case json.Unmarshal(r, &line) == nil:
			if merges[i], err = parseMerge(line, i+1); err != nil {
				return nil, fmt.Errorf("tokenizer: %s: model.merges: %w", path, err)
			}
		case json.Unmarshal(r, &pair) == nil && len(pair) == 2:
			merges[i] = mergeLine{left: pair[0], right: pair[1], line: i + 1}
		default:
			return nil, fmt.Errorf("tokenizer: %s: model.merges entry %d is %s, want \"left right\" or [left, right]", path, i+1, r)
		}
	}
	t, err := build(tokens, merges)
	if err != nil {
		return nil, fmt.Errorf("tokenizer: %s: %w", path, err)
	}
	return t, nil
}

// loadOpenAI reads an OpenAI merges file: a header line, then merge rules, of
// which the first 48894 are used; the ids are implied by the order.
func loadOpenAI(path string) (*Tokenizer, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("tokenizer: %w", err)
	}
	if len(raw) >= 2 && raw[0] == 0x1f && raw[1] == 0x8b {
		zr, err := gzip.NewReader(bytes.NewReader(raw))
		if err == nil {
			// A few kilobytes of gzip can inflate to gigabytes: read no more than
			// any merges file holds (OpenAI's is 1.6 MB).
			raw, err = io.ReadAll(io.LimitReader(zr, maxMergesBytes+1))
			if err == nil && len(raw) > maxMergesBytes {
				err = fmt.Errorf("inflates to more than %d bytes (not a merges file)", maxMergesBytes)
			}
		}
		if err != nil {
			return nil, fmt.Errorf("tokenizer: %s: %w", path, err)
		}
	}
	text := string(raw)
	lines := strings.Split(strings.TrimRight(text, "\r\n"), "\n")
	if len(lines) < 2 {
		return nil, fmt.Errorf("tokenizer: %s: no merge rules (want a header line, then lines like \"t h\")", path)
	}
	lines = lines[1:min(len(lines), 1+openAIMerges)]
	merges := make([]mergeLine, len(lines))
	tokens := baseTokens()
	for i, line := range lines {
		m, err := parseMerge(line, i+2)
		if err != nil {
			return nil, fmt.Errorf("tokenizer: %s: %w", path, err)
		}
		merges[i] = m
		tokens = append(tokens, m.left+m.right)
	}
	tokens = append(tokens, startText, endText)
	t, err := build(tokens, merges)
	if err != nil {
		return nil, fmt.Errorf("tokenizer: %s: %w", path, err)
	}
	return t, nil
}

func parseMerge(line string, n int) (mergeLine, error) {
	f := strings.Fields(line)
	if len(f) != 2 {
		return mergeLine{}, fmt.Errorf("line %d: want a merge rule of two tokens, got %q", n, line)
	}
	return mergeLine{left: f[0], right: f[1], line: n}, nil
}

// build makes a Tokenizer from its tokens, indexed by id, and its merge rules
// in rank order. As in OpenAI's dicts, a token string listed twice maps to its
// last id, and a merge rule listed twice has its last rank.
func build(tokens []string, merges []mergeLine) (*Tokenizer, error) {
	ids := make(map[string]int32, len(tokens))
	for id, tok := range tokens {
		ids[tok] = int32(id)
	}
	t := &Tokenizer{
		tokens:  tokens,
		decoded: make([][]byte, len(tokens)),
		merges:  make([]pair, len(merges)),
		rules:   make(map[uint64]rule, len(merges)),
	}
	for id, tok := range tokens {
		b := make([]byte, 0, len(tok))
		for _, r := range tok {
			c, ok := runeByte[r]
			if !ok {
				return nil, fmt.Errorf("token %d %q has a character %q outside the byte alphabet", id, tok, r)
			}
			b = append(b, c)
		}
		t.decoded[id] = b
	}
	special := func(s string) (int, error) {
		id, ok := ids[s]
		if !ok {
			return 0, fmt.Errorf("no %s token", s)
		}
		return int(id), nil
	}
	var err error
	if t.start, err = special(startText); err != nil {
		return nil, err
	}
	if t.end, err = special(endText); err != nil {
		return nil, err
	}
	for b := 0; b < 256; b++ {
		s := string(byteRune[b])
		id, ok := ids[s]
		idEnd, okEnd := ids[s+"</w>"]
		if !ok || !okEnd {
			return nil, fmt.Errorf("the vocabulary lacks byte 0x%02x as %q or %q", b, s, s+"</w>")
		}
		t.byteID[b], t.byteEnd[b] = id, idEnd
	}
	for rank, m := range merges {
		left, okL := ids[m.left]
		right, okR := ids[m.right]
		made, okM := ids[m.left+m.right]
		if !okL || !okR || !okM {
			return nil, fmt.Errorf("merge rule %d (line %d, %q %q): %q, %q or %q is not in the vocabulary",
				rank, m.line, m.left, m.right, m.left, m.right, m.left+m.right)
		}
		p := pair{left, right}
		t.merges[rank] = p
		t.rules[p.key()] = rule{rank: int32(rank), id: made}
	}
	return t, nil
}

// Save writes the vocabulary to dir (created if needed) in Hugging Face's
// format, vocab.json and merges.txt, each written to a temporary file and
// renamed into place. Load(dir) gives a Tokenizer with the same ids.
func (t *Tokenizer) Save(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("tokenizer: %w", err)
	}
	seen := make(map[string]int, len(t.tokens))
	var vocab bytes.Buffer
	vocab.WriteByte('{')
	enc := json.NewEncoder(&vocab)
	enc.SetEscapeHTML(false)
	for id, tok := range t.tokens {
		if prev, dup := seen[tok]; dup {
			return fmt.Errorf("tokenizer: cannot save: token %q has two ids, %d and %d, which %s cannot hold", tok, prev, id, VocabFile)
		}
		seen[tok] = id
		if id > 0 {
			vocab.WriteString(", ")
		}
		if err := enc.Encode(tok); err != nil {
			return fmt.Errorf("tokenizer: %w", err)
		}
		vocab.Truncate(vocab.Len() - 1) // Encode's newline
		fmt.Fprintf(&vocab, ": %d", id)
	}
	vocab.WriteString("}\n")

	var merges bytes.Buffer
	merges.WriteString("#version: 0.2\n")
	for _, p := range t.merges {
		merges.WriteString(t.tokens[p.left])
		merges.WriteByte(' ')
		merges.WriteString(t.tokens[p.right])
		merges.WriteByte('\n')
	}
	vocabPath, mergesPath := filepath.Join(dir, VocabFile), filepath.Join(dir, MergesFile)
	if err := atomicfile.WriteBytes(vocabPath, vocab.Bytes()); err != nil {
		return fmt.Errorf("tokenizer: writing %s: %w", vocabPath, err)
	}
	if err := atomicfile.WriteBytes(mergesPath, merges.Bytes()); err != nil {
		return fmt.Errorf("tokenizer: writing %s: %w", mergesPath, err)
	}
	return nil
}
