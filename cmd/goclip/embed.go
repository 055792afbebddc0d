package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"codeberg.org/sbinet/npyio"
	"github.com/urfave/cli/v2"

	"goclip/embedding"
	"goclip/internal/atomicfile"
)

// The flags of goclip embed.
var (
	embedImagesFlag    = &cli.StringSliceFlag{Name: "images", EnvVars: []string{"GOCLIP_EMBED_IMAGES"}, Usage: "image files or folders (repeatable, or comma-separated)", Category: catModel}
	embedTextsFlag     = &cli.PathFlag{Name: "texts", EnvVars: []string{"GOCLIP_EMBED_TEXTS"}, Usage: `a file of texts, one per line ("-": stdin)`, Category: catModel}
	embedOutFlag       = &cli.PathFlag{Name: "out", EnvVars: []string{"GOCLIP_EMBED_OUT"}, Usage: "the .npy file to write", Required: true, Category: catOutput}
	embedNormalizeFlag = &cli.BoolFlag{Name: "normalize", EnvVars: []string{"GOCLIP_EMBED_NORMALIZE"}, Usage: "L2-normalise each embedding", Category: catOutput}
	embedSkipBadFlag   = &cli.BoolFlag{Name: "skip-bad", EnvVars: []string{"GOCLIP_EMBED_SKIP_BAD"}, Usage: "leave out unreadable images (counted on stderr) instead of failing", Category: catOutput}
	embedListFlag      = &cli.PathFlag{Name: "list", EnvVars: []string{"GOCLIP_EMBED_LIST"}, Usage: "also write the input of each row, one per line, to this file", Category: catOutput}
	embedBatchSizeFlag = batchSizeFlag(64, "inputs per forward pass")
)

var embedCommand = &cli.Command{
	Name:      "embed",
	Usage:     "write the CLIP embeddings of images or texts to a .npy file",
	ArgsUsage: "[IMAGE...]",
	Description: `Computes projected CLIP embeddings (HF get_image_features / get_text_features)
and writes them as a float32 array of shape (N, projection_dim) to a .npy file, one
row per input, in input order:

  --images   the images in the order given; a folder stands for its .jpg, .jpeg and
             .png files in sorted name order. Image paths may also follow the flags
             as arguments. Images are preprocessed as CLIPImageProcessor does, at the
             model's image size.
  --texts    a UTF-8 file with one text per line (every line is a row, empty lines
             included; "-" reads stdin), tokenized with the model's vocab.json and
             merges.txt and cut to its context length.

--adapter applies a peft LoRA adapter (peft's save_pretrained or goclip's RUN/adapter)
to --model first, as eval --adapter does.

Embeddings are not normalised unless --normalize is given. An unreadable image is an
error naming the file; with --skip-bad it is left out instead, the skipped files are
counted on stderr, and --list FILE records which input each row came from.

Examples:
   goclip embed --model openai/clip-vit-base-patch16 --images photos/ --out photos.npy
   goclip embed --model runs/demo-finetune --out e.npy --images cat.jpg dog.png
   goclip embed --model runs/demo-finetune --texts captions.txt --out t.npy --normalize`,
	Flags: append([]cli.Flag{
		modelFlag, revisionFlag,
		adapterFlag,
		forceAdapterFlag,
		embedImagesFlag,
		embedTextsFlag,
		embedOutFlag,
		embedNormalizeFlag,
		embedSkipBadFlag,
		embedListFlag,
		embedBatchSizeFlag,
		workersFlag,
	}, computeFlags()...),
	Action: torchAction(runEmbed),
}

func runEmbed(c *cli.Context) error {
	images := append(embedImagesFlag.Get(c), c.Args().Slice()...)
	textsPath := embedTextsFlag.Get(c)
	switch {
	case c.NArg() > 0 && len(embedImagesFlag.Get(c)) == 0:
		return fmt.Errorf("unexpected arguments %q: image paths need --images", c.Args().Slice())
	case len(images) > 0 && textsPath != "":
		return errors.New("give --images or --texts, not both")
	case len(images) == 0 && textsPath == "":
		return errors.New("nothing to embed: give --images PATH... or --texts FILE")
	}
	out := embedOutFlag.Get(c)
	if !strings.EqualFold(filepath.Ext(out), ".npy") {
		return fmt.Errorf("--out %s: want a .npy file", out)
	}
	batch := embedBatchSizeFlag.Get(c)
	if batch < 1 {
		return fmt.Errorf("--batch-size must be at least 1, got %d", batch)
	}

	// Read the inputs before loading the model, so that a typo fails fast.
	var texts []string
	if textsPath != "" {
		var err error
		if texts, err = readLines(textsPath); err != nil {
			return err
		}
		if len(texts) == 0 {
			return fmt.Errorf("--texts %s holds no lines", textsPath)
		}
	} else {
		var err error
		if images, err = embedding.ExpandImagePaths(images); err != nil {
			return err
		}
	}

	lm, err := loadInferenceModel(c)
	if err != nil {
		return err
	}
	defer lm.free()
	emb, err := lm.embedder(c, batch, !embedSkipBadFlag.Get(c), texts != nil)
	if err != nil {
		return err
	}
	var rows [][]float32
	inputs := texts
	if texts != nil {
		if rows, err = emb.TextRows(texts, embedNormalizeFlag.Get(c)); err != nil {
			return err
		}
	} else {
		var kept []int
		var skipped []error
		if rows, kept, skipped, err = emb.ImageRows(context.Background(), embedding.ImageItems(images), embedNormalizeFlag.Get(c)); err != nil {
			return err
		}
		reportSkipped(c, skipped)
		if len(rows) == 0 {
			return fmt.Errorf("no image could be read (%d skipped)", len(skipped))
		}
		for _, i := range kept {
			inputs = append(inputs, images[i])
		}
	}
	if err := atomicfile.WriteFile(out, func(w io.Writer) error { return npyio.Write(w, rows) }); err != nil {
		return fmt.Errorf("writing %s: %w", out, err)
	}
	if list := embedListFlag.Get(c); list != "" {
		if err := atomicfile.WriteBytes(list, []byte(strings.Join(inputs, "\n")+"\n")); err != nil {
			return fmt.Errorf("writing %s: %w", list, err)
		}
	}
	fmt.Fprintf(c.App.ErrWriter, "wrote %s: %d x %d float32\n", out, len(rows), len(rows[0]))
	return nil
}

// readLines reads a file ("-": stdin) as lines, without line endings; a final newline
// does not start another line.
func readLines(path string) ([]string, error) {
	var r io.Reader = os.Stdin
	if path != "-" {
		f, err := os.Open(path)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		r = f
	}
	var lines []string
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 64*1024*1024)
	for sc.Scan() {
		lines = append(lines, strings.TrimSuffix(sc.Text(), "\r"))
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	return lines, nil
}
