package tokenizer

import (
	"slices"
	"testing"
)

// The expected values in this file are what CPython 3.11 and the regex
// module give for the same inputs (html.unescape, str.lower,
// simple_tokenizer's cleaning, the pre-tokenising pattern, bytes.decode with
// errors="replace"): the places where Go's standard library behaves otherwise.

func TestUnescapeHTML(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"&amp;lt;", "&lt;"}, // one pass only
		{"&#1;x", "x"},       // invalid code points are dropped
		{"&#x7f;", ""},
		{"&#xfdd0;", ""},
		{"&#x1fffe;", ""},
		{"&#0;", "\ufffd"},
		{"&#xD800;", "\ufffd"},
		{"&#99999999999999;", "\ufffd"}, // saturates, does not wrap
		{"&#x80;", "\u20ac"},            // Windows-1252
		{"&#x81;", "\u0081"},
		{"&#13;", "\r"},
		{"&ampfoo;", "&foo;"}, // legacy names need no semicolon
		{"&notit;", "\u00acit;"},
		{"&hellip-", "&hellip-"},
		{"&#xg", "&#xg"},
		{"&#", "&#"},
		{"& x", "& x"},
		{"&quot;STOP&quot;", "\"STOP\""},
		{"&#65&#x42;C", "ABC"},
		{"&CounterClockwiseContourIntegral;", "\u2233"},
	} {
		if got := unescapeHTML(tc.in); got != tc.want {
			t.Errorf("unescapeHTML(%+q) = %+q, want %+q", tc.in, got, tc.want)
		}
	}
}

func TestLower(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"\u0130stanbul", "i\u0307stanbul"}, // full mapping of dotted capital I
		{"\u039f\u0394\u039f\u03a3", "\u03bf\u03b4\u03bf\u03c2"},
		{"\u03a3", "\u03c3"},
		{"\u0391\u03a3.", "\u03b1\u03c2."},
		{"\u0391\u03a3'\u0391", "\u03b1\u03c3'\u03b1"}, // apostrophe is case-ignorable
		{"\u0391\u0301\u03a3", "\u03b1\u0301\u03c2"},
		{"\u0391\u03a3\u0301", "\u03b1\u03c2\u0301"},
		{"\u01c5", "\u01c6"},
		{"\u1e9e", "\u00df"},
		{"KELVIN \u212a", "kelvin k"},
		{"\u00c0\u00c9\u00ce", "\u00e0\u00e9\u00ee"},
	} {
		if got := lower(tc.in); got != tc.want {
			t.Errorf("lower(%+q) = %+q, want %+q", tc.in, got, tc.want)
		}
	}
}

func TestClean(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"  A  Dog\t\n runs ", "a dog runs"},
		{"\x1c a \x1f", "a"}, // str.strip removes U+001C..U+001F ...
		{"a\x1cb", "a\x1cb"}, // ... but \s does not fold them
		{"a \x1c b", "a \x1c b"},
		{"x\u3000y\u00a0z\u2028w", "x y z w"},
		{"e\u0301", "\u00e9"}, // NFC
		{"&amp;nbsp;", ""},    // unescaped twice, then trimmed
		{"A&nbsp;B", "a b"},
		{" \u200b ", "\u200b"}, // zero width space is not white space
		{"", ""},
		{"ok\xffok", "ok\ufffdok"},
	} {
		if got := clean(tc.in); got != tc.want {
			t.Errorf("clean(%+q) = %+q, want %+q", tc.in, got, tc.want)
		}
	}
}

func TestPieces(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []string
	}{
		{"it's 'sun", []string{"it", "'s", "'s", "un"}},
		{"we'll've'd", []string{"we", "'ll", "'ve", "'d"}},
		{"!'s", []string{"!'", "s"}},
		{"'\u017f x", []string{"'\u017f", "x"}}, // long s folds to s
		{"<|\u017ftartoftext|>x", []string{"<|\u017ftartoftext|>", "x"}},
		{"a<|endoftext|>", []string{"a", "<|endoftext|>"}},
		{"!<|endoftext|>", []string{"!<|", "endoftext", "|>"}},
		{"abc123def", []string{"abc", "1", "2", "3", "def"}},
		{"\u00bd\u00b2", []string{"\u00bd", "\u00b2"}},
		{"a\u0345b", []string{"a", "b"}}, // matched by nothing under IGNORECASE
		{"!\u0345?", []string{"!", "?"}},
		{"\u4e2d\u6587 text", []string{"\u4e2d\u6587", "text"}},
		{"\U0001f600\U0001f436 ok", []string{"\U0001f600\U0001f436", "ok"}},
		{"x\x1cy", []string{"x", "\x1c", "y"}},
		{"don't", []string{"don", "'t"}},
		{"", nil},
	} {
		var got []string
		forEachPiece(tc.in, func(p string) { got = append(got, p) })
		if !slices.Equal(got, tc.want) {
			t.Errorf("pieces of %+q = %+q, want %+q", tc.in, got, tc.want)
		}
	}
}

func TestDecodeUTF8(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"\xe2\x82", "\ufffd"}, // one replacement per maximal invalid subpart
		{"\xe2\x82a", "\ufffda"},
		{"\xf0\x80", "\ufffd\ufffd"},
		{"\xed\xa0\x80", "\ufffd\ufffd\ufffd"}, // surrogates
		{"\xf4\x90\x80\x80", "\ufffd\ufffd\ufffd\ufffd"},
		{"\xc0\xaf", "\ufffd\ufffd"},
		{"\xf0\x9f\x98", "\ufffd"},
		{"ok\xff", "ok\ufffd"},
		{"\xf0\x9f\x98\x80", "\U0001f600"},
	} {
		if got := decodeUTF8([]byte(tc.in)); got != tc.want {
			t.Errorf("decodeUTF8(%+q) = %+q, want %+q", tc.in, got, tc.want)
		}
	}
}
