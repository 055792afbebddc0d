package main

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"

	"github.com/urfave/cli/v2"

	"goclip/dataset"
	"goclip/lora"
	"goclip/train"
)

// The flags of goclip eval.
var (
	evalSplitFlag     = &cli.StringFlag{Name: "split", Usage: "train, val, test or all", Value: "test", EnvVars: []string{"GOCLIP_SPLIT"}}
	evalJSONFlag      = &cli.BoolFlag{Name: "json", Usage: "print the result as JSON", Category: catOutput}
	evalBatchSizeFlag = batchSizeFlag(train.DefaultEvalBatch, "pairs per loss batch and per forward pass")
)

var evalCommand = &cli.Command{
	Name:      "eval",
	Usage:     "validation loss and retrieval recall of a model on a data split",
	UsageText: "goclip eval --model DIR [--adapter DIR] --data DIR [--split train|val|test|all] [--json]",
	Description: `Evaluates with the CLIP retrieval protocol: the loss is the symmetric cross-entropy
over batches of --batch-size pairs that pair each image with its first caption, in
split order, the last partial batch included, averaged per pair; retrieval uses every
caption: image-to-text R@k is the fraction of images with any of their captions among
the k nearest captions, text-to-image R@k the fraction of captions whose image is among
the k nearest images (cosine similarity). --json prints
   {"loss":..,"image_to_text":{"R@1":..,"R@5":..,"R@10":..},"text_to_image":{...},"images":N,"captions":M}

Examples:
   goclip eval --model runs/demo-base --data runs/demo-data/shifted --json
   goclip eval --model openai/clip-vit-base-patch16 --adapter runs/lora/adapter --data flickr30k`,
	Flags: append([]cli.Flag{
		modelFlag, revisionFlag,
		adapterFlag,
		forceAdapterFlag,
		dataFlag,
		evalSplitFlag,
		evalJSONFlag,
		evalBatchSizeFlag,
		workersFlag,
	}, slices.Concat(computeFlags(), tableFlags(), []cli.Flag{wdsCaptionKeyFlag})...),
	Action: torchAction(runEval),
}

// evalCacheDir is the data set's cache folder; none for shards.
func evalCacheDir(ds *dataset.Dataset) string {
	if ds.Format == dataset.FormatWebDataset {
		return ""
	}
	return dataset.DefaultCacheDir(ds.Root)
}

func runEval(c *cli.Context) error {
	if c.NArg() > 0 {
		return fmt.Errorf("eval takes no arguments (got %q)", c.Args().Slice())
	}
	split, err := dataset.ParseSplit(evalSplitFlag.Get(c))
	if err != nil {
		return err
	}
	if evalBatchSizeFlag.Get(c) < 1 {
		return fmt.Errorf("--batch-size must be at least 1, got %d", evalBatchSizeFlag.Get(c))
	}
	ds, err := openEvalData(c, dataFlag.Get(c), split)
	if err != nil {
		return err
	}
	items := ds.Split(split)
	fmt.Fprintf(c.App.ErrWriter, "data: %s (%s): %d %s images; %s\n", ds.Root, ds.Format, len(items), split, ds.Report.Summary())
	lm, err := loadInferenceModel(c)
	if err != nil {
		return err
	}
	defer lm.free()
	tok, err := lm.pre.NeedTokenizer()
	if err != nil {
		return err
	}
	task := train.NewTask(c.App.ErrWriter, "evaluation", "item")
	res, err := train.Evaluate(context.Background(), lm.model, tok, items, train.EvalOptions{
		BatchSize: evalBatchSizeFlag.Get(c), Workers: c.Int(workersFlag.Name), Precision: lm.prec,
		CacheDir: evalCacheDir(ds), Report: &ds.Report, Progress: task.Update,
	})
	task.Done()
	if err != nil {
		return err
	}
	if n := ds.Report.SkippedFor(dataset.UnreadableImage) + ds.Report.SkippedFor(dataset.OversizedImage); n > 0 {
		fmt.Fprintf(c.App.ErrWriter, "data: %s\n", ds.Report.Summary())
	}
	if evalJSONFlag.Get(c) {
		return json.NewEncoder(c.App.Writer).Encode(res)
	}
	_, err = fmt.Fprintln(c.App.Writer, res)
	return err
}

// adapterFlag is eval's and embed's --adapter.
var adapterFlag = &cli.PathFlag{Name: "adapter", Usage: "a peft LoRA adapter folder, or a LoRA run folder (its adapter/), to apply to --model (its base model: a merged model already holds its adapter)", Category: catLoRA}

// forceAdapterFlag overrides the checks that an adapter belongs on the model; --force,
// its old name, still works here (convert's --force overwrites DST, and convert's
// --force-adapter is this flag without that alias).
var forceAdapterFlag = &cli.BoolFlag{Name: "force-adapter", Aliases: []string{"force"}, Usage: "apply --adapter even when its base fingerprint differs from the model's, or the model records it as merged already", Category: catLoRA}

// adapterChecks are the lora.LoadOptions of --adapter on the model at path.
func adapterChecks(c *cli.Context, path string) lora.LoadOptions {
	return lora.LoadOptions{Model: path, Force: c.Bool(forceAdapterFlag.Name),
		Warn: func(msg string) { fmt.Fprintln(c.App.ErrWriter, "warning:", msg) }}
}
