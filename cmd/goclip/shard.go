package main

import (
	"fmt"

	"github.com/urfave/cli/v2"

	"goclip/dataset"
)

// The flags of goclip shard.
var (
	shardDataFlag   = &cli.PathFlag{Name: "data", Usage: "the data set folder, or a CSV, TSV or JSONL file (see --csv-img-key)", Required: true, EnvVars: []string{"GOCLIP_DATA"}, Category: catData}
	shardOutFlag    = &cli.PathFlag{Name: "out", Usage: "the folder to write the shards to (one subfolder per split)", Required: true, EnvVars: []string{"GOCLIP_SHARD_OUT"}, Category: catOutput}
	shardSizeFlag   = &cli.IntFlag{Name: "shard-size", Usage: "samples per shard", Value: 10000, EnvVars: []string{"GOCLIP_SHARD_SIZE"}, Category: catOutput}
	shardResizeFlag = &cli.IntFlag{Name: "resize", Usage: "re-encode images as JPEG with this short side in pixels (0: copy the files)", EnvVars: []string{"GOCLIP_SHARD_RESIZE"}, Category: catOutput}
)

var shardCommand = &cli.Command{
	Name:      "shard",
	Usage:     "write a data set as webdataset tar shards, one shard set per split",
	UsageText: "goclip shard --data DIR --out DIR [--shard-size 10000] [--resize 256]",
	Description: `Reads any data set goclip reads (Kaggle Flickr30k, Karpathy JSON, captions.csv,
captions.jsonl, or a CSV, TSV or JSONL file named directly) and writes OUT/train/, OUT/val/ and OUT/test/ (the data set's splits,
a Karpathy split file's when it has one), each holding SPLIT-000000.tar, ... of
--shard-size samples and a sizes.json of their counts. A sample is one image: KEY.jpg
(or the image's own format), KEY.txt (its first caption) and KEY.json (its captions,
file name and split), as img2dataset writes them; Python's webdataset reads them.

--resize N re-encodes every image as a JPEG whose short side is N pixels (bicubic, as
CLIP's preprocessing resizes); without it the image files are copied unchanged.

Train on the result with --data OUT/train (a folder of shards).

Example:
   goclip shard --data /data/flickr30k --out /data/flickr30k-wds --resize 256`,
	Flags:  append([]cli.Flag{shardDataFlag, shardOutFlag, shardSizeFlag, shardResizeFlag, workersFlag}, tableFlags()...),
	Action: runShard,
}

func runShard(c *cli.Context) error {
	if c.NArg() > 0 {
		return fmt.Errorf("shard takes no arguments (got %q)", c.Args().Slice())
	}
	size, resize := shardSizeFlag.Get(c), shardResizeFlag.Get(c)
	if size < 1 {
		return fmt.Errorf("--shard-size %d: want at least 1", size)
	}
	if resize < 0 {
		return fmt.Errorf("--resize %d: want 0 (copy) or a side in pixels", resize)
	}
	ds, err := openDataSet(c, shardDataFlag.Get(c))
	if err != nil {
		return err
	}
	w := c.App.ErrWriter
	fmt.Fprintf(w, "data: %s (%s): %d train, %d val, %d test images; %s\n", ds.Root, ds.Format,
		len(ds.Split(dataset.Train)), len(ds.Split(dataset.Val)), len(ds.Split(dataset.Test)), ds.Report.Summary())
	var rep dataset.Report
	res, err := dataset.WriteShards(ds, shardOutFlag.Get(c), dataset.ConvertOptions{
		PerShard: size, Resize: resize, Workers: workersFlag.Get(c), Report: &rep,
	})
	if err != nil {
		return err
	}
	for _, s := range []dataset.Split{dataset.Train, dataset.Val, dataset.Test} {
		if paths := res.Shards[s]; len(paths) > 0 {
			fmt.Fprintf(c.App.Writer, "%s: %d samples in %d shards (%s ... %s)\n", s, res.Samples[s], len(paths), paths[0], paths[len(paths)-1])
		}
	}
	if rep.Skipped() > 0 {
		fmt.Fprintf(w, "shard: %s\n", rep.Summary())
	}
	return nil
}
