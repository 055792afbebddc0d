package main

// Encoding inputs with a loaded model, shared by embed and zeroshot: resolving image
// paths, decoding and preprocessing images in parallel, tokenizing texts, and running
// the towers in batches.

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"

	"github.com/urfave/cli/v2"

	"goclip/clip"
	"goclip/clip/tokenizer"
	"goclip/dataset"
	"goclip/torch"
)

// loadedModel is a model loaded for inference, with what encoding needs beside it.
type loadedModel struct {
	dir   string // --model resolved (a Hub id's snapshot folder)
	model *clip.Model
	cfg   clip.Config
	src   clip.Source
	dev   torch.Device
	prec  clip.Precision
}

// loadInferenceModel applies the compute flags and loads --model in evaluation mode.
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
	src, err := clip.FindCheckpoint(dir)
	if err != nil {
		return nil, err
	}
	m, cfg, err := clip.LoadPretrained(dir, dev, torch.Float32)
	if err != nil {
		return nil, err
	}
	m.SetTrain(false)
	m.SetSpeed(speedOf(c))
	return &loadedModel{dir: dir, model: m, cfg: cfg, src: src, dev: dev, prec: prec}, nil
}

// free releases the model.
func (lm *loadedModel) free() { lm.model.Free() }

// tokenizer loads the tokenizer that sits beside the model (vocab.json + merges.txt).
func (lm *loadedModel) tokenizer() (*tokenizer.Tokenizer, error) {
	if lm.src.Tokenizer == "" {
		return nil, fmt.Errorf("model %s has no tokenizer (vocab.json and merges.txt) beside its weights", lm.src.Path)
	}
	return tokenizer.Load(lm.src.Tokenizer)
}

// imageExts are the extensions of the files taken from a folder of images.
var imageExts = map[string]bool{".jpg": true, ".jpeg": true, ".png": true}

// expandImagePaths replaces each folder of paths by its image files (.jpg, .jpeg, .png,
// not recursive) in sorted name order; files are kept as given, in the order given.
func expandImagePaths(paths []string) ([]string, error) {
	var out []string
	for _, p := range paths {
		st, err := os.Stat(p)
		if err != nil {
			return nil, fmt.Errorf("image %s: %w", p, err)
		}
		if !st.IsDir() {
			out = append(out, p)
			continue
		}
		entries, err := os.ReadDir(p)
		if err != nil {
			return nil, err
		}
		var names []string
		for _, e := range entries {
			if !e.IsDir() && imageExts[strings.ToLower(filepath.Ext(e.Name()))] {
				names = append(names, e.Name())
			}
		}
		if len(names) == 0 {
			return nil, fmt.Errorf("folder %s holds no .jpg, .jpeg or .png images", p)
		}
		sort.Strings(names)
		for _, n := range names {
			out = append(out, filepath.Join(p, n))
		}
	}
	return out, nil
}

// preprocessed is one image, preprocessed, or the error that made it unreadable.
type preprocessed struct {
	pixels []float32
	err    error
}

// preprocessImages reads and preprocesses paths at size with up to workers goroutines;
// results are in the order of paths.
func preprocessImages(paths []string, size, workers int) []preprocessed {
	out := make([]preprocessed, len(paths))
	if workers < 1 {
		workers = 1
	}
	var wg sync.WaitGroup
	next := make(chan int)
	for w := 0; w < workers && w < len(paths); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				img, err := dataset.ReadImage(paths[i], 0)
				if err != nil {
					out[i].err = err
					continue
				}
				out[i].pixels = dataset.Preprocess(img, size)
			}
		}()
	}
	for i := range paths {
		next <- i
	}
	close(next)
	wg.Wait()
	return out
}

// imageEmbeddings are the rows embed or zeroshot computed for a list of images.
type imageEmbeddings struct {
	rows    [][]float32 // one per kept image, in input order
	kept    []string    // the images of rows
	skipped []error     // the unreadable images (only with skipBad)
}

// encodeImages embeds images in batches of batchSize: projected embeddings, L2
// normalised when normalize. An unreadable image is an error naming it, unless skipBad,
// when it is left out and reported in skipped.
func (lm *loadedModel) encodeImages(paths []string, batchSize, workers int, normalize, skipBad bool) (imageEmbeddings, error) {
	var res imageEmbeddings
	size := int(lm.cfg.Vision.ImageSize)
	for start := 0; start < len(paths); start += batchSize {
		batch := paths[start:min(start+batchSize, len(paths))]
		var pixels []float32
		var n int64
		for i, p := range preprocessImages(batch, size, workers) {
			if p.err != nil {
				if !skipBad {
					return res, p.err
				}
				res.skipped = append(res.skipped, p.err)
				continue
			}
			pixels = append(pixels, p.pixels...)
			res.kept = append(res.kept, batch[i])
			n++
		}
		if n == 0 {
			continue
		}
		s := int64(size)
		rows, err := lm.encode(normalize, func() *torch.Tensor {
			x := torch.FromFloat32(pixels, n, 3, s, s).ToDevice(lm.dev, false) // [B, 3, S, S]
			return lm.model.EncodeImage(x)                                     // [B, P]
		})
		if err != nil {
			return res, err
		}
		res.rows = append(res.rows, rows...)
	}
	return res, nil
}

// encodeTexts embeds texts in batches of batchSize, tokenized to the model's context
// length (longer texts are cut, the end token kept).
func (lm *loadedModel) encodeTexts(tok *tokenizer.Tokenizer, texts []string, batchSize int, normalize bool) ([][]float32, error) {
	ctx := int(lm.cfg.Text.MaxPositionEmbeddings)
	var rows [][]float32
	for start := 0; start < len(texts); start += batchSize {
		batch := texts[start:min(start+batchSize, len(texts))]
		ids, _ := tok.Batch(batch, ctx)
		out, err := lm.encode(normalize, func() *torch.Tensor {
			x := lm.model.TextIDs(ids, len(batch)).ToDevice(lm.dev, false) // [B, L]
			return lm.model.EncodeText(x)                                  // [B, P]
		})
		if err != nil {
			return nil, err
		}
		rows = append(rows, out...)
	}
	return rows, nil
}

// encode runs f (which returns embeddings [B, P]) without autograd, under the chosen
// precision, and copies the result to the host as float32 rows, L2 normalised when asked.
// Every tensor it makes is freed before it returns.
func (lm *loadedModel) encode(normalize bool, f func() *torch.Tensor) ([][]float32, error) {
	var flat []float32
	var b, p int64
	err := torch.Try(func() {
		scope := torch.NewScope()
		defer scope.Close()
		torch.NoGrad(func() {
			var e *torch.Tensor
			lm.prec.Run(lm.dev, func() { e = f() })
			e = e.To(torch.Float32) // [B, P]
			if normalize {
				e = e.Normalize(2, -1, 1e-12)
			}
			b, p = e.Size(0), e.Size(1)
			flat = e.Float32s()
		})
	})
	if err != nil {
		return nil, err
	}
	rows := make([][]float32, b)
	for i := range rows {
		rows[i] = flat[int64(i)*p : int64(i+1)*p : int64(i+1)*p]
	}
	return rows, nil
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
