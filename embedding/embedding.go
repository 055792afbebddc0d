// Package embedding computes CLIP embeddings of images and texts with a loaded model:
// the one pipeline behind `goclip embed`, `goclip zeroshot`, `goclip eval` and the
// trainer's evaluations. Images are read, decoded and preprocessed as
// CLIPImageProcessor does by dataset's Loader (in parallel, in input order, from a
// dataset cache when one is given); texts are tokenized at the model's context length.
// Both towers run in batches, without autograd, under the chosen precision (autocast);
// the embeddings are the projected, unnormalised ones (HF get_image_features and
// get_text_features), in float32.
//
// The Embedder runs in one process. Sharing the work over the ranks of a distributed
// run, and gathering the results, is the caller's (train's evaluation does it).
//
// # Memory
//
// Images and Texts return a tensor made in the caller's current torch scope; every
// batch's inputs and activations are freed as the batch ends, whether it returns or
// fails. ImageRows and TextRows copy the embeddings to the host and free every tensor
// they made.
//
// # Error Handling
//
// Every function returns an error: a tensor failure (a *torch.Error panic) is recovered
// inside and returned, as are the loader's errors and ctx's.
package embedding

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"goclip/clip"
	"goclip/clip/tokenizer"
	"goclip/dataset"
	"goclip/torch"
)

// DefaultBatchSize is the inputs per forward pass when Options.BatchSize is not set.
const DefaultBatchSize = 256

// Options configure an Embedder. Zero values take the documented defaults.
type Options struct {
	BatchSize int            // inputs per forward pass (default DefaultBatchSize)
	Workers   int            // image decoders (default: the loader's)
	Precision clip.Precision // autocast of the forward passes (default fp32)
	CacheDir  string         // a dataset cache to read images from ("" for none)

	// Report, when set, records each unreadable image (once) with its reason.
	Report *dataset.Report

	// Strict makes an unreadable image an error naming its file; otherwise it is left
	// out (Images.Skipped, Report).
	Strict bool

	// Progress, when set, is told the number of inputs of each batch embedded.
	Progress func(n int)
}

// Embedder embeds images and texts with a model (in evaluation mode: the caller sets
// it) and the tokenizer of its texts.
type Embedder struct {
	Model     *clip.Model
	Tokenizer *tokenizer.Tokenizer // needed by Texts only
	Options
}

// New is an Embedder of m and tok with opts.
func New(m *clip.Model, tok *tokenizer.Tokenizer, opts Options) *Embedder {
	if opts.BatchSize <= 0 {
		opts.BatchSize = DefaultBatchSize
	}
	return &Embedder{Model: m, Tokenizer: tok, Options: opts}
}

// Images are the embeddings of a list of images.
type Images struct {
	Embeddings *torch.Tensor // [N, P] float32: the readable images, in item order
	Kept       []int         // Kept[i] is the index into the items of row i
	Skipped    []error       // the unreadable images, each error naming its file, in the order met
}

// Images embeds the images of items (their captions are not used), in batches of
// BatchSize. Unreadable images are left out, recorded in Skipped and Report, unless
// Strict, when the first one is the error.
func (e *Embedder) Images(ctx context.Context, items []dataset.Item) (res Images, err error) {
	m := e.Model
	dev := m.Device()
	loader := dataset.NewLoader(items, dataset.LoaderOptions{
		Size: int(m.Config.Vision.ImageSize), BatchSize: e.BatchSize, Workers: e.Workers, FirstCaption: true,
		CacheDir: e.CacheDir, Report: e.Report,
	})
	defer loader.Close()
	if err := loader.Start(0, 0); err != nil {
		return res, err
	}
	// strictErr is the first unreadable image's error under Strict.
	strictErr := func() error {
		if n, errs := loader.Skipped(); e.Strict && n > 0 {
			return errs[0]
		}
		return nil
	}
	chunks := []*torch.Tensor{}
	var loadErr error
	err = torch.Try(func() {
		torch.NoGrad(func() {
			for {
				b, err := loader.Next(ctx)
				if err == io.EOF {
					return
				}
				if err == nil {
					err = strictErr()
				}
				if err != nil {
					loadErr = err
					return
				}
				n, s := int64(b.Len()), int64(b.Size)
				chunks = append(chunks, e.inBatchScope(func() *torch.Tensor {
					x := torch.FromFloat32(b.Pixels, n, 3, s, s).ToDevice(dev, false) // [B, 3, S, S]
					return m.EncodeImage(x)                                           // [B, P]
				}))
				res.Kept = append(res.Kept, b.Items...)
				e.progress(b.Len())
				b.Release()
			}
		})
		if loadErr == nil {
			loadErr = strictErr()
		}
		if loadErr == nil {
			res.Embeddings = catRows(chunks, m.Config.ProjectionDim, dev) // [N, P]
		}
	})
	if err == nil {
		err = loadErr
	}
	if err != nil {
		return Images{}, err
	}
	_, res.Skipped = loader.Skipped()
	return res, nil
}

// Texts embeds texts, tokenized with the Embedder's tokenizer at the model's context
// length (longer texts are cut, the end token kept), in batches of BatchSize: [M, P]
// float32, in text order.
func (e *Embedder) Texts(texts []string) (txt *torch.Tensor, err error) {
	if e.Tokenizer == nil {
		return nil, errors.New("embedding texts: no tokenizer")
	}
	m := e.Model
	dev := m.Device()
	ctxLen := int(m.Config.Text.MaxPositionEmbeddings)
	var idsErr error // the ids of a batch that TextIDs cannot cut
	err = torch.Try(func() {
		torch.NoGrad(func() {
			chunks := []*torch.Tensor{}
			for start := 0; start < len(texts); start += e.BatchSize {
				batch := texts[start:min(start+e.BatchSize, len(texts))]
				ids, _ := e.Tokenizer.Batch(batch, ctxLen)
				var cut []int64
				var l int
				if cut, l, idsErr = m.TextIDs(ids, len(batch)); idsErr != nil {
					return
				}
				chunks = append(chunks, e.inBatchScope(func() *torch.Tensor {
					x := torch.FromInt64(cut, int64(len(batch)), int64(l)).ToDevice(dev, false) // [B, L]
					return m.EncodeText(x)                                                      // [B, P]
				}))
				e.progress(len(batch))
			}
			txt = catRows(chunks, m.Config.ProjectionDim, dev) // [M, P]
		})
	})
	if err == nil {
		err = idsErr
	}
	if err != nil {
		return nil, err
	}
	return txt, nil
}

// ImageRows is Images copied to the host: one float32 row per kept image (L2
// normalised when normalize), with the kept indices and the skipped images. It frees
// every tensor it makes.
func (e *Embedder) ImageRows(ctx context.Context, items []dataset.Item, normalize bool) (rows [][]float32, kept []int, skipped []error, err error) {
	scope := torch.NewScope()
	defer scope.Close()
	res, err := e.Images(ctx, items)
	if err != nil {
		return nil, nil, nil, err
	}
	if rows, err = hostRows(res.Embeddings, normalize); err != nil {
		return nil, nil, nil, err
	}
	return rows, res.Kept, res.Skipped, nil
}

// TextRows is Texts copied to the host: one float32 row per text (L2 normalised when
// normalize). It frees every tensor it makes.
func (e *Embedder) TextRows(texts []string, normalize bool) ([][]float32, error) {
	scope := torch.NewScope()
	defer scope.Close()
	txt, err := e.Texts(texts)
	if err != nil {
		return nil, err
	}
	return hostRows(txt, normalize)
}

// hostRows copies emb [N, P] to the host as N float32 rows, normalised when asked.
func hostRows(emb *torch.Tensor, normalize bool) ([][]float32, error) {
	var flat []float32
	var n, p int64
	err := torch.Try(func() {
		if normalize {
			emb = clip.Normalized(emb) // [N, P]
		}
		n, p = emb.Size(0), emb.Size(1)
		flat = emb.Float32s()
	})
	if err != nil {
		return nil, err
	}
	rows := make([][]float32, n)
	for i := range rows {
		rows[i] = flat[int64(i)*p : int64(i+1)*p : int64(i+1)*p]
	}
	return rows, nil
}

// inBatchScope runs one batch's forward pass f under the precision in its own scope
// and keeps only the float32 embeddings it returns (in the enclosing scope): the
// batch's inputs and activations are freed before the next batch, whether f returns
// or panics.
func (e *Embedder) inBatchScope(f func() *torch.Tensor) *torch.Tensor {
	s := torch.NewScope()
	defer s.Close()
	var out *torch.Tensor
	e.Precision.Run(e.Model.Device(), func() { out = f().To(torch.Float32) }) // [B, P]
	return s.Keep(out)
}

// progress tells Progress n more inputs were embedded.
func (e *Embedder) progress(n int) {
	if e.Progress != nil {
		e.Progress(n)
	}
}

// catRows concatenates the row chunks [b_i, P] into [sum b_i, P] ([0, P] for none).
func catRows(chunks []*torch.Tensor, p int64, dev torch.Device) *torch.Tensor {
	if len(chunks) == 0 {
		return torch.Zeros([]int64{0, p}, torch.Float32, dev) // [0, P]
	}
	return torch.Cat(chunks, 0) // [N, P]
}

// ImageItems are the items of image files, named by their paths, for Images.
func ImageItems(paths []string) []dataset.Item {
	items := make([]dataset.Item, len(paths))
	for i, p := range paths {
		items[i] = dataset.Item{Image: p, Name: p}
	}
	return items
}

// imageExts are the extensions of the files taken from a folder of images.
var imageExts = map[string]bool{".jpg": true, ".jpeg": true, ".png": true}

// ExpandImagePaths replaces each folder of paths by its image files (.jpg, .jpeg,
// .png, not recursive) in sorted name order; files are kept as given, in the order
// given. A path that does not exist, or a folder without images, is an error naming it.
func ExpandImagePaths(paths []string) ([]string, error) {
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
