package dataset

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"image"
	"image/jpeg"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

// hashTree returns the SHA-256 of every file under dir, by relative path.
func hashTree(t *testing.T, dir string) map[string][32]byte {
	t.Helper()
	out := make(map[string][32]byte)
	err := filepath.WalkDir(dir, func(p string, e os.DirEntry, err error) error {
		if err != nil || e.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		out[rel] = sha256.Sum256(b)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestSynthDeterministic(t *testing.T) {
	a, b, c := t.TempDir(), t.TempDir(), t.TempDir()
	if _, err := Synthesize(a, SynthOptions{Images: 40, Size: 64, Seed: 7, Workers: 1}); err != nil {
		t.Fatal(err)
	}
	if _, err := Synthesize(b, SynthOptions{Images: 40, Size: 64, Seed: 7, Workers: 3}); err != nil {
		t.Fatal(err)
	}
	if _, err := Synthesize(c, SynthOptions{Images: 40, Size: 64, Seed: 8}); err != nil {
		t.Fatal(err)
	}
	ha, hb, hc := hashTree(t, a), hashTree(t, b), hashTree(t, c)
	if len(ha) != 42 {
		t.Errorf("%d files, want 40 images, results.csv and dataset_flickr30k.json", len(ha))
	}
	for name, h := range ha {
		if hb[name] != h {
			t.Errorf("%s differs between two runs with the same seed", name)
		}
	}
	same := 0
	for name, h := range ha {
		if hc[name] == h {
			same++
		}
	}
	if same > 0 {
		t.Errorf("%d files are the same with another seed", same)
	}
}

func TestSynthLayout(t *testing.T) {
	dir := t.TempDir()
	res, err := Synthesize(dir, SynthOptions{Images: 30, Size: 48, Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(dir, "results.csv"))
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")
	if lines[0] != "image_name| comment_number| comment" || len(lines) != 1+5*30 || res.Captions() != 150 {
		t.Fatalf("results.csv starts %q, %d lines", lines[0], len(lines))
	}
	row := regexp.MustCompile(`^base_\d{6}\.jpg\| [0-4]\| [^| ][^|]*$`)
	for _, l := range lines[1:] {
		if !row.MatchString(l) {
			t.Errorf("row %q is not in Kaggle's format", l)
		}
	}
	for _, im := range res.Images {
		f, err := os.Open(filepath.Join(dir, "flickr30k_images", im.Name))
		if err != nil {
			t.Fatal(err)
		}
		cfg, err := jpeg.DecodeConfig(f)
		f.Close()
		if err != nil || cfg.Width != im.Width || cfg.Height != im.Height || min(cfg.Width, cfg.Height) != 48 {
			t.Errorf("%s: %dx%d (%v), want %dx%d with short side 48", im.Name, cfg.Width, cfg.Height, err, im.Width, im.Height)
		}
	}
	if _, err := Synthesize(dir, SynthOptions{Images: 3, Size: 48}); !errors.Is(err, ErrExists) {
		t.Errorf("writing over a data set: %v", err)
	}
	if _, err := Synthesize(dir, SynthOptions{Images: 3, Size: 48, Overwrite: true}); err != nil {
		t.Errorf("Overwrite: %v", err)
	}
	for _, o := range []SynthOptions{{Size: 8}, {Domain: "mars"}, {Images: -2}, {Images: 10, Val: 8, Test: 8}} {
		if _, err := Synthesize(t.TempDir(), o); err == nil {
			t.Errorf("%+v: no error", o)
		}
	}
}

// nearest returns the name of the palette colour closest to c.
func nearest(c [3]uint8, palette []synthColour) string {
	best, bestD := "", 1e9
	for _, p := range palette {
		if d := colourDist(c, p.rgb); d < bestD {
			best, bestD = p.name, d
		}
	}
	return best
}

func pixel(img image.Image, x, y int) [3]uint8 {
	r, g, b, _ := img.At(x, y).RGBA()
	return [3]uint8{uint8(r >> 8), uint8(g >> 8), uint8(b >> 8)}
}

// shapeRegexp matches a phrase naming sh with its size, texture, colour and kind.
func shapeRegexp(sh SynthShape) *regexp.Regexp {
	alt := func(words []string) string {
		var q []string
		for _, w := range words {
			if w != "" {
				q = append(q, regexp.QuoteMeta(w))
			}
		}
		return "(?:" + strings.Join(q, "|") + ")"
	}
	size := alt(sizeWords[sh.Size]) + " "
	if sh.Size == "medium" {
		size = "(?:" + size + ")?"
	}
	noun := alt(nounWords[sh.Kind])
	tex := textureWords[sh.Texture]
	var body string
	if sh.Texture == "solid" {
		body = "(?:" + alt(tex[0]) + " )?" + sh.Colour + " " + noun
	} else {
		body = "(?:" + alt(tex[0]) + " " + sh.Colour + " " + noun + "|" + sh.Colour + " " + noun + " " + alt(tex[1]) + ")"
	}
	return regexp.MustCompile(`(?i)\b` + size + body + `\b`)
}

func TestSynthCaptionsAgreeWithPixels(t *testing.T) {
	for _, domain := range []string{DomainBase, DomainShifted} {
		dir := t.TempDir()
		res, err := Synthesize(dir, SynthOptions{Images: 80, Size: 160, Seed: 3, Domain: domain})
		if err != nil {
			t.Fatal(err)
		}
		colours := slices.Concat(baseColours, shiftedColours)
		backgrounds := slices.Concat(baseBackgrounds, shiftedBackgrounds)
		for _, im := range res.Images {
			f, err := os.Open(filepath.Join(dir, "flickr30k_images", im.Name))
			if err != nil {
				t.Fatal(err)
			}
			img, err := jpeg.Decode(f)
			f.Close()
			if err != nil {
				t.Fatal(err)
			}
			if got := nearest(pixel(img, 2, 2), backgrounds); got != im.Background {
				t.Errorf("%s: corner looks %s, captions say a %s background", im.Name, got, im.Background)
			}
			for _, sh := range im.Shapes {
				px, py := sh.Probe()
				x, y := int(px), int(py)
				if got := nearest(pixel(img, x, y), colours); got != sh.Colour {
					t.Errorf("%s: %s %s at (%d,%d) looks %s", im.Name, sh.Colour, sh.Kind, x, y, got)
				}
			}
			for _, c := range im.Captions {
				for _, sh := range im.Shapes {
					if !shapeRegexp(sh).MatchString(c) {
						t.Errorf("%s: caption %q does not name the %s %s %s %s", im.Name, c, sh.Size, sh.Texture, sh.Colour, sh.Kind)
					}
				}
				for k, w := range []string{"one shape", "two shapes", "three shapes"} {
					if strings.Contains(strings.ToLower(c), w) && len(im.Shapes) != k+1 {
						t.Errorf("%s: caption %q, but %d shapes", im.Name, c, len(im.Shapes))
					}
				}
				if strings.Contains(c, "|") || strings.Contains(c, "\n") {
					t.Errorf("caption %q breaks results.csv", c)
				}
			}
			if len(im.Captions) != 5 || len(slices.Compact(slices.Sorted(slices.Values(im.Captions)))) < 4 {
				t.Errorf("%s: captions are not five different sentences: %q", im.Name, im.Captions)
			}
		}
	}
}

func TestSynthRelationsAgree(t *testing.T) {
	res, err := Synthesize(t.TempDir(), SynthOptions{Images: 60, Size: 32, Seed: 5})
	if err != nil {
		t.Fatal(err)
	}
	checked := 0
	for _, im := range res.Images {
		if len(im.Shapes) != 2 {
			continue
		}
		a, b := im.Shapes[0], im.Shapes[1]
		for _, c := range im.Captions {
			for _, pair := range [][2]SynthShape{{a, b}, {b, a}} {
				m := regexp.MustCompile(shapeRegexp(pair[0]).String() + ` (above|over|below|under|beneath|to the left of|left of|to the right of|right of) an? ` + strings.TrimPrefix(shapeRegexp(pair[1]).String(), `(?i)\b`)).FindStringSubmatch(c)
				if m == nil {
					continue
				}
				checked++
				dx, dy := pair[0].X-pair[1].X, pair[0].Y-pair[1].Y
				var ok bool
				switch m[1] {
				case "above", "over":
					ok = dy < 0 && -dy > abs(dx)
				case "below", "under", "beneath":
					ok = dy > 0 && dy > abs(dx)
				case "to the left of", "left of":
					ok = dx < 0 && -dx >= abs(dy)
				default:
					ok = dx > 0 && dx >= abs(dy)
				}
				if !ok {
					t.Errorf("%s: %q but dx=%.0f dy=%.0f", im.Name, c, dx, dy)
				}
			}
		}
	}
	if checked < 20 {
		t.Errorf("only %d relations checked", checked)
	}
}

func abs(x float64) float64 { return max(x, -x) }

func TestSynthShiftedDomain(t *testing.T) {
	attrs := func(domain string) map[string]int {
		res, err := Synthesize(t.TempDir(), SynthOptions{Images: 200, Size: 32, Seed: 9, Domain: domain})
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]int{}
		for _, im := range res.Images {
			out["bg:"+im.Background]++
			for _, sh := range im.Shapes {
				out["kind:"+sh.Kind]++
				out["colour:"+sh.Colour]++
				out["texture:"+sh.Texture]++
			}
		}
		return out
	}
	base, shifted := attrs(DomainBase), attrs(DomainShifted)
	novel := map[string]bool{}
	for _, l := range [][]string{shiftedShapes, shiftedTextures} {
		for _, a := range l {
			novel[a] = true
		}
	}
	for _, l := range [][]synthColour{shiftedColours, shiftedBackgrounds} {
		for _, a := range l {
			novel[a.name] = true
		}
	}
	total, newInShifted := 0, 0
	for k, n := range shifted {
		total += n
		if novel[k[strings.Index(k, ":")+1:]] {
			newInShifted += n
		}
	}
	for k := range base {
		if novel[k[strings.Index(k, ":")+1:]] {
			t.Errorf("base domain uses %s", k)
		}
	}
	if frac := float64(newInShifted) / float64(total); frac < 0.6 {
		t.Errorf("only %.2f of the shifted attributes are new", frac)
	}
	for k := range novel {
		found := false
		for a := range shifted {
			found = found || strings.HasSuffix(a, ":"+k)
		}
		if !found {
			t.Errorf("shifted domain never uses %s", k)
		}
	}
}

func TestSynthOpen(t *testing.T) {
	dir := t.TempDir()
	res, err := Synthesize(dir, SynthOptions{Images: 120, Size: 40, Seed: 2, Val: 13, Test: 9})
	if err != nil {
		t.Fatal(err)
	}
	if res.Train != 98 || res.Val != 13 || res.Test != 9 {
		t.Errorf("splits %d/%d/%d", res.Train, res.Val, res.Test)
	}
	d, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if d.Format != FormatKaggle || d.SplitFile != "dataset_flickr30k.json" || d.Report.Skipped()+d.Report.Repaired() != 0 {
		t.Errorf("format %q split file %q; %s", d.Format, d.SplitFile, d.Report.Summary())
	}
	if len(d.Items) != 120 || len(d.Split(Val)) != 13 || len(d.Split(Test)) != 9 {
		t.Fatalf("%d items, %d val, %d test", len(d.Items), len(d.Split(Val)), len(d.Split(Test)))
	}
	for i, it := range d.Items {
		want := res.Images[i]
		if it.Name != want.Name || it.Split != want.Split || !slices.Equal(it.Captions, want.Captions) ||
			it.Image != filepath.Join(dir, "flickr30k_images", want.Name) {
			t.Fatalf("item %d: %+v, want %+v", i, it, want)
		}
	}
	// The Karpathy file alone is a data set too, with the same items.
	os.Remove(filepath.Join(dir, "results.csv"))
	k, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if k.Format != FormatKarpathy || len(k.Items) != 120 || !slices.Equal(k.Items[7].Captions, d.Items[7].Captions) || k.Items[7].Split != d.Items[7].Split {
		t.Errorf("Karpathy read differs: %q %d items", k.Format, len(k.Items))
	}
	// Without a split file, Open's hash splits with the default sizes agree with synth's.
	dir2 := t.TempDir()
	res2, _ := Synthesize(dir2, SynthOptions{Images: 100, Size: 32, Seed: 2})
	os.Remove(filepath.Join(dir2, "dataset_flickr30k.json"))
	d2, err := Open(dir2, Options{})
	if err != nil {
		t.Fatal(err)
	}
	for i, it := range d2.Items {
		if it.Split != res2.Images[i].Split {
			t.Fatalf("%s: %s by hash, %s in the split file", it.Name, it.Split, res2.Images[i].Split)
		}
	}
}

func TestSynthProgress(t *testing.T) {
	calls, last := 0, 0
	_, err := Synthesize(t.TempDir(), SynthOptions{Images: 25, Size: 32, Progress: func(done, total int) {
		calls++
		if done != last+1 || total != 25 {
			t.Errorf("progress %d/%d after %d", done, total, last)
		}
		last = done
	}})
	if err != nil || calls != 25 {
		t.Errorf("%d progress calls, %v", calls, err)
	}
}

// BenchmarkSynthesize reports synthetic images written per second at the default size.
func BenchmarkSynthesize(b *testing.B) {
	const n = 400
	var elapsed time.Duration
	for i := 0; i < b.N; i++ {
		dir := b.TempDir()
		t0 := time.Now()
		if _, err := Synthesize(dir, SynthOptions{Images: n, Seed: uint64(i)}); err != nil {
			b.Fatal(err)
		}
		elapsed += time.Since(t0)
	}
	b.ReportMetric(float64(n*b.N)/elapsed.Seconds(), "images/s")
	_ = fmt.Sprint()
}

// synthDescription is what the captions of im say between them: the background and
// every shape's kind, colour, size and texture, with its grid cell when positions is set.
func synthDescription(im SynthImage, positions bool) string {
	parts := make([]string, len(im.Shapes))
	for i, s := range im.Shapes {
		parts[i] = s.Kind + "/" + s.Colour + "/" + s.Size + "/" + s.Texture
		if positions {
			parts[i] += fmt.Sprintf("@%d,%d", s.Row, s.Col)
		}
	}
	slices.Sort(parts)
	return im.Background + ": " + strings.Join(parts, "; ")
}

// Retrieval cannot tell apart two images that the captions describe alike, so the share
// of images whose description another image shares bounds text-to-image R@1 from above.
// Among 500 images (the size of the retrieval check's test split), at most 1.5% may share
// the full description (background, shapes and cells) and at most 4% the description
// without positions (what the relative-position captions pin down).
func TestSynthDescriptionCollisions(t *testing.T) {
	const n = 500
	res, err := Synthesize(t.TempDir(), SynthOptions{Images: n, Size: 32, Seed: 11, Val: -1, Test: -1})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		positions bool
		bound     float64
	}{{true, 0.015}, {false, 0.04}} {
		count := map[string]int{}
		for _, im := range res.Images {
			count[synthDescription(im, c.positions)]++
		}
		shared := 0
		for _, im := range res.Images {
			if count[synthDescription(im, c.positions)] > 1 {
				shared++
			}
		}
		if rate := float64(shared) / n; rate > c.bound {
			t.Errorf("positions %v: %d of %d images (%.1f%%) share their description with another, want at most %.1f%%",
				c.positions, shared, n, 100*rate, 100*c.bound)
		} else {
			t.Logf("positions %v: %d of %d images share their description", c.positions, shared, n)
		}
	}
}

// TestSynthShapeKinds checks that every kind a scene can draw has a signed distance
// (negative at the centre, positive far outside), and that a scene with any other kind
// is an error naming it, with nothing drawn, rather than a panic in a worker goroutine.
func TestSynthShapeKinds(t *testing.T) {
	for _, kind := range append(slices.Clone(baseShapes), shiftedShapes...) {
		sdf := shapeSDFs[kind]
		if sdf == nil {
			t.Errorf("shape kind %q has no signed distance", kind)
			continue
		}
		probe := vec{0, 0}
		if kind == "ring" || kind == "crescent" { // hollow: their body is off-centre
			probe = vec{-0.7, 0}
		}
		if in, out := sdf(probe), sdf(vec{3, 3}); in >= 0 || out <= 0 {
			t.Errorf("%s: signed distance %g inside, %g outside", kind, in, out)
		}
	}
	img := image.NewRGBA(image.Rect(0, 0, 32, 32))
	for i := range img.Pix {
		img.Pix[i] = 7
	}
	s := SynthImage{Width: 32, Height: 32, Shapes: []SynthShape{
		{Kind: "circle", X: 16, Y: 16, Radius: 5}, {Kind: "blob", X: 16, Y: 16, Radius: 5}}}
	err := render(&s, rand.New(rand.NewPCG(1, 2)), img)
	if err == nil || !strings.Contains(err.Error(), `"blob"`) {
		t.Fatalf("render of a blob: %v, want an error naming it", err)
	}
	for i, v := range img.Pix {
		if v != 7 {
			t.Fatalf("render drew pixel byte %d before failing", i)
		}
	}
}
