package tokenizer

import (
	"container/heap"
	"fmt"
	"maps"
	"slices"
	"strings"
)

// MinVocabSize is the smallest vocabulary Train makes: the 512 byte tokens
// and the two special tokens.
const MinVocabSize = 512 + 2

// Train learns a byte-level BPE vocabulary of vocabSize tokens from captions,
// laid out as OpenAI's: ids 0..255 are the bytes (in the order of OpenAI's
// bytes_to_unicode), 256..511 the same bytes ending a piece ("x</w>"), then
// one token per merge in the order learnt, then "<|startoftext|>" and
// "<|endoftext|>" last.
//
// The captions are cleaned and split exactly as Encode does (the literal
// special token strings are left out). Each merge joins the adjacent pair of
// tokens that occurs most often across all pieces; ties go to the pair with
// the smaller left id, then the smaller right id, so the result depends only
// on the multiset of captions, not on their order. A merge whose result is
// already a token reuses that token's id, as Hugging Face's trainer does.
//
// When the captions run out of pairs before vocabSize is reached, the
// vocabulary is smaller: size a model's embedding by VocabSize, not by
// vocabSize.
func Train(captions []string, vocabSize int) (*Tokenizer, error) {
	return TrainProgress(captions, vocabSize, nil)
}

// TrainProgress is Train reporting its merges to progress (when not nil): (0, total)
// before the first, then after each merge, where total is the merges vocabSize asks
// for; when the captions run out of pairs first, a last call (done, done) ends it.
func TrainProgress(captions []string, vocabSize int, progress func(done, total int)) (*Tokenizer, error) {
	if vocabSize < MinVocabSize {
		return nil, fmt.Errorf("tokenizer: vocabulary size %d is below the minimum %d (256 bytes, their </w> forms, 2 special tokens)", vocabSize, MinVocabSize)
	}
	counts := make(map[string]int64)
	for _, c := range captions {
		forEachPiece(clean(c), func(piece string) {
			if piece == startText || piece == endText {
				return
			}
			if _, ok := counts[piece]; !ok {
				piece = strings.Clone(piece)
			}
			counts[piece]++
		})
	}
	pieces := slices.Sorted(maps.Keys(counts))

	var first [256]int32 // id of each byte, by OpenAI's order
	for id, b := range byteOrder {
		first[b] = int32(id)
	}
	tokens := baseTokens()
	ids := make(map[string]int32, vocabSize)
	for id, tok := range tokens {
		ids[tok] = int32(id)
	}

	c := &corpus{
		words: make([][]int32, len(pieces)),
		freq:  make([]int64, len(pieces)),
		count: make(map[uint64]int64),
		where: make(map[uint64][]int32),
		seen:  make([]int, len(pieces)),
	}
	for w, p := range pieces {
		word := make([]int32, len(p))
		for i := 0; i < len(p); i++ {
			word[i] = first[p[i]]
		}
		word[len(word)-1] += 256 // the "</w>" form
		c.words[w], c.freq[w] = word, counts[p]
		for i := 0; i+1 < len(word); i++ {
			k := pair{word[i], word[i+1]}.key()
			c.count[k] += c.freq[w]
			c.addWhere(k, int32(w))
		}
	}
	for k, n := range c.count {
		c.queue = append(c.queue, queued{n, k})
	}
	heap.Init(&c.queue)

	var merges []mergeLine
	want := vocabSize - len(tokens) - 2 // merges asked for (a reused id makes no token: more may be made)
	report := func(done, total int) {
		if progress != nil {
			progress(done, total)
		}
	}
	report(0, want)
	for len(tokens)+2 < vocabSize {
		p, ok := c.best()
		if !ok {
			break
		}
		made := tokens[p.left] + tokens[p.right]
		id, ok := ids[made]
		if !ok {
			id = int32(len(tokens))
			tokens = append(tokens, made)
			ids[made] = id
		}
		merges = append(merges, mergeLine{left: tokens[p.left], right: tokens[p.right], line: len(merges) + 2})
		c.merge(p, id, len(merges))
		report(len(merges), max(want, len(merges)))
	}
	if len(merges) < want {
		report(len(merges), len(merges))
	}
	tokens = append(tokens, startText, endText)
	t, err := build(tokens, merges)
	if err != nil {
		return nil, fmt.Errorf("tokenizer: training: %w", err)
	}
	return t, nil
}

// corpus holds the distinct pieces being merged and the pair statistics.
type corpus struct {
	words [][]int32          // each distinct piece as token ids
	freq  []int64            // how often each piece occurs
	count map[uint64]int64   // pair -> occurrences, weighted by freq
	where map[uint64][]int32 // pair -> words that had it (may hold stale entries)
	queue pairQueue          // pairs by count; entries whose count is stale are skipped
	seen  []int              // per word: the last merge step that visited it
}

func (c *corpus) addWhere(k uint64, w int32) {
	ws := c.where[k]
	if len(ws) == 0 || ws[len(ws)-1] != w {
		c.where[k] = append(ws, w)
	}
}

// best pops the most frequent pair, or reports that none is left.
func (c *corpus) best() (pair, bool) {
	for c.queue.Len() > 0 {
		q := heap.Pop(&c.queue).(queued)
		if q.count > 0 && c.count[q.key] == q.count {
			return pair{int32(q.key >> 32), int32(uint32(q.key))}, true
		}
	}
	return pair{}, false
}

// merge replaces every occurrence of p by id in all words and updates the
// pair counts; step numbers the merge.
func (c *corpus) merge(p pair, id int32, step int) {
	delta := make(map[uint64]int64)
	key := p.key()
	for _, w := range c.where[key] {
		if c.seen[w] == step {
			continue
		}
		c.seen[w] = step
		word, f := c.words[w], c.freq[w]
		found := false
		for i := 0; i+1 < len(word); i++ {
			if word[i] == p.left && word[i+1] == p.right {
				found = true
				break
			}
		}
		if !found {
			continue
		}
		for i := 0; i+1 < len(word); i++ {
			delta[pair{word[i], word[i+1]}.key()] -= f
		}
		n := 0
		for i := 0; i < len(word); i++ {
			if i+1 < len(word) && word[i] == p.left && word[i+1] == p.right {
				word[n] = id
				i++
			} else {
				word[n] = word[i]
			}
			n++
		}
		word = word[:n]
		c.words[w] = word
		for i := 0; i+1 < len(word); i++ {
			k := pair{word[i], word[i+1]}.key()
			delta[k] += f
			if word[i] == id || word[i+1] == id {
				c.addWhere(k, w)
			}
		}
	}
	delete(c.where, key)
	for k, d := range delta {
		if d == 0 {
			continue
		}
		n := c.count[k] + d
		if n <= 0 {
			delete(c.count, k)
			continue
		}
		c.count[k] = n
		heap.Push(&c.queue, queued{n, k})
	}
}

type queued struct {
	count int64
	key   uint64
}

// pairQueue is a max-heap by count, then min by pair key (left id, right id).
type pairQueue []queued

func (q pairQueue) Len() int { return len(q) }
func (q pairQueue) Less(i, j int) bool {
	if q[i].count != q[j].count {
		return q[i].count > q[j].count
	}
	return q[i].key < q[j].key
}
func (q pairQueue) Swap(i, j int) { q[i], q[j] = q[j], q[i] }
func (q *pairQueue) Push(x any)   { *q = append(*q, x.(queued)) }
func (q *pairQueue) Pop() any {
	old := *q
	x := old[len(old)-1]
	*q = old[:len(old)-1]
	return x
}
