package dataset

import (
	"fmt"
	"image"
	"math"
	"math/rand/v2"
)

// This file is the synthetic data's rasteriser: shapes are signed distance functions,
// and a pixel's coverage is 0.5 minus its centre's signed distance to the outline in
// pixels, clamped to [0, 1], which antialiases every edge over about one pixel.

type vec struct{ x, y float64 }

func (a vec) sub(b vec) vec       { return vec{a.x - b.x, a.y - b.y} }
func (a vec) scale(s float64) vec { return vec{a.x * s, a.y * s} }
func (a vec) dot(b vec) float64   { return a.x*b.x + a.y*b.y }

// polygonSDF is the signed distance from p to the closed polygon v (negative inside).
func polygonSDF(p vec, v []vec) float64 {
	d := p.sub(v[0]).dot(p.sub(v[0]))
	sign := 1.0
	for i, j := 0, len(v)-1; i < len(v); j, i = i, i+1 {
		e := v[j].sub(v[i])
		w := p.sub(v[i])
		t := clamp01(w.dot(e) / e.dot(e))
		b := vec{w.x - e.x*t, w.y - e.y*t}
		d = min(d, b.dot(b))
		c1 := p.y >= v[i].y
		c2 := p.y < v[j].y
		c3 := e.x*w.y > e.y*w.x
		if (c1 && c2 && c3) || (!c1 && !c2 && !c3) {
			sign = -sign
		}
	}
	return sign * math.Sqrt(d)
}

// regular returns n points on a circle of radius r, the first at angle a0 (radians,
// y pointing down).
func regular(n int, r, a0 float64) []vec {
	v := make([]vec, n)
	for i := range v {
		a := a0 + 2*math.Pi*float64(i)/float64(n)
		v[i] = vec{r * math.Cos(a), r * math.Sin(a)}
	}
	return v
}

// The outlines, in units of a shape's radius, centred on the origin. Each fills its
// unit circle about as much as the others so that sizes compare across kinds.
var (
	squarePoly   = []vec{{-0.86, -0.86}, {0.86, -0.86}, {0.86, 0.86}, {-0.86, 0.86}}
	trianglePoly = regular(3, 1.2, -math.Pi/2)
	diamondPoly  = []vec{{0, -1.15}, {0.8, 0}, {0, 1.15}, {-0.8, 0}}
	hexagonPoly  = regular(6, 1.0, 0)
	crossPoly    = []vec{{-0.33, -1}, {0.33, -1}, {0.33, -0.33}, {1, -0.33}, {1, 0.33}, {0.33, 0.33}, {0.33, 1}, {-0.33, 1}, {-0.33, 0.33}, {-1, 0.33}, {-1, -0.33}, {-0.33, -0.33}}
	starPoly     = func() []vec {
		v := make([]vec, 10)
		for i := range v {
			r := 1.2
			if i%2 == 1 {
				r = 0.52
			}
			a := -math.Pi/2 + math.Pi*float64(i)/5
			v[i] = vec{r * math.Cos(a), r * math.Sin(a)}
		}
		return v
	}()
)

// shapeSDFs are the signed distances, in units of the radius, from p to each shape kind.
var shapeSDFs = map[string]func(p vec) float64{
	"circle":   func(p vec) float64 { return math.Hypot(p.x, p.y) - 1 },
	"square":   func(p vec) float64 { return polygonSDF(p, squarePoly) },
	"triangle": func(p vec) float64 { return polygonSDF(vec{p.x, p.y - 0.15}, trianglePoly) },
	"diamond":  func(p vec) float64 { return polygonSDF(p, diamondPoly) },
	"star":     func(p vec) float64 { return polygonSDF(p, starPoly) },
	"hexagon":  func(p vec) float64 { return polygonSDF(p, hexagonPoly) },
	"cross":    func(p vec) float64 { return polygonSDF(p, crossPoly) },
	"crescent": func(p vec) float64 {
		outer := math.Hypot(p.x, p.y) - 1
		inner := math.Hypot(p.x-0.5, p.y+0.15) - 0.82
		return math.Max(outer, -inner)
	},
	"ring": func(p vec) float64 { return math.Abs(math.Hypot(p.x, p.y)-0.7) - 0.3 },
}

// textureMain returns how much of the main colour (rather than the texture's second
// colour) a pixel at offset (dx, dy) from the shape's probe point shows. Every texture
// shows the main colour at the probe point itself.
func textureMain(texture string, dx, dy, period, angle float64) float64 {
	band := func(t float64) float64 { // 1 on [−¼, ¼) of each period, antialiased
		f := t + 0.25 - math.Floor(t+0.25)
		var d float64
		if f < 0.5 {
			d = (0.25 - math.Abs(f-0.25)) * period
		} else {
			d = -(0.25 - math.Abs(f-0.75)) * period
		}
		return clamp01(0.5 + d)
	}
	switch texture {
	case "striped":
		return band((dx*math.Cos(angle) + dy*math.Sin(angle)) / period)
	case "wavy":
		u := dx*math.Cos(angle) + dy*math.Sin(angle)
		w := -dx*math.Sin(angle) + dy*math.Cos(angle)
		return band((u + 0.25*period*math.Sin(2*math.Pi*w/(1.6*period))) / period)
	case "dotted":
		gx := dx/period - math.Floor(dx/period) - 0.5
		gy := dy/period - math.Floor(dy/period) - 0.5
		d := math.Hypot(gx, gy)*period - 0.27*period
		return 1 - clamp01(0.5-d)
	case "checkered":
		a := band(dx / (2 * period))
		b := band(dy / (2 * period))
		return a*b + (1-a)*(1-b)
	}
	return 1
}

func clamp01(x float64) float64 {
	switch {
	case x <= 0:
		return 0
	case x >= 1:
		return 1
	}
	return x
}

// shapeReach bounds every outline, in units of the radius (the triangle reaches 1.28).
const shapeReach = 1.3

// secondColour is a texture's other colour: a darker shade of light colours, a lighter
// tint of dark ones.
func secondColour(c [3]uint8) [3]float64 {
	lum := 0.299*float64(c[0]) + 0.587*float64(c[1]) + 0.114*float64(c[2])
	var out [3]float64
	for i := range c {
		if lum > 120 {
			out[i] = float64(c[i]) * 0.55
		} else {
			out[i] = float64(c[i]) + (255-float64(c[i]))*0.5
		}
	}
	return out
}

// render draws scene s into img, which must be s.Width x s.Height (every pixel is
// overwritten). rng supplies the background variation and the pixel noise. A shape of
// a kind without a signed distance in shapeSDFs is an error naming it, before anything
// is drawn.
func render(s *SynthImage, rng *rand.Rand, img *image.RGBA) error {
	sdfs := make([]func(vec) float64, len(s.Shapes))
	for i, sh := range s.Shapes {
		if sdfs[i] = shapeSDFs[sh.Kind]; sdfs[i] == nil {
			return fmt.Errorf("unknown shape kind %q", sh.Kind)
		}
	}
	w, h := s.Width, s.Height
	bg := s.bgRGB
	// Background: the base colour under a vertical gradient and soft blotches.
	grad := (rng.Float64() - 0.5) * 0.3
	amp := rng.Float64() * 14
	fx, fy := 1+rng.Float64()*2, 1+rng.Float64()*2
	px, py := rng.Float64()*2*math.Pi, rng.Float64()*2*math.Pi
	colWave := make([]float64, w)
	for x := range colWave {
		colWave[x] = math.Sin(px + 2*math.Pi*fx*float64(x)/float64(w))
	}
	for y := 0; y < h; y++ {
		g := 1 + grad*(float64(y)/float64(h)-0.5)
		rowWave := amp * math.Sin(py+2*math.Pi*fy*float64(y)/float64(h))
		row := img.Pix[y*img.Stride:]
		for x := 0; x < w; x++ {
			off := rowWave * colWave[x]
			for c := 0; c < 3; c++ {
				row[4*x+c] = clampByte(bg[c]*g + off)
			}
			row[4*x+3] = 255
		}
	}
	// Shapes.
	for i := range s.Shapes {
		sh := &s.Shapes[i]
		main := [3]float64{float64(sh.RGB[0]), float64(sh.RGB[1]), float64(sh.RGB[2])}
		second := secondColour(sh.RGB)
		cos, sin := math.Cos(sh.rotation), math.Sin(sh.rotation)
		probeX, probeY := sh.Probe()
		reach := sh.Radius*shapeReach + 2
		bound := (shapeReach + 1/sh.Radius) * (shapeReach + 1/sh.Radius)
		x0, x1 := max(0, int(sh.X-reach)), min(w, int(sh.X+reach)+1)
		y0, y1 := max(0, int(sh.Y-reach)), min(h, int(sh.Y+reach)+1)
		for y := y0; y < y1; y++ {
			row := img.Pix[y*img.Stride:]
			for x := x0; x < x1; x++ {
				dx, dy := float64(x)+0.5-sh.X, float64(y)+0.5-sh.Y
				p := vec{(dx*cos + dy*sin) / sh.Radius, (-dx*sin + dy*cos) / sh.Radius}
				if p.dot(p) > bound {
					continue
				}
				cov := clamp01(0.5 - sdfs[i](p)*sh.Radius)
				if cov == 0 {
					continue
				}
				m := textureMain(sh.Texture, float64(x)+0.5-probeX, float64(y)+0.5-probeY, sh.period, sh.angle)
				for c := 0; c < 3; c++ {
					fill := main[c]*m + second[c]*(1-m)
					old := float64(row[4*x+c])
					row[4*x+c] = clampByte(old + (fill-old)*cov)
				}
			}
		}
	}
	// Noise: uniform integers in [-7, 7] per channel, all three from one 64-bit draw.
	for y := 0; y < h; y++ {
		row := img.Pix[y*img.Stride : y*img.Stride+4*w]
		for x := 0; x < len(row); x += 4 {
			r := rng.Uint64()
			for c := 0; c < 3; c++ {
				v := int(row[x+c]) + int((r>>(8*c))&0xff)*15>>8 - 7
				row[x+c] = uint8(min(255, max(0, v)))
			}
		}
	}
	return nil
}

func clampByte(v float64) uint8 {
	switch {
	case v <= 0:
		return 0
	case v >= 255:
		return 255
	}
	return uint8(v + 0.5)
}
