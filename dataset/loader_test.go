package dataset

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"image"
	"image/color"
	"image/jpeg"
	"image/png"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"
)

// loaderTestItems writes n small images (PNG and JPEG, assorted sizes) plus three
// unreadable ones (truncated, empty, missing) and returns the items and the indices of
// the bad ones.
func loaderTestItems(t testing.TB, dir string, n int) ([]Item, []int) {
	t.Helper()
	var items []Item
	for i := 0; i < n; i++ {
		w, h := 40+7*(i%5), 30+11*(i%4)
		m := image.NewNRGBA(image.Rect(0, 0, w, h))
		for y := 0; y < h; y++ {
			for x := 0; x < w; x++ {
				m.SetNRGBA(x, y, color.NRGBA{uint8(x*5 + i*17), uint8(y*7 + i*3), uint8((x + y) * i), 255})
			}
		}
		name := fmt.Sprintf("img%03d.png", i)
		path := filepath.Join(dir, name)
		f, err := os.Create(path)
		if err != nil {
			t.Fatal(err)
		}
		if i%3 == 0 {
			name = strings.Replace(name, ".png", ".jpg", 1)
			f.Close()
			os.Remove(path)
			path = filepath.Join(dir, name)
			f, _ = os.Create(path)
			jpeg.Encode(f, m, &jpeg.Options{Quality: 90})
		} else {
			png.Encode(f, m)
		}
		f.Close()
		items = append(items, Item{Image: path, Name: name, Split: Train,
			Captions: []string{"cap a " + name, "cap b " + name, "cap c " + name}})
	}
	// Bad images at fixed places.
	good, _ := os.ReadFile(items[0].Image)
	bad := []int{2, n / 2, n - 1}
	os.WriteFile(filepath.Join(dir, "trunc.jpg"), good[:len(good)/3], 0o644)
	os.WriteFile(filepath.Join(dir, "empty.jpg"), nil, 0o644)
	badPaths := []string{"trunc.jpg", "empty.jpg", "missing.jpg"}
	for k, i := range bad {
		items[i].Image = filepath.Join(dir, badPaths[k])
		items[i].Name = badPaths[k]
	}
	return items, bad
}

type epochDigest struct {
	items    [][]int
	captions [][]string
	pixels   []string
	ids      [][]int64
}

func runEpoch(t testing.TB, l *Loader, epoch int) epochDigest {
	t.Helper()
	if err := l.Start(epoch, 0); err != nil {
		t.Fatal(err)
	}
	return drain(t, l)
}

func drain(t testing.TB, l *Loader) epochDigest {
	t.Helper()
	var d epochDigest
	for {
		b, err := l.Next(context.Background())
		if errors.Is(err, io.EOF) {
			return d
		}
		if err != nil {
			t.Fatal(err)
		}
		h := sha256.New()
		if b.Pixels != nil {
			for _, v := range b.Pixels {
				fmt.Fprint(h, v)
			}
		}
		h.Write(b.PixelsU8)
		d.items = append(d.items, slices.Clone(b.Items))
		d.captions = append(d.captions, slices.Clone(b.Captions))
		d.pixels = append(d.pixels, fmt.Sprintf("%x", h.Sum(nil)))
		d.ids = append(d.ids, slices.Clone(b.InputIDs))
		b.Release()
	}
}

func TestLoaderDeterministicAcrossWorkers(t *testing.T) {
	items, _ := loaderTestItems(t, t.TempDir(), 23)
	opts := LoaderOptions{Size: 16, BatchSize: 4, Seed: 3, Shuffle: true, Augment: DefaultAugment(),
		Tokenize: func(s string) []int64 { return []int64{int64(len(s)), 1, 2} }}
	var ref epochDigest
	for _, w := range []int{1, 4} {
		opts.Workers = w
		l := NewLoader(items, opts)
		d := runEpoch(t, l, 1)
		l.Close()
		if w == 1 {
			ref = d
			continue
		}
		for i := range ref.items {
			if !slices.Equal(ref.items[i], d.items[i]) || !slices.Equal(ref.captions[i], d.captions[i]) ||
				ref.pixels[i] != d.pixels[i] || !slices.Equal(ref.ids[i], d.ids[i]) {
				t.Fatalf("batch %d differs between 1 and %d workers: %v vs %v", i, w, ref.items[i], d.items[i])
			}
		}
		if len(ref.items) != len(d.items) {
			t.Fatalf("%d vs %d batches", len(ref.items), len(d.items))
		}
	}
	// Another epoch is another order; the same epoch again is the same.
	l := NewLoader(items, LoaderOptions{Size: 16, BatchSize: 4, Seed: 3, Shuffle: true, Workers: 2})
	defer l.Close()
	if a, b := l.Order(1), l.Order(2); slices.Equal(a, b) {
		t.Fatal("epochs 1 and 2 have the same order")
	}
	if a, b := l.Order(1), l.Order(1); !slices.Equal(a, b) {
		t.Fatal("epoch order not reproducible")
	}
}

func TestLoaderEpochCoverageAndSkips(t *testing.T) {
	items, bad := loaderTestItems(t, t.TempDir(), 30)
	rep := &Report{}
	l := NewLoader(items, LoaderOptions{Size: 16, BatchSize: 4, Seed: 1, Shuffle: true, Workers: 3, Report: rep})
	defer l.Close()
	for epoch := 0; epoch < 2; epoch++ {
		d := runEpoch(t, l, epoch)
		seen := map[int]int{}
		for bi, b := range d.items {
			if bi < len(d.items)-1 && len(b) != 4 {
				t.Fatalf("epoch %d batch %d has %d images", epoch, bi, len(b))
			}
			for _, i := range b {
				seen[i]++
			}
		}
		for i := range items {
			want := 1
			if slices.Contains(bad, i) {
				want = 0
			}
			if seen[i] != want {
				t.Fatalf("epoch %d: item %d seen %d times, want %d", epoch, i, seen[i], want)
			}
		}
		if got := len(d.items); got != (30-3+3)/4 {
			t.Fatalf("epoch %d: %d batches", epoch, got)
		}
	}
	n, errs := l.Skipped()
	if n != 3 || len(errs) != 3 {
		t.Fatalf("skipped %d (%v), want 3", n, errs)
	}
	for _, e := range errs {
		if !strings.Contains(e.Error(), ".jpg") {
			t.Errorf("error does not name the file: %v", e)
		}
	}
	if rep.SkippedFor(UnreadableImage) != 2 || rep.SkippedFor(MissingImage) != 1 {
		t.Fatalf("report: %s", rep.Summary())
	}
}

func TestLoaderDropLastAndCaptions(t *testing.T) {
	items, _ := loaderTestItems(t, t.TempDir(), 14) // 11 readable
	l := NewLoader(items, LoaderOptions{Size: 8, BatchSize: 4, DropLast: true, FirstCaption: true, Workers: 2})
	defer l.Close()
	d := runEpoch(t, l, 0)
	if len(d.items) != 2 {
		t.Fatalf("%d batches, want 2 (11 images, drop last)", len(d.items))
	}
	for bi, b := range d.items {
		for k, i := range b {
			if d.captions[bi][k] != items[i].Captions[0] {
				t.Fatalf("caption %q, want the first", d.captions[bi][k])
			}
		}
	}
	// Without FirstCaption, captions vary across epochs (seeded).
	l2 := NewLoader(items, LoaderOptions{Size: 8, BatchSize: 4, Workers: 2})
	defer l2.Close()
	a, b := runEpoch(t, l2, 0), runEpoch(t, l2, 1)
	if slices.Equal(slices.Concat(a.captions...), slices.Concat(b.captions...)) {
		t.Fatal("captions identical across epochs")
	}
	if c := runEpoch(t, l2, 0); !slices.Equal(slices.Concat(a.captions...), slices.Concat(c.captions...)) {
		t.Fatal("caption draws not reproducible")
	}
}

func TestLoaderResume(t *testing.T) {
	items, _ := loaderTestItems(t, t.TempDir(), 26)
	opts := LoaderOptions{Size: 8, BatchSize: 3, Seed: 9, Shuffle: true, Workers: 2, Augment: DefaultAugment()}
	l := NewLoader(items, opts)
	defer l.Close()
	full := runEpoch(t, l, 4)
	// Stop after 3 batches, resume from the third batch's Next.
	l.Start(4, 0)
	var pos Position
	for range 3 {
		b, err := l.Next(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		pos = b.Next
	}
	l2 := NewLoader(items, opts)
	defer l2.Close()
	if err := l2.StartAt(pos); err != nil {
		t.Fatal(err)
	}
	rest := drain(t, l2)
	if !slices.EqualFunc(full.items[3:], rest.items, slices.Equal) || !slices.Equal(full.pixels[3:], rest.pixels) {
		t.Fatalf("resumed batches differ:\n%v\n%v", full.items[3:], rest.items)
	}
	// Start(epoch, k) is exact when no image before batch k was skipped.
	l3 := NewLoader(items[3:11], opts) // all readable
	defer l3.Close()
	all := runEpoch(t, l3, 0)
	l3.Start(0, 1)
	if d := drain(t, l3); !slices.EqualFunc(all.items[1:], d.items, slices.Equal) {
		t.Fatalf("Start(0, 1): %v vs %v", d.items, all.items[1:])
	}
}

func TestLoaderCloseNoGoroutineLeak(t *testing.T) {
	items, _ := loaderTestItems(t, t.TempDir(), 40)
	before := runtime.NumGoroutine()
	for _, w := range []int{1, 4, 8} {
		l := NewLoader(items, LoaderOptions{Size: 16, BatchSize: 2, Workers: w, Prefetch: 1})
		l.Start(0, 0)
		l.Next(context.Background()) // leave the pipeline full and blocked
		l.Start(1, 0)                // restart mid-epoch
		if _, err := l.Next(context.Background()); err != nil {
			t.Fatal(err)
		}
		l.Close()
		l.Close() // idempotent
		if err := l.Start(0, 0); err == nil {
			t.Fatal("Start after Close succeeded")
		}
	}
	deadline := time.Now().Add(2 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before {
		t.Fatalf("%d goroutines after Close, %d before", n, before)
	}
	// Next honours its context.
	l := NewLoader(items, LoaderOptions{Size: 16, BatchSize: 2, Workers: 1})
	defer l.Close()
	l.Start(0, 0)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	for {
		_, err := l.Next(ctx)
		if errors.Is(err, context.Canceled) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
}

func TestLoaderPixelsMatchPreprocess(t *testing.T) {
	items, _ := loaderTestItems(t, t.TempDir(), 6)
	items = items[3:5]
	for _, u8 := range []bool{false, true} {
		l := NewLoader(items, LoaderOptions{Size: 12, BatchSize: 2, Workers: 2, Uint8: u8})
		l.Start(0, 0)
		b, err := l.Next(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		for k, i := range b.Items {
			img, _ := ReadImage(items[i].Image, 0)
			crop := ResizeCropUint8(img, 12)
			n := 3 * 12 * 12
			if u8 {
				if !slices.Equal(b.PixelsU8[k*n:(k+1)*n], crop.Pix) {
					t.Fatal("PixelsU8 differ from ResizeCropUint8")
				}
			} else if !slices.Equal(b.Pixels[k*n:(k+1)*n], Preprocess(img, 12)) {
				t.Fatal("Pixels differ from Preprocess")
			}
		}
		l.Close()
	}
}

func TestLoaderTokenizeLengthMismatch(t *testing.T) {
	items, _ := loaderTestItems(t, t.TempDir(), 6)
	n := 0
	l := NewLoader(items, LoaderOptions{Size: 8, BatchSize: 2, Workers: 1,
		Tokenize: func(s string) []int64 { n++; return make([]int64, n) }})
	defer l.Close()
	l.Start(0, 0)
	var err error
	for err == nil {
		_, err = l.Next(context.Background())
	}
	if errors.Is(err, io.EOF) || !strings.Contains(err.Error(), "context length") {
		t.Fatalf("got %v", err)
	}
}

func TestAugmentDeterministicAndBounded(t *testing.T) {
	img := NewRGB(50, 30)
	for i := range img.Pix {
		img.Pix[i] = uint8(i)
	}
	o := AugmentOptions{RandomResizedCrop: true, HFlip: true}
	a := o.Apply(img, 16, SampleRNG(1, 2, 3))
	b := o.Apply(img, 16, SampleRNG(1, 2, 3))
	if a.W != 16 || a.H != 16 || !slices.Equal(a.Pix, b.Pix) {
		t.Fatal("augmentation not reproducible from the sample RNG")
	}
	for k := 0; k < 200; k++ {
		x, y, w, h := o.cropBox(50, 30, SampleRNG(int64(k), 0, 0))
		// 50x30 is wider than 4/3: boxes that fit are rare, most fall back to 40x30.
		area := float64(w*h) / 1500
		if x < 0 || y < 0 || x+w > 50 || y+h > 30 || area < 0.8 || area > 1.0 {
			t.Fatalf("box %d,%d %dx%d (area %.2f)", x, y, w, h, area)
		}
	}
	// Flipping twice is the identity.
	c := RGB{W: img.W, H: img.H, Pix: slices.Clone(img.Pix)}
	FlipHorizontal(c)
	if slices.Equal(c.Pix, img.Pix) {
		t.Fatal("flip did nothing")
	}
	FlipHorizontal(c)
	if !slices.Equal(c.Pix, img.Pix) {
		t.Fatal("flip twice is not the identity")
	}
	// Disabled augmentation is the CLIP preprocessing.
	if !slices.Equal(AugmentOptions{}.Apply(img, 16, SampleRNG(0, 0, 0)).Pix, ResizeCropUint8(img, 16).Pix) {
		t.Fatal("zero AugmentOptions changed the image")
	}
}
