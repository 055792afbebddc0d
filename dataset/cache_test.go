package dataset

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"codeberg.org/sbinet/npyio/npy"
)

func TestCacheBuildAndLoad(t *testing.T) {
	dir := t.TempDir()
	items, bad := loaderTestItems(t, dir, 12)
	cdir := DefaultCacheDir(dir)
	rep := &Report{}
	var progress int
	st, err := BuildCache(items, cdir, 16, CacheOptions{Workers: 3, Report: rep, Progress: func(d, n int) { progress = d }})
	if err != nil {
		t.Fatal(err)
	}
	if st.Images != 12-len(bad) || st.Failed != len(bad) || st.UpToDate || progress != 12 {
		t.Fatalf("stats %+v, progress %d", st, progress)
	}
	if rep.SkippedFor(UnreadableImage)+rep.SkippedFor(MissingImage) != len(bad) {
		t.Fatalf("report: %s", rep.Summary())
	}
	// The shard is a plain (N, S, S, 3) uint8 .npy: read it whole with npyio.
	f, err := os.Open(filepath.Join(st.Dir, "shard-00000.npy"))
	if err != nil {
		t.Fatal(err)
	}
	r, err := npy.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	if sh := r.Header.Descr.Shape; !slices.Equal(sh, []int{9, 16, 16, 3}) {
		t.Fatalf("shard shape %v", sh)
	}
	var data []uint8
	if err := r.Read(&data); err != nil {
		t.Fatal(err)
	}
	f.Close()
	img, _ := ReadImage(items[1].Image, 0)
	if !slices.Equal(data[3*16*16:2*3*16*16], ResizeCropUint8(img, 16).Pix) { // row 1: items[1]
		t.Fatal("shard row differs from ResizeCropUint8")
	}

	// Up to date: nothing rebuilt.
	st2, err := BuildCache(items, cdir, 16, CacheOptions{})
	if err != nil || !st2.UpToDate {
		t.Fatalf("second build: %+v %v", st2, err)
	}

	// A loader with the cache gives the same batches as one without.
	opts := LoaderOptions{Size: 16, BatchSize: 4, Seed: 5, Shuffle: true, Workers: 2}
	plain := NewLoader(items, opts)
	want := runEpoch(t, plain, 0)
	plain.Close()
	opts.CacheDir = cdir
	cached := NewLoader(items, opts)
	if cached.CacheUsed() != 12 {
		t.Fatalf("cache serves %d items, want 12 (9 images + 3 known bad)", cached.CacheUsed())
	}
	got := runEpoch(t, cached, 0)
	if !slices.Equal(want.pixels, got.pixels) || !slices.EqualFunc(want.items, got.items, slices.Equal) {
		t.Fatal("cached batches differ from decoded ones")
	}
	if cached.CacheHits() != 9 {
		t.Fatalf("cache hits %d", cached.CacheHits())
	}
	if n, _ := cached.Skipped(); n != len(bad) {
		t.Fatalf("skipped %d", n)
	}
	cached.Close()

	// A changed source is served by decoding, and makes BuildCache rebuild.
	later := time.Now().Add(time.Hour)
	os.Chtimes(items[1].Image, later, later)
	l := NewLoader(items, opts)
	if l.CacheUsed() != 11 {
		t.Fatalf("after touching one image the cache serves %d, want 11", l.CacheUsed())
	}
	l.Close()
	st3, err := BuildCache(items, cdir, 16, CacheOptions{})
	if err != nil || st3.UpToDate || st3.Images != 9 {
		t.Fatalf("rebuild: %+v %v", st3, err)
	}
	// Another size is another cache.
	if l := NewLoader(items, LoaderOptions{Size: 8, CacheDir: cdir}); l.CacheUsed() != 0 {
		t.Fatal("size-16 cache used for size 8")
	}
}

func TestCacheAugmentFromCache(t *testing.T) {
	dir := t.TempDir()
	items, _ := loaderTestItems(t, dir, 6)
	items = items[3:6]
	cdir := filepath.Join(dir, "c")
	if _, err := BuildCache(items, cdir, 16, CacheOptions{Workers: 1}); err != nil {
		t.Fatal(err)
	}
	opts := LoaderOptions{Size: 16, BatchSize: 3, Workers: 2, Augment: DefaultAugment(), Uint8: true, CacheDir: cdir, Seed: 2}
	l := NewLoader(items, opts)
	defer l.Close()
	l.Start(0, 0)
	b, err := l.Next(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	// The crop comes from the cached S x S image, with the sample's own RNG.
	c, _ := OpenCache(cdir, 16)
	defer c.Close()
	n := 3 * 16 * 16
	for k, i := range b.Items {
		e, ok := c.Lookup(items[i].Image)
		if !ok {
			t.Fatal("not cached")
		}
		buf := make([]uint8, n)
		c.ReadInto(e, buf)
		rng := SampleRNG(2, 0, i)
		rng.IntN(3) // the caption draw comes first
		want := opts.Augment.Apply(RGB{W: 16, H: 16, Pix: buf}, 16, rng)
		if !slices.Equal(b.PixelsU8[k*n:(k+1)*n], want.Pix) {
			t.Fatalf("image %d: augmented cache pixels differ", i)
		}
	}
}

// TestCacheProgress: a build reports (0, n) first, then every item (duplicates too) up
// to (n, n); an up-to-date cache reports nothing.
func TestCacheProgress(t *testing.T) {
	dir := t.TempDir()
	items, _ := loaderTestItems(t, dir, 5)
	items = append(items, items[0]) // a duplicate last
	var calls [][2]int
	progress := func(d, n int) { calls = append(calls, [2]int{d, n}) }
	if _, err := BuildCache(items, DefaultCacheDir(dir), 16, CacheOptions{Workers: 2, Progress: progress}); err != nil {
		t.Fatal(err)
	}
	if len(calls) != 7 {
		t.Fatalf("progress calls %v, want (0, 6) to (6, 6)", calls)
	}
	for i, c := range calls {
		if c != [2]int{i, 6} {
			t.Fatalf("progress calls %v, want (0, 6) to (6, 6)", calls)
		}
	}
	calls = nil
	if _, err := BuildCache(items, DefaultCacheDir(dir), 16, CacheOptions{Progress: progress}); err != nil || len(calls) != 0 {
		t.Fatalf("up-to-date build: %v, progress %v", err, calls)
	}
}
