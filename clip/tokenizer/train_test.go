package tokenizer

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"unicode"
)

// captions makes a deterministic Flickr-like caption set.
func captions(n int, seed uint64) []string {
	rng := rand.New(rand.NewPCG(seed, 1))
	subjects := []string{"A dog", "Two children", "A man", "The woman", "A brown dog", "Three girls", "An old man", "A cyclist"}
	verbs := []string{"runs across", "is sitting on", "plays near", "jumps over", "walks along", "is standing by"}
	places := []string{"the grass.", "a wooden bench", "the beach at sunset", "a busy street!", "the river's edge", "a snowy hill, smiling"}
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s %s %s", subjects[rng.IntN(len(subjects))], verbs[rng.IntN(len(verbs))], places[rng.IntN(len(places))])
		if rng.IntN(5) == 0 {
			out[i] += " Caf\u00e9 &amp; 12 \U0001f415"
		}
	}
	return out
}

func pieces(text string) []string {
	var ps []string
	forEachPiece(clean(text), func(p string) { ps = append(ps, p) })
	return ps
}

func TestTrainRoundTrip(t *testing.T) {
	caps := captions(300, 1)
	const size = 620
	tok, err := Train(caps, size)
	if err != nil {
		t.Fatal(err)
	}
	if tok.VocabSize() != size || tok.StartID() != size-2 || tok.EndID() != size-1 {
		t.Fatalf("vocab %d, start %d, end %d; want %d, %d, %d", tok.VocabSize(), tok.StartID(), tok.EndID(), size, size-2, size-1)
	}
	if tok.tokens[0] != "!" || tok.tokens[256] != "!</w>" || len(tok.merges) != size-MinVocabSize {
		t.Fatalf("layout: token 0 %q, token 256 %q, %d merges", tok.tokens[0], tok.tokens[256], len(tok.merges))
	}
	dir := filepath.Join(t.TempDir(), "tok")
	if err := tok.Save(dir); err != nil {
		t.Fatal(err)
	}
	back, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(back.tokens, tok.tokens) || !slices.Equal(back.merges, tok.merges) {
		t.Fatal("Load(Save(t)) has other tokens or merges")
	}
	for _, c := range caps {
		ids := tok.Encode(c)
		if got := back.Encode(c); !slices.Equal(got, ids) {
			t.Fatalf("%q: %v after the round trip, %v before", c, got, ids)
		}
		// The ids decode back to the cleaned text, each piece followed by a space.
		want := strings.Join(pieces(c), " ") + " "
		if got := tok.Decode(ids[1 : len(ids)-1]); got != want {
			t.Fatalf("%q decodes to %q, want %q", c, got, want)
		}
	}
	// The frequent words became single tokens.
	for _, w := range []string{"dog", "the", "man", "a"} {
		ids := tok.Encode(w)
		if len(ids) != 3 || tok.tokens[ids[1]] != w+"</w>" {
			t.Errorf("%q encodes to %v, want the single token %q", w, ids, w+"</w>")
		}
	}
}

// The result depends on the captions, not on their order, and not on chance.
func TestTrainDeterministic(t *testing.T) {
	caps := captions(200, 2)
	save := func(cs []string) []byte {
		tok, err := Train(cs, 650)
		if err != nil {
			t.Fatal(err)
		}
		dir := t.TempDir()
		if err := tok.Save(dir); err != nil {
			t.Fatal(err)
		}
		var all []byte
		for _, f := range []string{VocabFile, MergesFile} {
			b, err := os.ReadFile(filepath.Join(dir, f))
			if err != nil {
				t.Fatal(err)
			}
			all = append(all, b...)
		}
		return all
	}
	first := save(caps)
	shuffled := slices.Clone(caps)
	rand.New(rand.NewPCG(9, 9)).Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
	for i, cs := range [][]string{caps, shuffled} {
		if !bytes.Equal(save(cs), first) {
			t.Errorf("run %d saved different files", i+2)
		}
	}
}

// naiveMerges learns merges the slow, obvious way: recount every pair of
// every piece before each merge.
func naiveMerges(caps []string, n int) []string {
	count := map[string]int{}
	for _, c := range caps {
		for _, p := range pieces(c) {
			if p != startText && p != endText {
				count[p]++
			}
		}
	}
	tokens := baseTokens()
	id := map[string]int{}
	for i, s := range tokens {
		id[s] = i
	}
	words := map[string][]string{}
	for p := range count {
		var w []string
		for i := 0; i < len(p); i++ {
			w = append(w, string(byteRune[p[i]]))
		}
		w[len(w)-1] += "</w>"
		words[p] = w
	}
	var merges []string
	for len(merges) < n {
		pairs := map[[2]string]int{}
		for p, w := range words {
			for i := 0; i+1 < len(w); i++ {
				pairs[[2]string{w[i], w[i+1]}] += count[p]
			}
		}
		var best [2]string
		bestN := 0
		for pr, c := range pairs {
			if c > bestN || (c == bestN && (id[pr[0]] < id[best[0]] || (id[pr[0]] == id[best[0]] && id[pr[1]] < id[best[1]]))) {
				best, bestN = pr, c
			}
		}
		if bestN == 0 {
			break
		}
		merged := best[0] + best[1]
		if _, ok := id[merged]; !ok {
			id[merged] = len(tokens)
			tokens = append(tokens, merged)
		}
		merges = append(merges, best[0]+" "+best[1])
		for p, w := range words {
			var nw []string
			for i := 0; i < len(w); i++ {
				if i+1 < len(w) && w[i] == best[0] && w[i+1] == best[1] {
					nw = append(nw, merged)
					i++
				} else {
					nw = append(nw, w[i])
				}
			}
			words[p] = nw
		}
	}
	return merges
}

func TestTrainMatchesNaive(t *testing.T) {
	caps := captions(150, 3)
	const n = 400 // more than the captions allow: both run out of pairs
	tok, err := Train(caps, MinVocabSize+n)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, p := range tok.merges {
		got = append(got, tok.tokens[p.left]+" "+tok.tokens[p.right])
	}
	t.Logf("%d merges, %d tokens", len(got), tok.VocabSize())
	if want := naiveMerges(caps, n); !slices.Equal(got, want) {
		t.Errorf("merges differ from the naive trainer:\n got  %q\n want %q", got, want)
	}
}

func TestTrainSmall(t *testing.T) {
	if _, err := Train(nil, MinVocabSize-1); err == nil {
		t.Error("Train accepted a vocabulary smaller than the byte alphabet")
	}
	// Too few pairs for the size asked: the vocabulary stops short.
	tok, err := Train([]string{"ab ab", "<|startoftext|>"}, 1000)
	if err != nil {
		t.Fatal(err)
	}
	if tok.VocabSize() != MinVocabSize+1 || tok.tokens[MinVocabSize-2] != "ab</w>" {
		t.Errorf("vocab %d, token %d %q; want %d tokens with ab</w> merged", tok.VocabSize(), MinVocabSize-2, tok.tokens[MinVocabSize-2], MinVocabSize+1)
	}
	if got := tok.Encode("ab abc"); len(got) != 6 || got[1] != MinVocabSize-2 {
		t.Errorf("Encode(ab abc) = %v", got)
	}
	// No captions: the bytes alone still encode anything.
	tok, err = Train(nil, 600)
	if err != nil {
		t.Fatal(err)
	}
	text := "Any text \u00e9 \U0001f600"
	ids := tok.Encode(text)
	var nbytes int
	for _, p := range pieces(text) {
		nbytes += len(p)
	}
	if tok.VocabSize() != MinVocabSize || len(ids) != nbytes+2 {
		t.Errorf("vocab %d, %d ids for %d bytes", tok.VocabSize(), len(ids), nbytes)
	}
	if got := strings.Map(dropSpace, tok.Decode(ids[1:len(ids)-1])); got != strings.Map(dropSpace, clean(text)) {
		t.Errorf("decoded %q", got)
	}
}

func dropSpace(r rune) rune {
	if unicode.IsSpace(r) {
		return -1
	}
	return r
}

func BenchmarkTrain(b *testing.B) {
	caps := captions(5000, 4)
	for b.Loop() {
		if _, err := Train(caps, 2000); err != nil {
			b.Fatal(err)
		}
	}
}

// Small random corpora over a three-letter alphabet, where ties and repeated
// letters are common, trained to exhaustion by both trainers.
func TestTrainMatchesNaiveRandom(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for trial := range 300 {
		var caps []string
		for range 1 + rng.IntN(6) {
			var sb strings.Builder
			for range 1 + rng.IntN(8) {
				sb.WriteByte("abc"[rng.IntN(3)])
			}
			caps = append(caps, strings.Repeat(sb.String()+" ", 1+rng.IntN(4)))
		}
		tok, err := Train(caps, 10000)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, p := range tok.merges {
			got = append(got, tok.tokens[p.left]+" "+tok.tokens[p.right])
		}
		if want := naiveMerges(caps, 10000); !slices.Equal(got, want) {
			t.Fatalf("trial %d, captions %q:\n got  %q\n want %q", trial, caps, got, want)
		}
	}
}

// TestTrainProgress: TrainProgress learns what Train does and reports every merge, from
// (0, merges) to (merges, merges); captions that run out of pairs end at the merges made.
func TestTrainProgress(t *testing.T) {
	caps := captions(300, 1)
	const size = 620
	var calls [][2]int
	tok, err := TrainProgress(caps, size, func(d, n int) { calls = append(calls, [2]int{d, n}) })
	if err != nil {
		t.Fatal(err)
	}
	plain, _ := Train(caps, size)
	if !slices.Equal(tok.merges, plain.merges) {
		t.Fatal("TrainProgress learnt other merges than Train")
	}
	want := size - MinVocabSize
	if len(calls) != want+1 || calls[0] != [2]int{0, want} || calls[want] != [2]int{want, want} {
		t.Fatalf("%d calls, first %v, last %v; want %d from (0, %d)", len(calls), calls[0], calls[len(calls)-1], want+1, want)
	}
	for i, c := range calls {
		if c[0] != i {
			t.Fatalf("call %d: %v", i, c)
		}
	}

	calls = nil
	tok, err = TrainProgress([]string{"ab ab"}, 1000, func(d, n int) { calls = append(calls, [2]int{d, n}) })
	if err != nil {
		t.Fatal(err)
	}
	made := len(tok.merges)
	if last := calls[len(calls)-1]; calls[0] != [2]int{0, 1000 - MinVocabSize} || last != [2]int{made, made} {
		t.Fatalf("exhausted captions: first %v, last %v, %d merges", calls[0], last, made)
	}
}
