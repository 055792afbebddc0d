package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/urfave/cli/v2"

	"goclip/dataset"
	"goclip/embedding"
	"goclip/train"
)

// The flags of goclip zeroshot.
var (
	zeroshotClassesFlag   = &cli.StringFlag{Name: "classes", EnvVars: []string{"GOCLIP_ZEROSHOT_CLASSES"}, Usage: "comma-separated class names (with IMAGE arguments)", Category: catModel}
	zeroshotDataFlag      = &cli.PathFlag{Name: "data", EnvVars: []string{"GOCLIP_ZEROSHOT_DATA"}, Usage: "an image folder DIR/<class>/<image> to measure zero-shot accuracy on (instead of --classes and IMAGE arguments)", Category: catModel}
	zeroshotTemplateFlag  = &cli.StringFlag{Name: "template", EnvVars: []string{"GOCLIP_ZEROSHOT_TEMPLATE"}, Usage: `prompt for each class; "{}" stands for the class name`, Value: "a photo of a {}.", Category: catModel}
	zeroshotTemplatesFlag = &cli.PathFlag{Name: "templates", EnvVars: []string{"GOCLIP_ZEROSHOT_TEMPLATES"}, Usage: "with --data: a file of prompt templates, one per line with {} (default: OpenAI's 80 ImageNet templates)", Category: catModel}
	zeroshotWorstFlag     = &cli.IntFlag{Name: "worst", EnvVars: []string{"GOCLIP_ZEROSHOT_WORST"}, Usage: "with --data: how many of the worst classes to print", Value: 10, Category: catOutput}
	zeroshotJSONFlag      = &cli.BoolFlag{Name: "json", EnvVars: []string{"GOCLIP_ZEROSHOT_JSON"}, Usage: "print one JSON object instead of tables", Category: catOutput}
	zeroshotBatchSizeFlag = batchSizeFlag(64, "images per forward pass")
)

var zeroshotCommand = &cli.Command{
	Name:      "zeroshot",
	Usage:     "classify images among class names given as text, without training; or measure zero-shot accuracy on an image folder",
	ArgsUsage: "IMAGE...",
	Description: `Zero-shot classification, in two forms.

With --classes and IMAGE arguments: each class name is put into --template ("{}" is
replaced by the name) and embedded by the text tower; each image is embedded by the
image tower; the probabilities are the softmax over classes of
exp(logit_scale) * cosine(image, text), as CLIPModel's logits_per_image.
IMAGE arguments are files, or folders standing for their .jpg, .jpeg and .png files in
sorted name order. An unreadable image is an error naming the file. For each image a
table lists the classes from most to least probable. --json prints
{"classes":[...],"results":[{"image":..,"prediction":..,"probabilities":[...]}]}
with the probabilities in the order of --classes.

With --data DIR: zero-shot accuracy on an image folder in ImageNet's layout,
DIR/<class>/<image> (.jpg, .jpeg, .png, .webp, .gif, .bmp, in subfolders too). The
classes are the sorted class folders, named by the folder name ("_" read as a space) or
by DIR/classes.txt, one name per line in sorted folder order. Each class's embedding is
the mean over the templates of the normalised text embeddings of the filled-in
templates, normalised again (the CLIP paper's prompt ensembling); the templates are
OpenAI's 80 ImageNet templates, or --templates FILE (one per line, "{}" for the class
name), or the single --template when given. An image is correct at top-k when its class
is among the k classes of highest cosine similarity. It prints top-1 and top-5 accuracy
and the classes of lowest top-1 accuracy with what their images were taken for;
--json prints {"top1":..,"top5":..,"classes":K,"images":N,"templates":T,
"per_class":{"NAME":{"images":..,"top1":..,"top5":..,"confused_with":[{"class":..,"count":..}]}}}.
Unreadable images are left out and counted on stderr.

Examples:
   goclip zeroshot --model openai/clip-vit-base-patch16 --classes cat,dog,rocket photo.jpg
   goclip zeroshot --model runs/demo-finetune --classes "red circle,blue square" \
       --template "a picture of a {}" --json images/
   goclip zeroshot --model runs/demo-finetune --data data/shapes-imagefolder --json`,
	Flags: append([]cli.Flag{
		modelFlag, revisionFlag,
		zeroshotClassesFlag,
		zeroshotDataFlag,
		zeroshotTemplateFlag,
		zeroshotTemplatesFlag,
		zeroshotWorstFlag,
		zeroshotJSONFlag,
		zeroshotBatchSizeFlag,
		workersFlag,
	}, computeFlags()...),
	Action: torchAction(runZeroshot),
}

// zeroshotResult is one image's line of `goclip zeroshot --json`.
type zeroshotResult struct {
	Image         string    `json:"image"`
	Prediction    string    `json:"prediction"`
	Probabilities []float64 `json:"probabilities"`
}

func runZeroshot(c *cli.Context) error {
	if c.IsSet(zeroshotDataFlag.Name) {
		return runZeroshotData(c)
	}
	if c.IsSet(zeroshotTemplatesFlag.Name) {
		return errors.New("--templates goes with --data DIR; with --classes give one --template")
	}
	classes := splitList(zeroshotClassesFlag.Get(c))
	if len(classes) == 0 {
		return errors.New("give --classes a,b,c and IMAGE arguments, or --data DIR (an image folder DIR/<class>/<image>)")
	}
	template := zeroshotTemplateFlag.Get(c)
	if !strings.Contains(template, "{}") {
		return fmt.Errorf(`--template %q has no "{}" for the class name`, template)
	}
	if c.NArg() == 0 {
		return errors.New("no images: give image files or folders as arguments")
	}
	if zeroshotBatchSizeFlag.Get(c) < 1 {
		return fmt.Errorf("--batch-size must be at least 1, got %d", zeroshotBatchSizeFlag.Get(c))
	}
	images, err := embedding.ExpandImagePaths(c.Args().Slice())
	if err != nil {
		return err
	}

	lm, err := loadInferenceModel(c)
	if err != nil {
		return err
	}
	defer lm.free()
	emb, err := lm.embedder(c, zeroshotBatchSizeFlag.Get(c), true, true)
	if err != nil {
		return err
	}
	classified, err := train.Classify(context.Background(), emb, embedding.ImageItems(images), classes, []string{template})
	if err != nil {
		return err
	}
	results := make([]zeroshotResult, len(classified))
	for i, r := range classified {
		results[i] = zeroshotResult{Image: images[r.Item], Prediction: classes[r.Best], Probabilities: r.Probabilities}
	}
	if zeroshotJSONFlag.Get(c) {
		return json.NewEncoder(c.App.Writer).Encode(struct {
			Classes []string         `json:"classes"`
			Results []zeroshotResult `json:"results"`
		}{classes, results})
	}
	printZeroshot(c, classes, results)
	return nil
}

// printZeroshot prints a table per image, classes by decreasing probability.
func printZeroshot(c *cli.Context, classes []string, results []zeroshotResult) {
	w := c.App.Writer
	for i, r := range results {
		if i > 0 {
			fmt.Fprintln(w)
		}
		fmt.Fprintln(w, r.Image)
		order := make([]int, len(classes))
		for j := range order {
			order[j] = j
		}
		sort.SliceStable(order, func(a, b int) bool { return r.Probabilities[order[a]] > r.Probabilities[order[b]] })
		for _, j := range order {
			fmt.Fprintf(w, "  %7.4f  %s\n", r.Probabilities[j], classes[j])
		}
	}
}

// runZeroshotData is `goclip zeroshot --data DIR`: train.Zeroshot on the image folder.
func runZeroshotData(c *cli.Context) error {
	if c.IsSet(zeroshotClassesFlag.Name) || c.NArg() > 0 {
		return errors.New("--data DIR takes its classes and images from the folder: leave out --classes and IMAGE arguments")
	}
	if c.IsSet(zeroshotTemplateFlag.Name) && c.IsSet(zeroshotTemplatesFlag.Name) {
		return errors.New("give --template or --templates, not both")
	}
	if zeroshotBatchSizeFlag.Get(c) < 1 {
		return fmt.Errorf("--batch-size must be at least 1, got %d", zeroshotBatchSizeFlag.Get(c))
	}
	templates := train.ImageNetTemplates
	switch {
	case c.IsSet(zeroshotTemplatesFlag.Name):
		var err error
		if templates, err = train.ReadTemplates(zeroshotTemplatesFlag.Get(c)); err != nil {
			return err
		}
	case c.IsSet(zeroshotTemplateFlag.Name):
		t := zeroshotTemplateFlag.Get(c)
		if !strings.Contains(t, "{}") {
			return fmt.Errorf(`--template %q has no "{}" for the class name`, t)
		}
		templates = []string{t}
	}
	folder, err := dataset.ReadImageFolder(zeroshotDataFlag.Get(c))
	if err != nil {
		return err
	}
	lm, err := loadInferenceModel(c)
	if err != nil {
		return err
	}
	defer lm.free()
	tok, err := lm.pre.NeedTokenizer()
	if err != nil {
		return err
	}
	var report dataset.Report
	task := train.NewTask(c.App.ErrWriter, "zero-shot", "item")
	res, err := train.Zeroshot(context.Background(), lm.model, tok, folder, templates, train.EvalOptions{
		BatchSize: zeroshotBatchSizeFlag.Get(c), Workers: c.Int(workersFlag.Name), Precision: lm.prec, Report: &report,
		Progress: task.Update,
	})
	task.Done()
	if err != nil {
		return err
	}
	if report.Skipped() > 0 {
		fmt.Fprintf(c.App.ErrWriter, "data: %s\n", report.Summary())
	}
	if zeroshotJSONFlag.Get(c) {
		return json.NewEncoder(c.App.Writer).Encode(res)
	}
	printZeroshotAccuracy(c, folder.Dir, res, zeroshotWorstFlag.Get(c))
	return nil
}

// printZeroshotAccuracy prints the accuracies and the worst classes' confusions.
func printZeroshotAccuracy(c *cli.Context, dir string, res train.ZeroshotResult, worst int) {
	w := c.App.Writer
	fmt.Fprintf(w, "%s: %d images, %d classes, %d templates\n", dir, res.Images, res.Classes, res.Templates)
	fmt.Fprintf(w, "top-1 %.4f  top-5 %.4f\n", res.Top1, res.Top5)
	names := res.WorstClasses(worst)
	if len(names) == 0 {
		return
	}
	width := 5
	for _, n := range names {
		width = max(width, len(n))
	}
	fmt.Fprintf(w, "worst classes:\n  %-*s  %6s  %6s  %s\n", width, "class", "images", "top-1", "taken for")
	for _, n := range names {
		s := res.PerClass[n]
		var conf []string
		for i, cf := range s.Confused {
			if i == 3 {
				conf = append(conf, "...")
				break
			}
			conf = append(conf, fmt.Sprintf("%s (%d)", cf.Class, cf.Count))
		}
		line := fmt.Sprintf("  %-*s  %6d  %6.3f  %s", width, n, s.Images, s.Top1, strings.Join(conf, ", "))
		fmt.Fprintln(w, strings.TrimRight(line, " "))
	}
}
