// Command preprocess measures goclip's image pipeline: JPEG decoding plus CLIP
// preprocessing through dataset.Loader, and reading the preprocessed .npy cache.
// bench/preprocess.sh runs it next to the PIL peer (bench/peer/preprocess_pil.py).
//
//	go run ./bench/preprocess -gen DIR [-n 200]        write synthetic 500x375 JPEGs
//	go run ./bench/preprocess -dir DIR [-workers 2]    time them; prints one JSON line
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"image"
	"image/color"
	"image/jpeg"
	"io"
	"log"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"time"

	"goclip/dataset"
)

func main() {
	gen := flag.String("gen", "", "write synthetic JPEGs to this folder and exit")
	n := flag.Int("n", 200, "images to write with -gen")
	dir := flag.String("dir", "", "folder of JPEGs to time")
	workers := flag.Int("workers", 2, "loader workers")
	size := flag.Int("size", 224, "image side")
	batch := flag.Int("batch", 32, "batch size")
	minTime := flag.Duration("time", 3*time.Second, "minimum time per measurement")
	flag.Parse()
	switch {
	case *gen != "":
		if err := generate(*gen, *n); err != nil {
			log.Fatal(err)
		}
	case *dir != "":
		if err := measure(*dir, *workers, *size, *batch, *minTime); err != nil {
			log.Fatal(err)
		}
	default:
		flag.Usage()
		os.Exit(2)
	}
}

// generate writes n 500x375 JPEGs (quality 90) of smooth random content: a few
// random sinusoids per channel plus mild noise, like a photograph's spectrum.
func generate(dir string, n int) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for i := 0; i < n; i++ {
		rng := rand.New(rand.NewPCG(uint64(i), 42))
		m := image.NewRGBA(image.Rect(0, 0, 500, 375))
		type wave struct{ fx, fy, ph, amp float64 }
		var waves [3][4]wave
		for c := range waves {
			for k := range waves[c] {
				waves[c][k] = wave{rng.Float64() * 0.08, rng.Float64() * 0.08, rng.Float64() * 6.28, 20 + rng.Float64()*30}
			}
		}
		for y := 0; y < 375; y++ {
			for x := 0; x < 500; x++ {
				var v [3]uint8
				for c := range v {
					s := 128.0
					for _, w := range waves[c] {
						s += w.amp * math.Sin(w.fx*float64(x)+w.fy*float64(y)+w.ph)
					}
					s += rng.NormFloat64() * 4
					v[c] = uint8(max(0, min(255, s)))
				}
				m.SetRGBA(x, y, color.RGBA{v[0], v[1], v[2], 255})
			}
		}
		f, err := os.Create(filepath.Join(dir, fmt.Sprintf("%05d.jpg", i)))
		if err != nil {
			return err
		}
		err = jpeg.Encode(f, m, &jpeg.Options{Quality: 90})
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// epochs runs whole epochs of l until minTime has passed; it returns images/s.
func epochs(l *dataset.Loader, minTime time.Duration) (float64, error) {
	start := time.Now()
	images := 0
	for epoch := 0; time.Since(start) < minTime || epoch == 0; epoch++ {
		if err := l.Start(epoch, 0); err != nil {
			return 0, err
		}
		for {
			b, err := l.Next(context.Background())
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				return 0, err
			}
			images += b.Len()
			b.Release()
		}
	}
	return float64(images) / time.Since(start).Seconds(), nil
}

func measure(dir string, workers, size, batch int, minTime time.Duration) error {
	files, _ := filepath.Glob(filepath.Join(dir, "*.jpg"))
	sort.Strings(files)
	if len(files) == 0 {
		return fmt.Errorf("no .jpg files in %s", dir)
	}
	items := make([]dataset.Item, len(files))
	for i, f := range files {
		items[i] = dataset.Item{Image: f, Name: filepath.Base(f), Captions: []string{"x"}}
	}
	res := map[string]any{"images": len(files), "workers": workers, "size": size}
	base := dataset.LoaderOptions{Size: size, BatchSize: batch, Workers: workers}

	l := dataset.NewLoader(items, base)
	ips, err := epochs(l, minTime)
	l.Close()
	if err != nil {
		return err
	}
	res["decode_preprocess_images_per_s"] = ips

	cdir, err := os.MkdirTemp("", "goclip-bench-cache")
	if err != nil {
		return err
	}
	defer os.RemoveAll(cdir)
	t := time.Now()
	if _, err := dataset.BuildCache(items, cdir, size, dataset.CacheOptions{Workers: workers}); err != nil {
		return err
	}
	res["cache_build_images_per_s"] = float64(len(items)) / time.Since(t).Seconds()
	for _, mode := range []struct {
		key string
		u8  bool
		aug bool
	}{{"cache_uint8_images_per_s", true, false}, {"cache_float32_images_per_s", false, false}, {"cache_uint8_augment_images_per_s", true, true}} {
		o := base
		o.CacheDir, o.Uint8 = cdir, mode.u8
		if mode.aug {
			o.Augment = dataset.DefaultAugment()
		}
		l := dataset.NewLoader(items, o)
		if l.CacheUsed() != len(items) {
			return fmt.Errorf("cache serves %d of %d images", l.CacheUsed(), len(items))
		}
		ips, err := epochs(l, minTime)
		l.Close()
		if err != nil {
			return err
		}
		res[mode.key] = ips
	}
	return json.NewEncoder(os.Stdout).Encode(res)
}
