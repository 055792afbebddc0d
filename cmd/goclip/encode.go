package main

// The model of eval, embed and zeroshot: --model loaded for inference (with --adapter
// where the command has it), and the embedding pipeline of the command's flags.

import (
	"errors"
	"fmt"

	"github.com/urfave/cli/v2"

	"goclip/clip"
	"goclip/embedding"
	"goclip/lora"
	"goclip/torch"
)

// loadedModel is a model loaded for inference, with what encoding needs beside it.
type loadedModel struct {
	pre   *clip.Pretrained // --model, found (its tokenizer nil when it has none)
	model *clip.Model
	dev   torch.Device
	prec  clip.Precision
}

// loadInferenceModel applies the compute flags, loads --model in evaluation mode and
// applies --adapter when given.
func loadInferenceModel(c *cli.Context) (*loadedModel, error) {
	dir, err := modelPath(c)
	if err != nil {
		return nil, err
	}
	if dir == "" {
		return nil, errors.New("--model DIR is required (an HF CLIP folder or a run folder)")
	}
	dev, err := setupCompute(c)
	if err != nil {
		return nil, err
	}
	prec, err := precisionOf(c, dev)
	if err != nil {
		return nil, err
	}
	pre, err := clip.FindPretrained(dir, false)
	if err != nil {
		return nil, err
	}
	m, _, err := pre.Load(dev)
	if err != nil {
		return nil, err
	}
	m.SetTrain(false)
	m.SetSpeed(speedOf(c))
	lm := &loadedModel{pre: pre, model: m, dev: dev, prec: prec}
	if adapter := c.String(adapterFlag.Name); adapter != "" {
		if adapter, err = adapterPath(adapter); err == nil {
			_, err = lora.LoadWith(adapter, m, adapterChecks(c, dir))
		}
		if err != nil {
			lm.free()
			return nil, err
		}
	}
	return lm, nil
}

// free releases the model.
func (lm *loadedModel) free() { lm.model.Free() }

// embedder is the embedding pipeline of the model with batch inputs per forward pass
// (the command's --batch-size), --workers and --precision; strict makes an unreadable
// image an error. withTokenizer requires the
// tokenizer beside the model (to embed texts).
func (lm *loadedModel) embedder(c *cli.Context, batch int, strict, withTokenizer bool) (*embedding.Embedder, error) {
	tok := lm.pre.Tokenizer
	if withTokenizer {
		var err error
		if tok, err = lm.pre.NeedTokenizer(); err != nil {
			return nil, err
		}
	}
	return embedding.New(lm.model, tok, embedding.Options{BatchSize: batch, Workers: workersFlag.Get(c),
		Precision: lm.prec, Strict: strict}), nil
}

// reportSkipped writes how many images were skipped, and the first few, to stderr.
func reportSkipped(c *cli.Context, skipped []error) {
	if len(skipped) == 0 {
		return
	}
	fmt.Fprintf(c.App.ErrWriter, "skipped %d unreadable image(s):\n", len(skipped))
	for i, err := range skipped {
		if i == 5 {
			fmt.Fprintf(c.App.ErrWriter, "  ... and %d more\n", len(skipped)-i)
			break
		}
		fmt.Fprintf(c.App.ErrWriter, "  %v\n", err)
	}
}
