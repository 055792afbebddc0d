package dataset

import (
	"math"
	"math/rand/v2"
	"strings"
	"unicode"
)

// This file decides what a synthetic image shows and writes its five captions.

type synthColour struct {
	name string
	rgb  [3]uint8
}

// The attribute vocabularies. The "shifted" domain draws each attribute from its own
// list four times in five (and from the base list otherwise); the base domain never
// uses the shifted lists, so a model trained on base has not seen those words or looks.
var (
	baseShapes    = []string{"circle", "square", "triangle", "star", "diamond"}
	shiftedShapes = []string{"hexagon", "cross", "crescent", "ring"}

	baseColours = []synthColour{
		{"red", [3]uint8{215, 35, 35}}, {"green", [3]uint8{40, 165, 60}}, {"blue", [3]uint8{35, 75, 215}},
		{"yellow", [3]uint8{240, 210, 40}}, {"white", [3]uint8{245, 245, 245}}, {"black", [3]uint8{25, 25, 25}},
		{"purple", [3]uint8{135, 50, 180}}, {"magenta", [3]uint8{225, 30, 190}}, {"navy", [3]uint8{25, 35, 120}},
	}
	shiftedColours = []synthColour{
		{"orange", [3]uint8{250, 135, 20}}, {"pink", [3]uint8{250, 140, 195}},
		{"brown", [3]uint8{125, 75, 35}}, {"cyan", [3]uint8{40, 205, 215}},
	}

	baseTextures    = []string{"solid", "solid", "striped", "dotted"}
	shiftedTextures = []string{"checkered", "wavy"}

	baseBackgrounds = []synthColour{
		{"grey", [3]uint8{128, 128, 128}}, {"beige", [3]uint8{222, 205, 165}},
		{"light blue", [3]uint8{165, 200, 232}}, {"dark grey", [3]uint8{60, 60, 66}},
		{"olive", [3]uint8{120, 120, 45}}, {"tan", [3]uint8{190, 150, 90}},
	}
	shiftedBackgrounds = []synthColour{
		{"dark green", [3]uint8{35, 80, 45}}, {"lavender", [3]uint8{196, 182, 226}}, {"maroon", [3]uint8{100, 30, 42}},
	}

	// Radii of the size classes as fractions of the short side.
	// They are as large as the 3x3 grid allows, so that kinds and textures stay legible
	// at 64 pixels.
	sizeRadius = map[string]float64{"small": 0.09, "medium": 0.125, "large": 0.16}
	sizeNames  = []string{"small", "medium", "large"}
)

// shiftedShare is how often the shifted domain draws an attribute from its own list.
const shiftedShare = 0.8

// minContrast is the least RGB distance between a shape's colour and its background.
const minContrast = 100

func pick[T any](rng *rand.Rand, base, shifted []T, isShifted bool) T {
	if isShifted && rng.Float64() < shiftedShare {
		return shifted[rng.IntN(len(shifted))]
	}
	return base[rng.IntN(len(base))]
}

func colourDist(a, b [3]uint8) float64 {
	var s float64
	for i := range a {
		d := float64(a[i]) - float64(b[i])
		s += d * d
	}
	return math.Sqrt(s)
}

// sampleScene draws the attributes of image i: its size, background and one to three
// shapes in distinct cells of a 3x3 grid laid over the central square (the part that
// CLIP's centre crop keeps), with distinct colour-and-kind pairs; one shape when
// oneShape (the draws are the same up to the count, so other images do not change).
func sampleScene(rng *rand.Rand, name string, size int, shifted, oneShape bool) SynthImage {
	s := SynthImage{Name: name, Width: size, Height: size}
	switch a := rng.Float64(); {
	case a < 0.6:
		s.Width = size * 4 / 3
	case a < 0.8:
		s.Height = size * 4 / 3
	}
	bg := pick(rng, baseBackgrounds, shiftedBackgrounds, shifted)
	s.Background = bg.name
	s.bgRGB = [3]float64{float64(bg.rgb[0]), float64(bg.rgb[1]), float64(bg.rgb[2])}

	n := 1
	switch a := rng.Float64(); {
	case a < 0.2:
		n = 1
	case a < 0.6:
		n = 2
	default:
		n = 3
	}
	if oneShape {
		n = 1
	}
	cells := rng.Perm(9)[:n]
	side := float64(size)
	ox, oy := float64(s.Width-size)/2, float64(s.Height-size)/2
	cell := side / 3
	for _, c := range cells {
		var sh SynthShape
		for try := 0; ; try++ {
			sh.Kind = pick(rng, baseShapes, shiftedShapes, shifted)
			col := pick(rng, baseColours, shiftedColours, shifted)
			sh.Colour, sh.RGB = col.name, col.rgb
			if colourDist(col.rgb, bg.rgb) < minContrast {
				continue
			}
			dup := false
			for _, o := range s.Shapes {
				dup = dup || (o.Kind == sh.Kind && o.Colour == sh.Colour)
			}
			if !dup || try > 100 {
				break
			}
		}
		sh.Size = sizeNames[rng.IntN(len(sizeNames))]
		sh.Texture = pick(rng, baseTextures, shiftedTextures, shifted)
		sh.Row, sh.Col = c/3, c%3
		sh.Radius = sizeRadius[sh.Size] * side
		slack := math.Max(0, cell/2-1.2*sh.Radius) * 0.6
		sh.X = ox + (float64(sh.Col)+0.5)*cell + (rng.Float64()*2-1)*slack
		sh.Y = oy + (float64(sh.Row)+0.5)*cell + (rng.Float64()*2-1)*slack
		if sh.Kind != "circle" && sh.Kind != "ring" {
			sh.rotation = (rng.Float64()*2 - 1) * 0.2
		}
		sh.period = math.Max(3, sh.Radius*0.42)
		sh.angle = rng.Float64() * math.Pi
		s.Shapes = append(s.Shapes, sh)
	}
	s.Captions = newCaptioner(rng, &s).captions()
	return s
}

// captioner writes captions for one scene, varying words and sentence shapes the way
// Flickr30k's five annotators do, while always naming every shape's colour and kind and,
// unless it is the unmarked medium/solid, its size and texture.
type captioner struct {
	rng   *rand.Rand
	s     *SynthImage
	short bool // the shorter words only, for the three-shape captions
}

func newCaptioner(rng *rand.Rand, s *SynthImage) *captioner { return &captioner{rng: rng, s: s} }

func (g *captioner) one(words ...string) string { return words[g.rng.IntN(len(words))] }

var nounWords = map[string][]string{
	"circle": {"circle", "circle", "disc"}, "square": {"square", "square", "box"},
	"triangle": {"triangle"}, "star": {"star"}, "diamond": {"diamond", "diamond", "rhombus"},
	"hexagon": {"hexagon"}, "cross": {"cross", "plus sign"}, "crescent": {"crescent", "crescent moon"},
	"ring": {"ring", "ring", "donut"},
}

var sizeWords = map[string][]string{
	"small": {"small", "small", "little"}, "medium": {"", "", "medium", "medium-sized"}, "large": {"large", "big"},
}

// textureWords gives a texture as an adjective before the colour, or as a phrase after
// the noun.
var textureWords = map[string][2][]string{
	"solid":     {{"", "", "solid", "plain"}, {""}},
	"striped":   {{"striped", "stripy"}, {"with stripes", "covered in stripes"}},
	"dotted":    {{"dotted", "spotted", "polka-dot"}, {"with dots", "covered in dots"}},
	"checkered": {{"checkered", "chequered"}, {"with a checkerboard pattern", "in a checker pattern"}},
	"wavy":      {{"wavy"}, {"with wavy stripes", "with wavy lines"}},
}

// np names a shape: "a big striped red circle", "a red circle with stripes". When
// g.short is set it uses only the shorter forms, the texture before the colour.
func (g *captioner) np(sh *SynthShape, article bool) string {
	tex := textureWords[sh.Texture]
	var pre, post string
	switch {
	case g.short && sh.Texture == "solid":
	case g.short:
		for pre == "" || strings.Contains(pre, "-") {
			pre = g.one(tex[0]...)
		}
	case g.rng.IntN(2) == 0:
		pre = g.one(tex[0]...)
	default:
		post = g.one(tex[1]...)
	}
	size := g.one(sizeWords[sh.Size]...)
	if g.short && strings.Contains(size, "-") {
		size = sh.Size
	}
	phrase := join(size, pre, sh.Colour, g.one(nounWords[sh.Kind]...), post)
	if article {
		phrase = withArticle(phrase)
	}
	return phrase
}

func withArticle(phrase string) string {
	if phrase != "" && strings.ContainsRune("aeiou", rune(phrase[0])) {
		return "an " + phrase
	}
	return "a " + phrase
}

func join(words ...string) string {
	var out []string
	for _, w := range words {
		if w != "" {
			out = append(out, w)
		}
	}
	return strings.Join(out, " ")
}

func (g *captioner) bg() string {
	return strings.ReplaceAll(g.s.Background, "grey", g.one("grey", "grey", "gray"))
}

// where names the cell of a shape in a few words: "in the top left", "on the right".
func (g *captioner) where(sh *SynthShape) string {
	rows := []string{"top", "middle", "bottom"}
	cols := []string{"left", "centre", "right"}
	switch {
	case sh.Row == 1 && sh.Col == 1:
		return g.one("in the centre", "in the middle", "in the center")
	case sh.Col == 1:
		return g.one("at the ", "near the ") + rows[sh.Row]
	case sh.Row == 1:
		return g.one("on the ", "at the ") + cols[sh.Col]
	}
	corner := rows[sh.Row] + " " + cols[sh.Col]
	if g.short {
		return g.one("in the ", "at the ") + corner
	}
	switch g.rng.IntN(4) {
	case 0:
		return "in the " + corner + " corner"
	case 1:
		return "at the " + corner
	case 2:
		return "in the " + corner
	}
	return "in the " + strings.Replace(strings.Replace(corner, "top", "upper", 1), "bottom", "lower", 1)
}

// rel says where a is relative to b: "above", "to the left of".
func (g *captioner) rel(a, b *SynthShape) string {
	dx, dy := a.X-b.X, a.Y-b.Y
	if math.Abs(dx) >= math.Abs(dy) {
		if dx < 0 {
			return g.one("to the left of", "left of")
		}
		return g.one("to the right of", "right of")
	}
	if dy < 0 {
		return g.one("above", "over")
	}
	return g.one("below", "under", "beneath")
}

// captions writes five captions from five different sentence shapes. Every caption
// names every shape (colour, kind, size, texture); nearly all also name the background
// and where each shape is, in the grid or relative to another shape, so that a caption
// picks its image out of hundreds. Three-shape captions use the short forms, and name
// the background early, to fit a 32-token context.
func (g *captioner) captions() []string {
	sh := make([]*SynthShape, len(g.s.Shapes))
	for i := range g.s.Shapes {
		sh[i] = &g.s.Shapes[i]
	}
	g.rng.Shuffle(len(sh), func(i, j int) { sh[i], sh[j] = sh[j], sh[i] })
	np := func(i int) string { return g.np(sh[i], true) }
	bare := func(i int) string { return g.np(sh[i], false) }
	at := func(i int) string { return np(i) + " " + g.where(sh[i]) }
	bareAt := func(i int) string { return bare(i) + " " + g.where(sh[i]) }
	var templates []func() string
	switch len(sh) {
	case 1:
		templates = []func() string{
			func() string { return at(0) + " on a " + g.bg() + " background" },
			func() string { return "a single " + bareAt(0) + " on " + g.bg() },
			func() string { return withArticle(g.bg()) + " background with " + at(0) },
			func() string { return "one shape: " + at(0) + ", on " + g.bg() },
			func() string { return "there is " + at(0) + " against " + withArticle(g.bg()) + " backdrop" },
			func() string { return bareAt(0) + ", " + g.bg() + " background" },
		}
	case 2:
		templates = []func() string{
			func() string { return at(0) + " and " + at(1) + " on " + g.bg() },
			func() string {
				return "two shapes on " + withArticle(g.bg()) + " background: " + at(0) + " and " + at(1)
			},
			func() string {
				return np(0) + " " + g.rel(sh[0], sh[1]) + " " + np(1) + " on " + withArticle(g.bg()) + " background"
			},
			func() string { return withArticle(g.bg()) + " background with " + at(0) + " and " + at(1) },
			func() string { return bareAt(0) + ", " + bareAt(1) + ", on " + g.bg() },
			func() string { return np(1) + " " + g.rel(sh[1], sh[0]) + " " + np(0) + " on " + g.bg() },
		}
	default:
		g.short = true
		templates = []func() string{
			func() string { return bareAt(0) + ", " + bareAt(1) + " and " + bareAt(2) + " on " + g.bg() },
			func() string {
				return "three shapes on " + g.bg() + ": " + bareAt(0) + ", " + bareAt(1) + ", " + bareAt(2)
			},
			func() string {
				return "on " + g.bg() + ", " + np(0) + " " + g.rel(sh[0], sh[1]) + " " + np(1) + " and " + at(2)
			},
			func() string {
				return withArticle(g.bg()) + " background with " + at(0) + ", " + at(1) + " and " + at(2)
			},
			func() string { return g.bg() + " background, " + bareAt(0) + ", " + bareAt(1) + ", " + bareAt(2) },
			func() string { return at(0) + ", " + at(1) + ", " + at(2) },
		}
	}
	order := g.rng.Perm(len(templates))[:5]
	out := make([]string, 5)
	for i, t := range order {
		c := templates[t]()
		if g.rng.IntN(5) < 2 {
			r := []rune(c)
			r[0] = unicode.ToUpper(r[0])
			c = string(r)
		}
		if g.rng.IntN(2) == 0 {
			c += " ."
		}
		out[i] = c
	}
	return out
}
