package dataset

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"image"
	"image/jpeg"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"unicode"

	"goclip/internal/atomicfile"
)

// SynthOptions configure Synthesize.
type SynthOptions struct {
	Images int    // number of images; default 1000
	Size   int    // short side of every image in pixels (32 to 4096); default 224
	Seed   uint64 // the same seed (and options) writes the same bytes
	Domain string // "base" (default) or "shifted"
	// Layout is LayoutFlickr (default) or LayoutImageFolder: one shape per image, in
	// DIR/<colour>_<kind>/NAME.jpg, the layout ReadImageFolder reads (class names such
	// as "red circle"), without captions or splits, into an empty or new folder.
	Layout string

	// Val and Test size the splits written to dataset_flickr30k.json; 0 uses Open's
	// defaults (5% each, 1,000 each beyond 20,000 images), negative means none.
	Val, Test int

	Workers   int                   // rendering goroutines; default GOMAXPROCS
	Quality   int                   // JPEG quality; default 90
	Overwrite bool                  // replace a data set already in the folder
	Progress  func(done, total int) // called after each image, from one goroutine
}

// The layouts of Synthesize.
const (
	LayoutFlickr      = "flickr30k"
	LayoutImageFolder = "imagefolder"
)

// SynthClass is the class of an image of the LayoutImageFolder layout: its one
// shape's colour and kind, the folder name with "_" for spaces ("red_circle").
func SynthClass(im SynthImage) string {
	sh := im.Shapes[0]
	return strings.ReplaceAll(sh.Colour+" "+sh.Kind, " ", "_")
}

// ErrExists is returned (wrapped) by Synthesize when the folder already holds a data
// set and SynthOptions.Overwrite is not set.
var ErrExists = errors.New("folder already holds a data set")

// The synthetic domains.
const (
	DomainBase    = "base"
	DomainShifted = "shifted"
)

// SynthShape is one drawn shape.
type SynthShape struct {
	Kind    string   // circle, square, triangle, star, diamond; shifted: hexagon, cross, crescent, ring
	Colour  string   // colour name as the captions say it
	RGB     [3]uint8 // fill colour before noise
	Texture string   // solid, striped, dotted; shifted: checkered, wavy
	Size    string   // small, medium or large
	X, Y    float64  // centre in pixels
	Radius  float64  // radius of the size class in pixels
	Row     int      // row (0 top) of the 3x3 grid over the image's central square
	Col     int      // column (0 left) of that grid

	rotation, period, angle float64 // outline rotation; texture period and direction
}

// Probe is a point inside the shape that shows its main colour whatever its texture:
// the centre, or for the hollow ring and crescent a point of their body.
func (s SynthShape) Probe() (x, y float64) {
	if s.Kind == "ring" || s.Kind == "crescent" {
		return s.X - 0.7*s.Radius*math.Cos(s.rotation), s.Y - 0.7*s.Radius*math.Sin(s.rotation)
	}
	return s.X, s.Y
}

// SynthImage is what one synthetic image shows.
type SynthImage struct {
	Name          string // file name under flickr30k_images/
	Width, Height int
	Background    string // background colour name
	Shapes        []SynthShape
	Captions      []string // the five captions, in file order
	Split         Split

	bgRGB [3]float64
}

// SynthResult describes a written synthetic data set.
type SynthResult struct {
	Dir              string
	Images           []SynthImage // in file order
	Train, Val, Test int          // images per split
}

// Captions is the number of captions written.
func (r *SynthResult) Captions() int {
	n := 0
	for _, im := range r.Images {
		n += len(im.Captions)
	}
	return n
}

// Synthesize writes a synthetic image/caption data set to dir in the Kaggle Flickr30k
// layout: flickr30k_images/NAME.jpg, results.csv ("image_name| comment_number| comment",
// five captions per image) and a Karpathy split file, dataset_flickr30k.json, whose
// splits are those Open would choose by name hash for the same sizes.
//
// Each image shows one to three large, antialiased shapes (kind, colour, size, texture)
// in distinct cells of a 3x3 grid over its central square, on a coloured background
// with a gradient, soft blotches and pixel noise. The short side is opts.Size; three
// images in five are landscape 4:3 (Flickr's 500x375 shape), one portrait 3:4 and one
// square, so CLIP's centre crop keeps every shape. Captions name every shape's colour
// and kind and its size, texture and position or its place relative to another shape,
// in varied words, so that they are determined by the picture.
//
// Images are drawn by a pool of goroutines, each image from its own random stream
// seeded by (Seed, Domain, index): the output does not depend on the number of workers.
func Synthesize(dir string, opts SynthOptions) (*SynthResult, error) {
	if opts.Images == 0 {
		opts.Images = 1000
	}
	if opts.Size == 0 {
		opts.Size = 224
	}
	if opts.Domain == "" {
		opts.Domain = DomainBase
	}
	if opts.Workers <= 0 {
		opts.Workers = runtime.GOMAXPROCS(0)
	}
	if opts.Quality == 0 {
		opts.Quality = 90
	}
	if opts.Layout == "" {
		opts.Layout = LayoutFlickr
	}
	folder := opts.Layout == LayoutImageFolder
	switch {
	case opts.Images < 0:
		return nil, fmt.Errorf("synth: %d images: want at least 1", opts.Images)
	case opts.Size < 32 || opts.Size > 4096:
		return nil, fmt.Errorf("synth: size %d: want 32 to 4096 pixels", opts.Size)
	case opts.Domain != DomainBase && opts.Domain != DomainShifted:
		return nil, fmt.Errorf("synth: unknown domain %q: want %q or %q", opts.Domain, DomainBase, DomainShifted)
	case opts.Layout != LayoutFlickr && !folder:
		return nil, fmt.Errorf("synth: unknown layout %q: want %q or %q", opts.Layout, LayoutFlickr, LayoutImageFolder)
	case opts.Quality < 1 || opts.Quality > 100:
		return nil, fmt.Errorf("synth: JPEG quality %d: want 1 to 100", opts.Quality)
	}
	val, test, err := SplitOptions{ValCount: opts.Val, TestCount: opts.Test}.SplitSizes(opts.Images)
	if err != nil {
		return nil, fmt.Errorf("synth: %w", err)
	}
	if folder { // Overwrite or not: stale class folders would join the new classes
		if entries, err := os.ReadDir(dir); err == nil && len(entries) > 0 {
			return nil, fmt.Errorf("synth: %s: %w (the imagefolder layout needs an empty or new folder)", dir, ErrExists)
		}
	}
	if !opts.Overwrite && !folder {
		for _, f := range []string{KaggleFile, KarpathyFiles[0]} {
			if _, err := os.Stat(filepath.Join(dir, f)); err == nil {
				return nil, fmt.Errorf("synth: %s: %w (%s)", dir, ErrExists, f)
			}
		}
	}
	imgDir := filepath.Join(dir, "flickr30k_images")
	if folder {
		imgDir = dir
	}
	if err := os.MkdirAll(imgDir, 0o755); err != nil {
		return nil, fmt.Errorf("synth: %w", err)
	}

	n := opts.Images
	res := &SynthResult{Dir: dir, Images: make([]SynthImage, n)}
	shifted := opts.Domain == DomainShifted
	domainKey := fnv.New64a()
	domainKey.Write([]byte(opts.Domain))
	salt := domainKey.Sum64()

	var (
		next    atomic.Int64
		failed  atomic.Bool
		errOnce sync.Once
		firstEr error
		wg      sync.WaitGroup
	)
	done := make(chan struct{}, opts.Workers)
	for w := 0; w < opts.Workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var buf bytes.Buffer
			canvases := make(map[image.Point]*image.RGBA) // reused: one per image shape
			for !failed.Load() {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				s1 := mix64(opts.Seed ^ mix64(uint64(i)))
				rng := rand.New(rand.NewPCG(s1, mix64(s1^salt)))
				name := fmt.Sprintf("%s_%06d.jpg", opts.Domain, i)
				scene := sampleScene(rng, name, opts.Size, shifted, folder)
				dims := image.Pt(scene.Width, scene.Height)
				img := canvases[dims]
				if img == nil {
					img = image.NewRGBA(image.Rectangle{Max: dims})
					canvases[dims] = img
				}
				err := render(&scene, rng, img)
				buf.Reset()
				if err == nil {
					err = jpeg.Encode(&buf, img, &jpeg.Options{Quality: opts.Quality})
				}
				path := filepath.Join(imgDir, name)
				if folder {
					path = filepath.Join(imgDir, SynthClass(scene), name)
					if err == nil {
						err = os.MkdirAll(filepath.Dir(path), 0o755)
					}
				}
				if err == nil {
					err = os.WriteFile(path, buf.Bytes(), 0o644)
				}
				if err != nil {
					errOnce.Do(func() { firstEr = fmt.Errorf("synth: %s: %w", name, err) })
					failed.Store(true)
					return
				}
				res.Images[i] = scene
				done <- struct{}{}
			}
		}()
	}
	go func() { wg.Wait(); close(done) }()
	count := 0
	for range done {
		count++
		if opts.Progress != nil {
			opts.Progress(count, n)
		}
	}
	if firstEr != nil {
		return nil, firstEr
	}

	if folder {
		return res, nil
	}
	names := make([]string, n)
	for i := range res.Images {
		names[i] = res.Images[i].Name
	}
	for i, s := range AssignSplits(names, val, test) {
		res.Images[i].Split = s
		switch s {
		case Train:
			res.Train++
		case Val:
			res.Val++
		case Test:
			res.Test++
		}
	}
	karpathy := filepath.Join(dir, KarpathyFiles[0])
	if err := atomicfile.WriteFile(karpathy, func(w io.Writer) error {
		return writeKarpathy(w, res.Images)
	}); err != nil {
		return nil, fmt.Errorf("synth: writing %s: %w", karpathy, err)
	}
	kaggle := filepath.Join(dir, KaggleFile)
	if err := atomicfile.WriteFile(kaggle, func(w io.Writer) error {
		io.WriteString(w, "image_name| comment_number| comment\n")
		for _, im := range res.Images {
			for k, c := range im.Captions {
				fmt.Fprintf(w, "%s| %d| %s\n", im.Name, k, c)
			}
		}
		return nil // write errors are sticky: the flush reports them
	}); err != nil {
		return nil, fmt.Errorf("synth: writing %s: %w", kaggle, err)
	}
	return res, nil
}

// writeKarpathy writes images in the Karpathy split file format.
func writeKarpathy(w io.Writer, images []SynthImage) error {
	type sentence struct {
		Tokens []string `json:"tokens"`
		Raw    string   `json:"raw"`
		ImgID  int      `json:"imgid"`
		SentID int      `json:"sentid"`
	}
	type entry struct {
		SentIDs   []int      `json:"sentids"`
		ImgID     int        `json:"imgid"`
		Sentences []sentence `json:"sentences"`
		Split     string     `json:"split"`
		Filename  string     `json:"filename"`
	}
	doc := struct {
		Images  []entry `json:"images"`
		Dataset string  `json:"dataset"`
	}{Dataset: "flickr30k", Images: make([]entry, len(images))}
	sent := 0
	for i, im := range images {
		e := entry{ImgID: i, Split: string(im.Split), Filename: im.Name}
		for _, c := range im.Captions {
			tokens := strings.FieldsFunc(strings.ToLower(c), func(r rune) bool {
				return !unicode.IsLetter(r) && !unicode.IsDigit(r) && r != '-'
			})
			e.Sentences = append(e.Sentences, sentence{Tokens: tokens, Raw: c, ImgID: i, SentID: sent})
			e.SentIDs = append(e.SentIDs, sent)
			sent++
		}
		doc.Images[i] = e
	}
	return json.NewEncoder(w).Encode(doc)
}
