// Command data measures goclip's shard pipeline: webdataset shards read, decoded and
// preprocessed to 224 by dataset.StreamLoader; then, on one goroutine, the raw JPEG
// decode rate of the decoder this binary was built with (libjpeg-turbo with -tags
// jpegturbo, as make build builds goclip where it is installed, else Go's image/jpeg),
// the preprocessing rate of decoded images, and both together. bench/run.sh data runs it next to the Python peer
// (bench/peer/data_wds.py) on the same shards.
//
//	go run ./bench/data -data 'SHARDS/train-{000000..000003}.tar' [-workers 2] [-time 4s]
//
// It prints one JSON line.
package main

import (
	"archive/tar"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"strings"
	"time"

	"goclip/dataset"
)

func main() {
	spec := flag.String("data", "", "the shards: a brace pattern, a folder of .tar files or a list file")
	workers := flag.Int("workers", 2, "loader workers")
	size := flag.Int("size", 224, "image side")
	batch := flag.Int("batch", 32, "batch size")
	minTime := flag.Duration("time", 4*time.Second, "minimum time of the streaming measurement")
	decodeTime := flag.Duration("decode-time", 2*time.Second, "minimum time of the raw decode measurement")
	decodeImages := flag.Int("decode-images", 100, "JPEGs held in memory for the raw decode measurement")
	flag.Parse()
	if *spec == "" {
		flag.Usage()
		os.Exit(2)
	}
	if err := run(*spec, *workers, *size, *batch, *minTime, *decodeTime, *decodeImages); err != nil {
		log.Fatal(err)
	}
}

func run(spec string, workers, size, batch int, minTime, decodeTime time.Duration, decodeImages int) error {
	sh, err := dataset.OpenShards(spec, dataset.ShardOptions{})
	if err != nil {
		return err
	}
	res := map[string]any{"decoder": dataset.JPEGDecoder(), "shards": len(sh.Paths), "workers": workers, "size": size, "batch": batch}

	rep := &dataset.Report{}
	l, err := dataset.NewStreamLoader(sh, dataset.LoaderOptions{Size: size, BatchSize: batch, Workers: workers, Report: rep})
	if err != nil {
		return err
	}
	ips, images, err := stream(l, minTime)
	l.Close()
	if err != nil {
		return err
	}
	if n, errs := l.Skipped(); n > 0 {
		return fmt.Errorf("%d samples skipped, the first: %v", n, errs[0])
	}
	res["stream_images_per_s"], res["stream_images"] = ips, images

	jpegs, err := readJPEGs(sh.Paths, decodeImages)
	if err != nil {
		return err
	}
	ips, err = decodeRate(jpegs, decodeTime, 0)
	if err != nil {
		return err
	}
	res["decode_images_per_s"] = ips
	if ips, err = decodeRate(jpegs, decodeTime, size); err != nil {
		return err
	}
	res["decode_preprocess_images_per_s"] = ips
	if ips, err = preprocessRate(jpegs, decodeTime, size); err != nil {
		return err
	}
	res["preprocess_images_per_s"] = ips
	return json.NewEncoder(os.Stdout).Encode(res)
}

// stream runs whole epochs of l until minTime has passed since the first batch of the
// first epoch arrived (the same start the Python peer times from, once its workers
// run); it returns images/s and the images counted.
func stream(l *dataset.StreamLoader, minTime time.Duration) (float64, int, error) {
	var start time.Time
	images := 0
	for epoch := 0; epoch == 0 || time.Since(start) < minTime; epoch++ {
		if err := l.Start(epoch, 0); err != nil {
			return 0, 0, err
		}
		for {
			b, err := l.Next(context.Background())
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				return 0, 0, err
			}
			if start.IsZero() {
				start = time.Now()
			} else {
				images += b.Len()
			}
			b.Release()
		}
	}
	if images == 0 {
		return 0, 0, errors.New("the shards hold a single batch: nothing to time after the first")
	}
	return float64(images) / time.Since(start).Seconds(), images, nil
}

// readJPEGs returns the bytes of up to n .jpg members of the shards, in order.
func readJPEGs(paths []string, n int) ([][]byte, error) {
	var out [][]byte
	for _, p := range paths {
		f, err := os.Open(p)
		if err != nil {
			return nil, err
		}
		tr := tar.NewReader(f)
		for len(out) < n {
			h, err := tr.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				f.Close()
				return nil, fmt.Errorf("%s: %w", p, err)
			}
			if strings.HasSuffix(strings.ToLower(h.Name), ".jpg") {
				b, err := io.ReadAll(tr)
				if err != nil {
					f.Close()
					return nil, fmt.Errorf("%s: %s: %w", p, h.Name, err)
				}
				out = append(out, b)
			}
		}
		f.Close()
		if len(out) >= n {
			break
		}
	}
	if len(out) == 0 {
		return nil, errors.New("no .jpg members in the shards")
	}
	return out, nil
}

// preprocessRate preprocesses (dataset.Preprocess) the decoded JPEGs one after another
// on this goroutine until minTime has passed; it returns images/s.
func preprocessRate(jpegs [][]byte, minTime time.Duration, size int) (float64, error) {
	imgs := make([]dataset.RGB, len(jpegs))
	for i, b := range jpegs {
		img, err := dataset.DecodeImage(b, fmt.Sprintf("jpeg %d", i), 0)
		if err != nil {
			return 0, err
		}
		imgs[i] = img
	}
	start := time.Now()
	n := 0
	for time.Since(start) < minTime {
		for _, img := range imgs {
			dataset.Preprocess(img, size)
			n++
		}
	}
	return float64(n) / time.Since(start).Seconds(), nil
}

// decodeRate decodes the JPEGs one after another on this goroutine (one core) through
// dataset.DecodeImage, and when size > 0 preprocesses each (dataset.Preprocess), until
// minTime has passed; it returns images/s.
func decodeRate(jpegs [][]byte, minTime time.Duration, size int) (float64, error) {
	start := time.Now()
	n := 0
	for time.Since(start) < minTime {
		for i, b := range jpegs {
			img, err := dataset.DecodeImage(b, fmt.Sprintf("jpeg %d", i), 0)
			if err != nil {
				return 0, err
			}
			if size > 0 {
				dataset.Preprocess(img, size)
			}
			n++
		}
	}
	return float64(n) / time.Since(start).Seconds(), nil
}
