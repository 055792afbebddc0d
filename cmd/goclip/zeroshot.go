package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"sort"
	"strings"

	"github.com/urfave/cli/v2"
)

var zeroshotCommand = &cli.Command{
	Name:      "zeroshot",
	Usage:     "classify images among class names given as text, without training",
	ArgsUsage: "IMAGE...",
	Description: `Zero-shot classification: each class name is put into --template ("{}" is
replaced by the name) and embedded by the text tower; each image is embedded by the
image tower; the probabilities are the softmax over classes of
exp(logit_scale) * cosine(image, text), as CLIPModel's logits_per_image.

IMAGE arguments are files, or folders standing for their .jpg, .jpeg and .png files in
sorted name order. An unreadable image is an error naming the file.

For each image a table lists the classes from most to least probable. --json prints
{"classes":[...],"results":[{"image":..,"prediction":..,"probabilities":[...]}]}
with the probabilities in the order of --classes.

Examples:
   goclip zeroshot --model openai/clip-vit-base-patch16 --classes cat,dog,rocket photo.jpg
   goclip zeroshot --model runs/demo-finetune --classes "red circle,blue square" \
       --template "a picture of a {}" --json images/`,
	Flags: append([]cli.Flag{
		modelFlag, revisionFlag,
		&cli.StringFlag{Name: "classes", EnvVars: []string{"GOCLIP_ZEROSHOT_CLASSES"}, Usage: "comma-separated class names", Required: true, Category: catModel},
		&cli.StringFlag{Name: "template", EnvVars: []string{"GOCLIP_ZEROSHOT_TEMPLATE"}, Usage: `prompt for each class; "{}" stands for the class name`, Value: "a photo of a {}.", Category: catModel},
		&cli.BoolFlag{Name: "json", EnvVars: []string{"GOCLIP_ZEROSHOT_JSON"}, Usage: "print one JSON object instead of tables", Category: catOutput},
		batchSizeFlag(64, "images per forward pass"),
		workersFlag,
	}, computeFlags()...),
	Action: torchAction(runZeroshot),
}

func init() { register(zeroshotCommand) }

// zeroshotResult is one image's line of `goclip zeroshot --json`.
type zeroshotResult struct {
	Image         string    `json:"image"`
	Prediction    string    `json:"prediction"`
	Probabilities []float64 `json:"probabilities"`
}

func runZeroshot(c *cli.Context) error {
	classes := splitList(c.String("classes"))
	if len(classes) == 0 {
		return errors.New("--classes is empty: give comma-separated class names")
	}
	template := c.String("template")
	if !strings.Contains(template, "{}") {
		return fmt.Errorf(`--template %q has no "{}" for the class name`, template)
	}
	if c.NArg() == 0 {
		return errors.New("no images: give image files or folders as arguments")
	}
	batch := c.Int("batch-size")
	if batch < 1 {
		return fmt.Errorf("--batch-size must be at least 1, got %d", batch)
	}
	images, err := expandImagePaths(c.Args().Slice())
	if err != nil {
		return err
	}

	lm, err := loadInferenceModel(c)
	if err != nil {
		return err
	}
	defer lm.free()
	tok, err := lm.tokenizer()
	if err != nil {
		return err
	}
	prompts := make([]string, len(classes))
	for i, name := range classes {
		prompts[i] = strings.ReplaceAll(template, "{}", name)
	}
	text, err := lm.encodeTexts(tok, prompts, batch, true)
	if err != nil {
		return err
	}
	img, err := lm.encodeImages(images, batch, c.Int(workersFlag.Name), true, false)
	if err != nil {
		return err
	}
	scale := math.Exp(lm.model.LogitScale.Item()) // a *torch.Error panic is torchAction's

	results := make([]zeroshotResult, len(img.rows))
	for i, row := range img.rows {
		probs := softmax(row, text, scale)
		best := 0
		for j := range probs {
			if probs[j] > probs[best] {
				best = j
			}
		}
		results[i] = zeroshotResult{Image: img.kept[i], Prediction: classes[best], Probabilities: probs}
	}
	if c.Bool("json") {
		return json.NewEncoder(c.App.Writer).Encode(struct {
			Classes []string         `json:"classes"`
			Results []zeroshotResult `json:"results"`
		}{classes, results})
	}
	printZeroshot(c, classes, results)
	return nil
}

// softmax is the softmax over classes of scale * <img, text[j]> (both normalised, so the
// dot product is the cosine), computed in float64.
func softmax(img []float32, text [][]float32, scale float64) []float64 {
	logits := make([]float64, len(text))
	maxLogit := math.Inf(-1)
	for j, t := range text {
		var dot float64
		for k := range img {
			dot += float64(img[k]) * float64(t[k])
		}
		logits[j] = scale * dot
		maxLogit = max(maxLogit, logits[j])
	}
	var sum float64
	for j := range logits {
		logits[j] = math.Exp(logits[j] - maxLogit)
		sum += logits[j]
	}
	for j := range logits {
		logits[j] /= sum
	}
	return logits
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
