package dataset

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"image"
	"image/jpeg"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
)

// ConvertOptions configure WriteShards.
type ConvertOptions struct {
	PerShard int // samples per shard (default 10000)
	// Resize, when > 0, re-encodes every image as a JPEG (quality Quality) whose
	// shortest side is Resize pixels (PIL's bicubic, as preprocessing resizes);
	// otherwise the image files are copied as they are.
	Resize  int
	Quality int // JPEG quality of re-encoded images (default 95)
	Workers int // goroutines reading and re-encoding images (default GOMAXPROCS)
	// Report, when set, records the images skipped (missing, unreadable).
	Report *Report
}

// ConvertResult is what WriteShards wrote: the shards of each split, and the samples.
type ConvertResult struct {
	Shards  map[Split][]string
	Samples map[Split]int
}

// WriteShards writes the items of ds as webdataset shards under out, one folder per
// split (out/train, out/val, out/test; each with its SizesFile), keeping ds's splits.
// Each image is one sample, keyed by its position in the split ("000000042"): the
// image (jpg, png, ...: its own extension, or jpg when re-encoded), txt (its first
// caption) and json ({"caption": first, "captions": all, "name": its file name,
// "split": ...}), as img2dataset lays samples out. The output does not depend on
// Workers.
func WriteShards(ds *Dataset, out string, opts ConvertOptions) (*ConvertResult, error) {
	if opts.PerShard <= 0 {
		opts.PerShard = 10000
	}
	if opts.Quality <= 0 {
		opts.Quality = 95
	}
	if opts.Workers <= 0 {
		opts.Workers = runtime.GOMAXPROCS(0)
	}
	if opts.Resize < 0 {
		return nil, fmt.Errorf("shard: resize %d: want 0 (copy) or a side in pixels", opts.Resize)
	}
	if ds == nil {
		return nil, errors.New("shard: no data set (nil *Dataset)")
	}
	for _, it := range ds.Items {
		if len(it.Captions) == 0 {
			return nil, fmt.Errorf("shard: image %s has no caption (every sample needs one)", itemLabel(it))
		}
	}
	res := &ConvertResult{Shards: map[Split][]string{}, Samples: map[Split]int{}}
	for _, split := range []Split{Train, Val, Test} {
		items := ds.Split(split)
		if len(items) == 0 {
			continue
		}
		dir := filepath.Join(out, string(split))
		if tars, _ := filepath.Glob(filepath.Join(dir, "*.tar")); len(tars) > 0 {
			return nil, fmt.Errorf("shard: %s already holds shards (%s): choose another --out", dir, filepath.Base(tars[0]))
		}
		w, err := NewShardWriter(dir, string(split), opts.PerShard)
		if err != nil {
			return nil, err
		}
		n, err := convertItems(w, items, split, opts)
		if err != nil {
			w.abort(err)
			return nil, err
		}
		paths, err := w.Close()
		if err != nil {
			return nil, err
		}
		res.Shards[split], res.Samples[split] = paths, n
	}
	return res, nil
}

type converted struct {
	ext  string
	data []byte
	err  error
}

// convertItems writes items to w in order, reading (and re-encoding) images in
// parallel, a window at a time.
func convertItems(w *ShardWriter, items []Item, split Split, opts ConvertOptions) (int, error) {
	window := 8 * opts.Workers
	n := 0
	for lo := 0; lo < len(items); lo += window {
		hi := min(lo+window, len(items))
		out := make([]converted, hi-lo)
		var wg sync.WaitGroup
		next := make(chan int)
		for range opts.Workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range next {
					out[i-lo] = convertImage(items[i], opts)
				}
			}()
		}
		for i := lo; i < hi; i++ {
			next <- i
		}
		close(next)
		wg.Wait()
		for i := lo; i < hi; i++ {
			c, it := out[i-lo], items[i]
			if c.err != nil {
				if opts.Report != nil {
					opts.Report.AddSkippedImage(imageReason(c.err), itemLabel(it))
				}
				continue
			}
			meta, err := json.Marshal(map[string]any{"caption": it.Captions[0], "captions": it.Captions, "name": it.Name, "split": split})
			if err != nil {
				return n, err
			}
			key := fmt.Sprintf("%09d", n)
			if err := w.Add(key, map[string][]byte{c.ext: c.data, "txt": []byte(it.Captions[0]), "json": meta}); err != nil {
				return n, err
			}
			n++
		}
	}
	return n, nil
}

// convertImage reads an item's image: its bytes as they are (checked to decode's
// header), or re-encoded at opts.Resize.
func convertImage(it Item, opts ConvertOptions) converted {
	data, err := os.ReadFile(it.Image)
	if err != nil {
		return converted{err: &ImageError{it.Image, err}}
	}
	if opts.Resize == 0 {
		if _, _, err := image.DecodeConfig(bytes.NewReader(data)); err != nil {
			return converted{err: &ImageError{it.Image, fmt.Errorf("not an image: %w", err)}}
		}
		ext := strings.ToLower(strings.TrimPrefix(filepath.Ext(it.Image), "."))
		if extRank(ext) == len(imageExts) {
			ext = "jpg"
		}
		return converted{ext: ext, data: data}
	}
	img, err := DecodeImage(data, it.Image, 0)
	if err != nil {
		return converted{err: err}
	}
	img = ResizeShortest(img, opts.Resize)
	m := &image.RGBA{Pix: make([]uint8, 4*img.W*img.H), Stride: 4 * img.W, Rect: image.Rect(0, 0, img.W, img.H)}
	for i := 0; i < img.W*img.H; i++ {
		m.Pix[4*i], m.Pix[4*i+1], m.Pix[4*i+2], m.Pix[4*i+3] = img.Pix[3*i], img.Pix[3*i+1], img.Pix[3*i+2], 255
	}
	var buf bytes.Buffer
	if err := jpeg.Encode(&buf, m, &jpeg.Options{Quality: opts.Quality}); err != nil {
		return converted{err: &ImageError{it.Image, err}}
	}
	return converted{ext: "jpg", data: buf.Bytes()}
}
