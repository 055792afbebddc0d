package main

import (
	"errors"
	"fmt"
	"time"

	"github.com/urfave/cli/v2"

	"goclip/dataset"
)

// The flags of goclip synth.
var (
	synthOutFlag    = &cli.StringFlag{Name: "out", Usage: "folder to write the data set to (created if needed)", Required: true, EnvVars: []string{"GOCLIP_SYNTH_OUT"}, Category: catOutput}
	synthImagesFlag = &cli.IntFlag{Name: "images", Usage: "number of pictures", Value: 1000, EnvVars: []string{"GOCLIP_SYNTH_IMAGES"}}
	synthSizeFlag   = &cli.IntFlag{Name: "size", Usage: "short side of each picture in pixels (32 to 4096)", Value: 224, EnvVars: []string{"GOCLIP_SYNTH_SIZE"}}
	synthDomainFlag = &cli.StringFlag{Name: "domain", Usage: "base, or shifted for shapes, colours and textures that base never shows", Value: dataset.DomainBase, EnvVars: []string{"GOCLIP_SYNTH_DOMAIN"}}
	synthLayoutFlag = &cli.StringFlag{Name: "layout", Usage: "flickr30k (image/caption pairs) or imagefolder (one shape per picture, DIR/<colour>_<kind>/)", Value: dataset.LayoutFlickr, EnvVars: []string{"GOCLIP_SYNTH_LAYOUT"}}
	synthValFlag    = &cli.IntFlag{Name: "val", Usage: "pictures in the validation split (0: 5%, or 1,000 beyond 20,000 pictures; -1: none)", EnvVars: []string{"GOCLIP_SYNTH_VAL"}}
	synthTestFlag   = &cli.IntFlag{Name: "test", Usage: "pictures in the test split (0: 5%, or 1,000 beyond 20,000 pictures; -1: none)", EnvVars: []string{"GOCLIP_SYNTH_TEST"}}
	synthForceFlag  = &cli.BoolFlag{Name: "force", Usage: "overwrite a data set already in --out", EnvVars: []string{"GOCLIP_SYNTH_FORCE"}}
)

var synthCommand = &cli.Command{
	Name:      "synth",
	Usage:     "write a synthetic image/caption data set in the Kaggle Flickr30k layout",
	UsageText: "goclip synth --out DIR [--images N] [--size S] [--seed N] [--domain base|shifted] [--layout flickr30k|imagefolder]",
	Description: `Draws N pictures of one to three coloured shapes (circles, squares, stars, ...;
striped, dotted or plain; small, medium or large) on varied backgrounds, and writes
five captions per picture that describe it in different words, such as
"a large red circle above a small blue square".

DIR then holds what a Kaggle Flickr30k download holds, so every command that takes
--data reads it:

   DIR/flickr30k_images/NAME.jpg   the pictures (JPEG; short side --size pixels,
                                   mostly 4:3 landscape like Flickr's 500x375)
   DIR/results.csv                 "image_name| comment_number| comment", 5 rows per picture
   DIR/dataset_flickr30k.json      Karpathy-style train/val/test split (5% each for val
                                   and test, 1,000 each beyond 20,000 pictures)

The same --seed always writes the same bytes. --domain shifted uses shapes, colours,
textures and backgrounds that base never shows (hexagons, orange, checkered, ...): train
on base, then fine-tune on shifted to see what fine-tuning recovers.

--layout imagefolder writes a classification set instead, for goclip zeroshot --data
and train's --zeroshot-data: pictures of one shape each, in DIR/<colour>_<kind>/NAME.jpg
(classes such as "red circle"; no captions, no splits); --out must be empty or new.

Example: the data of the fine-tuning demo
   goclip synth --out data/base --images 5000
   goclip synth --out data/shifted --images 2000 --domain shifted --seed 1
   goclip synth --out data/base-classes --images 500 --layout imagefolder --seed 2`,
	Flags: []cli.Flag{
		synthOutFlag, synthImagesFlag, synthSizeFlag,
		seedFlag, // the same seed writes the same files
		synthDomainFlag, synthLayoutFlag, synthValFlag, synthTestFlag,
		workersFlag, // drawing goroutines; the output does not depend on them
		synthForceFlag,
	},
	Action: runSynth,
}

func runSynth(c *cli.Context) error {
	if c.NArg() > 0 {
		return fmt.Errorf("synth: unexpected argument %q (the folder goes in --out)", c.Args().First())
	}
	opts := dataset.SynthOptions{
		Images:    synthImagesFlag.Get(c),
		Size:      synthSizeFlag.Get(c),
		Seed:      seedFlag.Get(c),
		Domain:    synthDomainFlag.Get(c),
		Layout:    synthLayoutFlag.Get(c),
		Val:       synthValFlag.Get(c),
		Test:      synthTestFlag.Get(c),
		Workers:   workersFlag.Get(c),
		Overwrite: synthForceFlag.Get(c),
	}
	if opts.Images < 1 {
		return fmt.Errorf("synth: --images %d: want at least 1", opts.Images)
	}
	progress, closeBar := imageProgress(c.App.ErrWriter, "synth "+opts.Domain)
	opts.Progress = progress
	start := time.Now()
	res, err := dataset.Synthesize(synthOutFlag.Get(c), opts)
	closeBar()
	if errors.Is(err, dataset.ErrExists) {
		return fmt.Errorf("%w; pass --force to overwrite it", err)
	}
	if err != nil {
		return err
	}
	secs := time.Since(start).Seconds()
	if opts.Layout == dataset.LayoutImageFolder {
		classes := map[string]bool{}
		for _, im := range res.Images {
			classes[dataset.SynthClass(im)] = true
		}
		fmt.Fprintf(c.App.Writer, "wrote %d %s images in %d class folders to %s; %.1fs, %.0f images/s\n",
			len(res.Images), opts.Domain, len(classes), res.Dir, secs, float64(len(res.Images))/secs)
		return nil
	}
	fmt.Fprintf(c.App.Writer, "wrote %d %s images (%d captions) to %s: %d train, %d val, %d test; %.1fs, %.0f images/s\n",
		len(res.Images), opts.Domain, res.Captions(), res.Dir, res.Train, res.Val, res.Test, secs, float64(len(res.Images))/secs)
	return nil
}
