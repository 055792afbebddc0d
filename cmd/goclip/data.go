package main

// The data flags of train, finetune and eval: what --data may name, and how shards and
// CSV/TSV/JSONL files given directly are read (open_clip's flag names).

import (
	"fmt"
	"io"
	"strings"

	"github.com/urfave/cli/v2"

	"goclip/dataset"
)

const catData = "DATA"

// dataFlags are the flags that say how --data is read.
func dataFlags() []cli.Flag {
	return append(tableFlags(), shardReadFlags()...)
}

// How webdataset shards are read.
var (
	wdsCaptionKeyFlag = &cli.StringFlag{Name: "wds-caption-key", Usage: "webdataset shards: the json field holding the caption of a sample without a txt member", Value: dataset.DefaultCaptionKey, EnvVars: []string{"GOCLIP_WDS_CAPTION_KEY"}, Category: catData}
	shuffleBufferFlag = &cli.IntFlag{Name: "shuffle-buffer", Usage: "webdataset shards: samples mixed within each rank while training (0: none)", Value: 5000, EnvVars: []string{"GOCLIP_SHUFFLE_BUFFER"}, Category: catData}
	trainSamplesFlag  = &cli.IntFlag{Name: "train-num-samples", Usage: "webdataset shards: samples per epoch over all ranks (0: the counts of the shards' sizes.json)", EnvVars: []string{"GOCLIP_TRAIN_NUM_SAMPLES"}, Category: catData}
	resampledFlag     = &cli.BoolFlag{Name: "dataset-resampled", Usage: "webdataset shards: each rank draws shards with replacement (an epoch is --train-num-samples samples)", EnvVars: []string{"GOCLIP_DATASET_RESAMPLED"}, Category: catData}
)

// shardReadFlags say how webdataset shards are read.
func shardReadFlags() []cli.Flag {
	return []cli.Flag{wdsCaptionKeyFlag, shuffleBufferFlag, trainSamplesFlag, resampledFlag}
}

// How a CSV, TSV or JSONL file given as --data is read.
var (
	csvImageKeyFlag   = &cli.StringFlag{Name: "csv-img-key", Usage: "a CSV, TSV or JSONL file as --data: the column (field) of the image paths", Value: dataset.DefaultTableImageKey, EnvVars: []string{"GOCLIP_CSV_IMG_KEY"}, Category: catData}
	csvCaptionKeyFlag = &cli.StringFlag{Name: "csv-caption-key", Usage: "a CSV, TSV or JSONL file as --data: the column (field) of the captions", Value: dataset.DefaultTableCaptionKey, EnvVars: []string{"GOCLIP_CSV_CAPTION_KEY"}, Category: catData}
	csvSeparatorFlag  = &cli.StringFlag{Name: "csv-separator", Usage: "a CSV or TSV file as --data: the field separator (\\t or tab for a tab; default: tab for .tsv, comma otherwise)", EnvVars: []string{"GOCLIP_CSV_SEPARATOR"}, Category: catData}
	dataRootFlag      = &cli.PathFlag{Name: "data-root", Usage: "a CSV, TSV or JSONL file as --data: the folder its relative image paths start from (default: the file's), and that absolute ones must lie in", EnvVars: []string{"GOCLIP_DATA_ROOT"}, Category: catData}
)

// tableFlags say how a CSV, TSV or JSONL file given as --data is read.
func tableFlags() []cli.Flag {
	return []cli.Flag{csvImageKeyFlag, csvCaptionKeyFlag, csvSeparatorFlag, dataRootFlag}
}

// trainData is what --data names: a data set (a folder) or webdataset shards.
type trainData struct {
	ds     *dataset.Dataset // always set; empty of items for shards
	shards *dataset.Shards  // nil unless --data names shards
}

// openTrainData opens --data, writing a line about it to w.
func openTrainData(c *cli.Context, w io.Writer) (*trainData, error) {
	spec := dataFlag.Get(c)
	if dataset.SourceKind(spec) == dataset.SourceShards {
		samples, buffer := trainSamplesFlag.Get(c), shuffleBufferFlag.Get(c)
		if samples < 0 || buffer < 0 {
			return nil, fmt.Errorf("--train-num-samples %d, --shuffle-buffer %d: want 0 or more", samples, buffer)
		}
		if resampledFlag.Get(c) && samples == 0 {
			return nil, fmt.Errorf("--dataset-resampled needs --train-num-samples (the samples of an epoch)")
		}
		splits := dataset.ShardSplits(spec) // goclip shard's output: train/, val/, test/
		if len(splits) > 0 {
			if splits[dataset.Train] == "" {
				return nil, fmt.Errorf("--data %s: shards for %v but no train/ shards", spec, splits)
			}
			spec = splits[dataset.Train]
		}
		sh, err := dataset.OpenShards(spec, dataset.ShardOptions{
			CaptionKey: strings.TrimSpace(wdsCaptionKeyFlag.Get(c)), ShuffleBuffer: buffer,
			NumSamples: samples, Resampled: resampledFlag.Get(c),
		})
		if err != nil {
			return nil, fmt.Errorf("--data: %w", err)
		}
		n, err := sh.EpochSamples()
		if err != nil {
			return nil, fmt.Errorf("--data: %w", err)
		}
		mode := "each shard once per epoch"
		if sh.Resampled {
			mode = "shards drawn with replacement"
		}
		ds := &dataset.Dataset{Root: spec, Format: dataset.FormatWebDataset}
		ds.Report.SetSource(spec)
		for _, s := range []dataset.Split{dataset.Val, dataset.Test} {
			if splits[s] == "" {
				continue
			}
			items, err := shardItems(c, splits[s], s, &ds.Report)
			if err != nil {
				return nil, err
			}
			ds.Items = append(ds.Items, items...)
		}
		fmt.Fprintf(w, "data: %d webdataset shards (%s ... %s), %d samples per epoch, %s; %d val, %d test images\n",
			len(sh.Paths), sh.Paths[0], sh.Paths[len(sh.Paths)-1], n, mode, len(ds.Split(dataset.Val)), len(ds.Split(dataset.Test)))
		return &trainData{ds: ds, shards: sh}, nil
	}
	ds, err := openDataSet(c, spec)
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(w, "data: %s (%s): %d train, %d val, %d test images; %s\n", ds.Root, ds.Format,
		len(ds.Split(dataset.Train)), len(ds.Split(dataset.Val)), len(ds.Split(dataset.Test)), ds.Report.Summary())
	return &trainData{ds: ds}, nil
}

// openDataSet opens a data set folder, or a CSV, TSV or JSONL file named directly with
// the --csv-* and --data-root flags.
func openDataSet(c *cli.Context, spec string) (*dataset.Dataset, error) {
	if dataset.SourceKind(spec) != dataset.SourceTable {
		return dataset.Open(spec, dataset.Options{})
	}
	ds, err := dataset.OpenTable(spec, dataset.TableOptions{
		ImageKey: csvImageKeyFlag.Get(c), CaptionKey: csvCaptionKeyFlag.Get(c),
		Separator: csvSeparatorFlag.Get(c), Root: dataRootFlag.Get(c),
	})
	if err != nil {
		return nil, fmt.Errorf("--data: %w", err)
	}
	return ds, nil
}

// shardItems lists the samples of the shards of spec (evaluation) as items of split s.
func shardItems(c *cli.Context, spec string, s dataset.Split, rep *dataset.Report) ([]dataset.Item, error) {
	sh, err := dataset.OpenShards(spec, dataset.ShardOptions{CaptionKey: strings.TrimSpace(wdsCaptionKeyFlag.Get(c))})
	if err != nil {
		return nil, fmt.Errorf("--data: %w", err)
	}
	return dataset.ShardItems(sh, s, rep)
}

// openEvalData opens --data for evaluation: a data set folder or table, or shards (a
// split's folder, or goclip shard's output, whose --split folder is read; a shard
// list without splits is read whole).
func openEvalData(c *cli.Context, spec string, split dataset.Split) (*dataset.Dataset, error) {
	if dataset.SourceKind(spec) != dataset.SourceShards {
		return openDataSet(c, spec)
	}
	ds := &dataset.Dataset{Root: spec, Format: dataset.FormatWebDataset}
	ds.Report.SetSource(spec)
	if splits := dataset.ShardSplits(spec); len(splits) > 0 {
		for _, s := range []dataset.Split{dataset.Train, dataset.Val, dataset.Test} {
			if splits[s] == "" || (split != dataset.All && split != s) {
				continue
			}
			items, err := shardItems(c, splits[s], s, &ds.Report)
			if err != nil {
				return nil, err
			}
			ds.Items = append(ds.Items, items...)
		}
		if len(ds.Items) == 0 {
			return nil, fmt.Errorf("--data %s: no %s shards", spec, split)
		}
		return ds, nil
	}
	if split == dataset.All {
		split = dataset.Test
	}
	items, err := shardItems(c, spec, split, &ds.Report)
	if err != nil {
		return nil, err
	}
	ds.Items = items
	return ds, nil
}
