package tokenizer

import (
	"slices"
	"strings"
	"testing"
	"unicode"

	"goclip/internal/testutil"
)

// fuzzTokenizer is OpenAI's vocabulary when the fixtures are present, and a
// vocabulary trained here otherwise, so the fuzz target always runs.
func fuzzTokenizer(f *testing.F) *Tokenizer {
	if gz, ok := testutil.Lookup(OpenAIFile); ok {
		tok, err := Load(gz)
		if err != nil {
			f.Fatal(err)
		}
		return tok
	}
	tok, err := Train(captions(500, 7), 800)
	if err != nil {
		f.Fatal(err)
	}
	return tok
}

func FuzzEncode(f *testing.F) {
	tok := fuzzTokenizer(f)
	f.Add("A dog runs across the grass.")
	f.Add("")
	f.Fuzz(func(t *testing.T, text string) {
		ids := tok.Encode(text)
		if len(ids) < 2 || ids[0] != tok.StartID() || ids[len(ids)-1] != tok.EndID() {
			t.Fatalf("ids %v do not start with %d and end with %d", ids, tok.StartID(), tok.EndID())
		}
		for _, id := range ids {
			if id < 0 || id >= tok.VocabSize() {
				t.Fatalf("id %d outside [0, %d)", id, tok.VocabSize())
			}
		}
		if again := tok.Encode(text); !slices.Equal(again, ids) {
			t.Fatalf("second (cached) encoding %v differs from %v", again, ids)
		}

		ctx := tok.EncodeContext(text, 77)
		if n := min(len(ids), 77); len(ctx) != n || ctx[n-1] != tok.EndID() || !slices.Equal(ctx[:n-1], ids[:n-1]) {
			t.Fatalf("EncodeContext(77) = %v for ids %v", ctx, ids)
		}

		// Decoding gives the cleaned text back: every piece followed by a
		// space (special tokens excepted), the skipped characters gone.
		cleaned := clean(text)
		var want strings.Builder
		forEachPiece(cleaned, func(p string) {
			want.WriteString(p)
			if p != startText && p != endText {
				want.WriteByte(' ')
			}
		})
		if got := tok.Decode(ids[1 : len(ids)-1]); got != want.String() {
			t.Fatalf("Decode = %+q, want %+q", got, want.String())
		}
		drop := func(r rune) rune {
			if unicode.IsSpace(r) || r == 0x345 {
				return -1
			}
			return r
		}
		if got := strings.Map(drop, want.String()); got != strings.Map(drop, cleaned) {
			t.Fatalf("pieces %+q lose text of %+q", got, cleaned)
		}
	})
}
