package main

import (
	"fmt"
	"time"

	"github.com/urfave/cli/v2"

	"goclip/dataset"
)

// The flags of goclip cache.
var (
	cacheDataFlag  = &cli.PathFlag{Name: "data", Usage: "data set folder (Kaggle Flickr30k, Karpathy JSON, captions.csv/jsonl)", Required: true, EnvVars: []string{"GOCLIP_DATA"}}
	cacheSizeFlag  = &cli.IntFlag{Name: "size", Usage: "image side in pixels (the model's image size)", Value: 224, EnvVars: []string{"GOCLIP_CACHE_SIZE"}}
	cacheOutFlag   = &cli.PathFlag{Name: "out", Usage: "cache folder (default: DIR/.goclip-cache)", EnvVars: []string{"GOCLIP_CACHE_OUT"}}
	cacheForceFlag = &cli.BoolFlag{Name: "force", Usage: "rebuild even when the cache is up to date", EnvVars: []string{"GOCLIP_CACHE_FORCE"}}
	maxPixelsFlag  = &cli.IntFlag{Name: "max-pixels", Usage: "reject images larger than this many pixels (decompression bombs)", Value: dataset.DefaultMaxPixels, EnvVars: []string{"GOCLIP_MAX_PIXELS"}}
)

var cacheCommand = &cli.Command{
	Name:      "cache",
	Usage:     "preprocess a data set's images once into a .npy cache that training reads",
	UsageText: "goclip cache --data DIR [--size 224] [--out DIR] [--workers N] [--force]",
	Description: `Decodes every image of the data set (all splits), resizes its shortest side to
--size with PIL's bicubic filter and centre crops it, exactly as CLIPImageProcessor
does, and stores the uint8 crops as NumPy files:

   OUT/s<SIZE>/shard-00000.npy   uint8 (N, SIZE, SIZE, 3), 1,024 images a shard
   OUT/s<SIZE>/index.json        image -> shard and row, with each file's size and mtime

OUT defaults to DIR/.goclip-cache (use --out when the data folder is read-only, and
pass the same folder to training). Training then reads the crops instead of decoding
JPEGs; random-resized-crop augmentation crops the cached SIZE x SIZE image. An image
whose file changed since (size or modification time) is decoded again at training
time; running this command again rebuilds a cache that no longer matches the data,
and does nothing when it still does. Unreadable images are recorded and skipped.`,
	Flags:  []cli.Flag{cacheDataFlag, cacheSizeFlag, cacheOutFlag, cacheForceFlag, maxPixelsFlag, workersFlag},
	Action: runCache,
}

func runCache(c *cli.Context) error {
	size := cacheSizeFlag.Get(c)
	if size < 1 || size > 4096 {
		return fmt.Errorf("cache: --size %d: want 1 to 4096", size)
	}
	ds, err := dataset.Open(cacheDataFlag.Get(c), dataset.Options{})
	if err != nil {
		return err
	}
	out := cacheOutFlag.Get(c)
	if out == "" {
		out = dataset.DefaultCacheDir(ds.Root)
	}
	opts := dataset.CacheOptions{
		Workers:   workersFlag.Get(c),
		MaxPixels: maxPixelsFlag.Get(c),
		Force:     cacheForceFlag.Get(c),
		Report:    &ds.Report,
	}
	progress, closeBar := imageProgress(c.App.ErrWriter, fmt.Sprintf("cache %dpx", size))
	opts.Progress = progress
	start := time.Now()
	st, err := dataset.BuildCache(ds.Items, out, size, opts)
	closeBar()
	if err != nil {
		return err
	}
	w := c.App.Writer
	if st.UpToDate {
		fmt.Fprintf(w, "cache %s is up to date: %d images, %d unreadable\n", st.Dir, st.Images, st.Failed)
		return nil
	}
	secs := time.Since(start).Seconds()
	fmt.Fprintf(w, "cached %d images (%.1f MB) in %s; %d unreadable; %.1fs, %.0f images/s\n",
		st.Images, float64(st.Bytes)/1e6, st.Dir, st.Failed, secs, float64(st.Images+st.Failed)/secs)
	if ds.Report.Skipped() > 0 {
		fmt.Fprintln(w, ds.Report.Summary())
	}
	return nil
}
