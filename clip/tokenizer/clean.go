package tokenizer

import (
	"html"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"golang.org/x/text/unicode/norm"
)

// This file reproduces the text handling of OpenAI's simple_tokenizer.py with
// Python's semantics, which differ from Go's standard library in several places:
//
//   - str.strip() and str.isspace() treat U+001C..U+001F as white space, but the
//     regex module's \s (used to fold runs of white space) does not; Go's
//     unicode.IsSpace is exactly the White_Space property, the regex module's \s.
//   - str.lower() uses the full lower-case mapping (U+0130 becomes "i\u0307") and
//     the Final_Sigma context for U+03A3.
//   - html.unescape() drops some numeric character references that Go keeps and
//     saturates huge ones to U+FFFD.
//   - bytes.decode("utf-8", errors="replace") writes one U+FFFD per maximal
//     invalid subpart, not one per byte.
//   - the pre-tokenising pattern is compiled with IGNORECASE, so its literal
//     parts ("'s", "<|startoftext|>") also match simple case-fold variants such
//     as U+017F (long s), and U+0345 (COMBINING GREEK YPOGEGRAMMENI, which
//     folds to the letter iota) is matched by none of its classes: it is
//     skipped like white space.

// clean applies OpenAI's basic_clean and whitespace_clean followed by lower():
// NFC normalisation (standing in for ftfy.fix_text), HTML unescaping twice,
// folding every run of white space to one space, trimming, lower-casing.
func clean(text string) string {
	if s, ok := cleanASCII(text); ok {
		return s
	}
	if !utf8.ValidString(text) {
		text = strings.ToValidUTF8(text, "\uFFFD")
	}
	text = norm.NFC.String(text)
	text = unescapeHTML(unescapeHTML(text))
	text = foldSpace(text)
	return lower(text)
}

// cleanASCII is the fast path of clean for ASCII text without '&': NFC and
// HTML unescaping are then the identity and every case and space rule is ASCII.
func cleanASCII(text string) (string, bool) {
	clean := true // already lower case with single inner spaces and no ends to trim
	prevSpace := true
	for i := 0; i < len(text); i++ {
		c := text[i]
		if c >= utf8.RuneSelf || c == '&' {
			return "", false
		}
		space := isASCIISpace(c) || (0x1c <= c && c <= 0x1f)
		if ('A' <= c && c <= 'Z') || (space && (c != ' ' || prevSpace)) {
			clean = false
		}
		prevSpace = space
	}
	if clean && !prevSpace {
		return text, true
	}
	b := make([]byte, 0, len(text))
	pending := false
	for i := 0; i < len(text); i++ {
		c := text[i]
		if isASCIISpace(c) {
			pending = true
			continue
		}
		if pending && len(b) > 0 {
			b = append(b, ' ')
		}
		pending = false
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		b = append(b, c)
	}
	// U+001C..U+001F are not folded but are trimmed at both ends (str.strip).
	s := strings.TrimFunc(string(b), isPySpace)
	return s, true
}

func isASCIISpace(c byte) bool {
	return c == ' ' || ('\t' <= c && c <= '\r')
}

// isPySpace reports whether Python's str.isspace() holds for r: the
// White_Space property plus the four information separators U+001C..U+001F.
func isPySpace(r rune) bool {
	return unicode.IsSpace(r) || (0x1c <= r && r <= 0x1f)
}

// foldSpace replaces every run of White_Space characters (the regex module's
// \s) by one space and trims Python white space from both ends.
func foldSpace(s string) string {
	var b strings.Builder
	b.Grow(len(s))
	pending := false
	for _, r := range s {
		if unicode.IsSpace(r) {
			pending = true
			continue
		}
		if pending {
			b.WriteByte(' ')
			pending = false
		}
		b.WriteRune(r)
	}
	if pending {
		b.WriteByte(' ')
	}
	return strings.TrimFunc(b.String(), isPySpace)
}

// lower is Python's str.lower().
func lower(s string) string {
	ascii := true
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			ascii = false
			break
		}
	}
	if ascii {
		return strings.ToLower(s)
	}
	var b strings.Builder
	b.Grow(len(s))
	for i, r := range s {
		switch r {
		case 0x130: // LATIN CAPITAL LETTER I WITH DOT ABOVE: full mapping
			b.WriteString("i\u0307")
		case 0x3a3: // GREEK CAPITAL LETTER SIGMA
			if finalSigma(s, i) {
				b.WriteRune(0x3c2)
			} else {
				b.WriteRune(0x3c3)
			}
		default:
			b.WriteRune(unicode.ToLower(r))
		}
	}
	return b.String()
}

// finalSigma reports whether the sigma at byte offset i of s is in the
// Final_Sigma context: a cased letter before it and none after it, skipping
// case-ignorable characters on both sides (CPython's handle_capital_sigma).
func finalSigma(s string, i int) bool {
	j := i
	before := false
	for j > 0 {
		r, size := utf8.DecodeLastRuneInString(s[:j])
		j -= size
		if !caseIgnorable(r) {
			before = cased(r)
			break
		}
	}
	if !before {
		return false
	}
	for _, r := range s[i+len("Σ"):] {
		if !caseIgnorable(r) {
			return !cased(r)
		}
	}
	return true
}

// cased is the Unicode Cased property.
func cased(r rune) bool {
	return unicode.In(r, unicode.Lu, unicode.Ll, unicode.Lt, unicode.Other_Lowercase, unicode.Other_Uppercase)
}

// caseIgnorable is the Unicode Case_Ignorable property: marks, format
// characters, modifier letters and symbols, and the word-break apostrophes
// and mid-letter punctuation.
func caseIgnorable(r rune) bool {
	switch r {
	case '\'', '.', ':', 0xb7, 0x387, 0x55f, 0x5f4, 0x2018, 0x2019, 0x2024, 0x2027,
		0xfe13, 0xfe52, 0xfe55, 0xff07, 0xff0e, 0xff1a:
		return true
	}
	return unicode.In(r, unicode.Mn, unicode.Me, unicode.Cf, unicode.Lm, unicode.Sk)
}

// unescapeHTML is Python's html.unescape. Named references are resolved by
// Go's table (the same HTML5 list, the same longest-prefix rule for the legacy
// names without a semicolon); numeric references follow Python's rules.
func unescapeHTML(s string) string {
	amp := strings.IndexByte(s, '&')
	if amp < 0 {
		return s
	}
	var b strings.Builder
	b.Grow(len(s))
	for amp >= 0 {
		b.WriteString(s[:amp])
		s = s[amp:]
		n := numericRef(&b, s)
		if n == 0 {
			n = namedRef(&b, s)
		}
		s = s[n:]
		amp = strings.IndexByte(s, '&')
	}
	b.WriteString(s)
	return b.String()
}

// namedRef writes the expansion of the named reference at the start of s
// (which starts with '&') and returns the bytes it consumed; a lone '&' is
// copied and consumes one byte.
func namedRef(b *strings.Builder, s string) int {
	i := 1
	for i < len(s) && isAlnum(s[i]) {
		i++
	}
	if i < len(s) && s[i] == ';' {
		i++
	}
	if i == 1 {
		b.WriteByte('&')
		return 1
	}
	// Only one '&' in s[:i], so Go's unescaping of it is exactly the
	// expansion of this one reference, the rest copied unchanged.
	b.WriteString(html.UnescapeString(s[:i]))
	return i
}

func isAlnum(c byte) bool {
	return ('a' <= c && c <= 'z') || ('A' <= c && c <= 'Z') || ('0' <= c && c <= '9')
}

// numericRef writes the character of the numeric reference at the start of s
// ("&#123;", "&#x7b", ...) and returns the bytes consumed, or 0 if s does not
// start with one.
func numericRef(b *strings.Builder, s string) int {
	if len(s) < 3 || s[1] != '#' {
		return 0
	}
	i, base := 2, 10
	if s[2] == 'x' || s[2] == 'X' {
		i, base = 3, 16
	}
	start := i
	for i < len(s) && digitValue(s[i], base) >= 0 {
		i++
	}
	if i == start {
		return 0
	}
	n, err := strconv.ParseUint(s[start:i], base, 32)
	if err != nil || n > unicode.MaxRune {
		n = 0x110000 // saturate: any value past the last code point
	}
	if i < len(s) && s[i] == ';' {
		i++
	}
	switch c := rune(n); {
	case c == 0:
		b.WriteRune('\uFFFD')
	case 0x80 <= c && c <= 0x9f:
		b.WriteRune(cp1252[c-0x80])
	case (0xd800 <= c && c <= 0xdfff) || c > unicode.MaxRune:
		b.WriteRune('\uFFFD')
	case invalidCodepoint(c):
		// Python drops these.
	default:
		b.WriteRune(c)
	}
	return i
}

func digitValue(c byte, base int) int {
	switch {
	case '0' <= c && c <= '9':
		return int(c - '0')
	case base == 16 && 'a' <= c && c <= 'f':
		return int(c-'a') + 10
	case base == 16 && 'A' <= c && c <= 'F':
		return int(c-'A') + 10
	}
	return -1
}

// invalidCodepoint lists the code points that Python's html.unescape removes
// when they are written as numeric references (html._invalid_codepoints,
// less the ones handled before it).
func invalidCodepoint(c rune) bool {
	return (0x1 <= c && c <= 0x8) || c == 0xb || (0xe <= c && c <= 0x1f) ||
		(0x7f <= c && c <= 0x9f) || (0xfdd0 <= c && c <= 0xfdef) || c&0xfffe == 0xfffe
}

// cp1252 maps numeric references 0x80..0x9F to the Windows-1252 characters,
// as HTML5 (and Python) do; the five unassigned bytes map to themselves.
var cp1252 = [32]rune{
	0x20ac, 0x81, 0x201a, 0x192, 0x201e, 0x2026, 0x2020, 0x2021,
	0x2c6, 0x2030, 0x160, 0x2039, 0x152, 0x8d, 0x17d, 0x8f,
	0x90, 0x2018, 0x2019, 0x201c, 0x201d, 0x2022, 0x2013, 0x2014,
	0x2dc, 0x2122, 0x161, 0x203a, 0x153, 0x9d, 0x17e, 0x178,
}

// Pre-tokenisation: the pattern
//
//	<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+
//
// compiled with IGNORECASE, applied with findall: characters that no
// alternative matches (white space and U+0345) are skipped.

const (
	startText = "<|startoftext|>"
	endText   = "<|endoftext|>"
)

var contractions = [...]string{"'s", "'t", "'re", "'ve", "'m", "'ll", "'d"}

// forEachPiece calls fn with each pre-token of the cleaned text s, in order.
func forEachPiece(s string, fn func(piece string)) {
	for i := 0; i < len(s); {
		c := s[i]
		var r rune
		size := 1
		if c < utf8.RuneSelf {
			r = rune(c)
		} else {
			r, size = utf8.DecodeRuneInString(s[i:])
		}
		if c == ' ' || skipped(r) {
			i += size
			continue
		}
		n := 0
		switch {
		case c == '<':
			if n = matchFold(s[i:], startText); n == 0 {
				n = matchFold(s[i:], endText)
			}
		case c == '\'':
			for _, lit := range contractions {
				if n = matchFold(s[i:], lit); n > 0 {
					break
				}
			}
		}
		if n == 0 {
			switch {
			case isLetter(r):
				n = size
				for i+n < len(s) {
					r2, size2 := decodeRune(s[i+n:])
					if !isLetter(r2) {
						break
					}
					n += size2
				}
			case isNumber(r):
				n = size
			default:
				n = size
				for i+n < len(s) {
					r2, size2 := decodeRune(s[i+n:])
					if skipped(r2) || isLetter(r2) || isNumber(r2) {
						break
					}
					n += size2
				}
			}
		}
		fn(s[i : i+n])
		i += n
	}
}

// skipped reports whether no alternative of the pattern matches r.
func skipped(r rune) bool {
	return unicode.IsSpace(r) || r == 0x345
}

func decodeRune(s string) (rune, int) {
	if s[0] < utf8.RuneSelf {
		return rune(s[0]), 1
	}
	return utf8.DecodeRuneInString(s)
}

func isLetter(r rune) bool {
	if r < utf8.RuneSelf {
		return ('a' <= r && r <= 'z') || ('A' <= r && r <= 'Z')
	}
	return unicode.IsLetter(r)
}

func isNumber(r rune) bool {
	if r < utf8.RuneSelf {
		return '0' <= r && r <= '9'
	}
	return unicode.IsNumber(r)
}

// matchFold returns the length in bytes of the prefix of s that matches the
// ASCII literal lit under simple case folding, or 0.
func matchFold(s, lit string) int {
	n := 0
	for k := 0; k < len(lit); k++ {
		if n >= len(s) {
			return 0
		}
		r, size := decodeRune(s[n:])
		if !foldEqual(r, rune(lit[k])) {
			return 0
		}
		n += size
	}
	return n
}

// foldEqual reports whether r and c are equal under simple case folding.
func foldEqual(r, c rune) bool {
	if r == c {
		return true
	}
	for f := unicode.SimpleFold(c); f != c; f = unicode.SimpleFold(f) {
		if f == r {
			return true
		}
	}
	return false
}

// decodeUTF8 is Python's bytes.decode("utf-8", errors="replace"): valid
// sequences are copied and each maximal invalid subpart becomes one U+FFFD.
func decodeUTF8(p []byte) string {
	var b strings.Builder
	b.Grow(len(p))
	for i := 0; i < len(p); {
		c := p[i]
		if c < utf8.RuneSelf {
			b.WriteByte(c)
			i++
			continue
		}
		need, lo, hi := 0, byte(0x80), byte(0xbf)
		switch {
		case 0xc2 <= c && c <= 0xdf:
			need = 1
		case c == 0xe0:
			need, lo = 2, 0xa0
		case c == 0xed:
			need, hi = 2, 0x9f
		case 0xe1 <= c && c <= 0xef:
			need = 2
		case c == 0xf0:
			need, lo = 3, 0x90
		case c == 0xf4:
			need, hi = 3, 0x8f
		case 0xf1 <= c && c <= 0xf3:
			need = 3
		default:
			b.WriteRune('\uFFFD')
			i++
			continue
		}
		j := i + 1
		ok := true
		for k := 0; k < need; k++ {
			if j >= len(p) || p[j] < lo || p[j] > hi {
				ok = false
				break
			}
			j++
			lo, hi = 0x80, 0xbf
		}
		if ok {
			b.Write(p[i:j])
		} else {
			b.WriteRune('\uFFFD')
		}
		i = j
	}
	return b.String()
}
