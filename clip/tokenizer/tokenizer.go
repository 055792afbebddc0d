// Package tokenizer is CLIP's byte-level BPE tokenizer, the exact behaviour of
// OpenAI's simple_tokenizer.py, in pure Go.
//
// A Tokenizer is loaded from a Hugging Face model folder (vocab.json and
// merges.txt) or from OpenAI's bpe_simple_vocab_16e6.txt.gz; both give the same
// ids. Train learns a new vocabulary from captions for models trained from
// scratch, and Save writes it in the Hugging Face format.
//
// # Text Handling
//
// Encode cleans the text as OpenAI does (with Unicode NFC normalisation
// standing in for ftfy.fix_text): HTML entities are unescaped twice, runs of
// white space become one space, the ends are trimmed and the text is lower
// cased with Python's rules. It is then split by OpenAI's pattern (the special
// token strings, the contractions 's 't 're 've 'm 'll 'd, runs of letters,
// single digits, runs of other non-space characters) and each piece, as UTF-8
// bytes, is encoded by byte pair merges. The literal strings
// "<|startoftext|>" and "<|endoftext|>" in a text encode to the special ids.
//
// # Concurrency
//
// A Tokenizer is safe for concurrent use. It caches the merges of each piece it
// has seen (a bounded cache), so tokenising a caption corpus costs little more
// than splitting it.
package tokenizer

import (
	"strings"
	"sync"
)

// Tokenizer is a loaded or trained CLIP BPE vocabulary. The zero value is not
// usable; get one from Load or Train.
type Tokenizer struct {
	tokens  []string // id -> token in vocab.json's spelling ("a", "dog</w>")
	decoded [][]byte // id -> the token's raw bytes ("</w>" kept, as OpenAI's decode)
	merges  []pair   // merge rules in rank order, for Save
	rules   map[uint64]rule
	byteID  [256]int32 // id of a byte inside a piece
	byteEnd [256]int32 // id of a byte ending a piece ("x</w>")
	start   int
	end     int

	cache [cacheShards]cacheShard
}

type pair struct{ left, right int32 }

func (p pair) key() uint64 { return uint64(uint32(p.left))<<32 | uint64(uint32(p.right)) }

// rule is what a merge does: its rank (lower merges first) and the id it makes.
type rule struct{ rank, id int32 }

const (
	cacheShards   = 64
	cacheShardMax = 4096 // entries a shard holds before it is emptied
	cachePieceMax = 128  // longer pieces are not cached
)

type cacheShard struct {
	mu sync.RWMutex
	m  map[string][]int32
}

// VocabSize is the number of token ids, the special tokens included.
func (t *Tokenizer) VocabSize() int { return len(t.tokens) }

// StartID is the id of "<|startoftext|>" (49406 in OpenAI's vocabulary).
func (t *Tokenizer) StartID() int { return t.start }

// EndID is the id of "<|endoftext|>" (49407 in OpenAI's vocabulary).
func (t *Tokenizer) EndID() int { return t.end }

// Encode returns the ids of text: the start id, the BPE ids, the end id, not
// truncated.
func (t *Tokenizer) Encode(text string) []int {
	ids := make([]int, 0, len(text)/4+4)
	ids = append(ids, t.start)
	ids = t.appendText(ids, text)
	return append(ids, t.end)
}

// EncodeContext is Encode cut to ctx ids: when the ids do not fit, the first
// ctx are kept and the last of them is replaced by the end id (OpenAI's
// tokenize with truncate=True). A ctx below 1 means no limit.
func (t *Tokenizer) EncodeContext(text string, ctx int) []int {
	ids := t.Encode(text)
	if ctx > 0 && len(ids) > ctx {
		ids = ids[:ctx]
		ids[ctx-1] = t.end
	}
	return ids
}

// Batch encodes texts with EncodeContext into a row-major [len(texts), ctx]
// matrix of ids, zero-padded after the end id, and its attention mask (1 on
// the ids of a text, 0 on padding). A ctx below 1 sizes the rows to the
// longest text.
func (t *Tokenizer) Batch(texts []string, ctx int) (ids, mask []int64) {
	rows := make([][]int, len(texts))
	width := ctx
	for i, text := range texts {
		rows[i] = t.EncodeContext(text, ctx)
		if ctx < 1 && len(rows[i]) > width {
			width = len(rows[i])
		}
	}
	if width < 1 {
		return []int64{}, []int64{}
	}
	ids = make([]int64, len(texts)*width)
	mask = make([]int64, len(texts)*width)
	for i, row := range rows {
		for j, id := range row {
			ids[i*width+j] = int64(id)
			mask[i*width+j] = 1
		}
	}
	return ids, mask
}

// Decode is OpenAI's decode: the tokens' bytes joined, decoded as UTF-8 with
// invalid sequences replaced by U+FFFD, every "</w>" replaced by a space. Ids
// outside the vocabulary are skipped. Pass the ids without the start and end
// tokens to get the cleaned text back, each piece followed by a space.
func (t *Tokenizer) Decode(ids []int) string {
	var b []byte
	for _, id := range ids {
		if id >= 0 && id < len(t.decoded) {
			b = append(b, t.decoded[id]...)
		}
	}
	return strings.ReplaceAll(decodeUTF8(b), "</w>", " ")
}

// appendText appends the BPE ids of text, without start and end tokens.
func (t *Tokenizer) appendText(ids []int, text string) []int {
	var word []int32 // scratch for bpe, reused across pieces
	forEachPiece(clean(text), func(piece string) {
		switch piece {
		case startText:
			ids = append(ids, t.start)
			return
		case endText:
			ids = append(ids, t.end)
			return
		}
		if len(piece) > cachePieceMax {
			word = t.bpe(word[:0], piece)
			ids = appendIDs(ids, word)
			return
		}
		sh := &t.cache[shardOf(piece)]
		sh.mu.RLock()
		cached, ok := sh.m[piece]
		sh.mu.RUnlock()
		if ok {
			ids = appendIDs(ids, cached)
			return
		}
		word = t.bpe(word[:0], piece)
		ids = appendIDs(ids, word)
		entry := append([]int32(nil), word...)
		sh.mu.Lock()
		if len(sh.m) >= cacheShardMax || sh.m == nil {
			sh.m = make(map[string][]int32, 64)
		}
		sh.m[strings.Clone(piece)] = entry
		sh.mu.Unlock()
	})
	return ids
}

// shardOf spreads pieces over the cache shards; it only has to be cheap and
// to keep the goroutines of a data loader from queueing on one lock.
func shardOf(piece string) int {
	n := len(piece)
	h := uint32(n)*31 + uint32(piece[0])
	h = h*31 + uint32(piece[n-1])
	h = h*31 + uint32(piece[n/2])
	return int(h % cacheShards)
}

func appendIDs(ids []int, word []int32) []int {
	for _, id := range word {
		ids = append(ids, int(id))
	}
	return ids
}

// bpe appends to word the ids of one piece: its bytes, the last one in its
// "</w>" form, merged pair by pair, always the lowest ranked pair present,
// each merge applied to all its non-overlapping occurrences left to right.
func (t *Tokenizer) bpe(word []int32, piece string) []int32 {
	for i := 0; i < len(piece)-1; i++ {
		word = append(word, t.byteID[piece[i]])
	}
	word = append(word, t.byteEnd[piece[len(piece)-1]])
	for len(word) > 1 {
		best := rule{rank: -1}
		var left, right int32
		for i := 0; i+1 < len(word); i++ {
			r, ok := t.rules[pair{word[i], word[i+1]}.key()]
			if ok && (best.rank < 0 || r.rank < best.rank) {
				best, left, right = r, word[i], word[i+1]
			}
		}
		if best.rank < 0 {
			break
		}
		n := 0
		for i := 0; i < len(word); i++ {
			if i+1 < len(word) && word[i] == left && word[i+1] == right {
				word[n] = best.id
				i++
			} else {
				word[n] = word[i]
			}
			n++
		}
		word = word[:n]
	}
	return word
}
