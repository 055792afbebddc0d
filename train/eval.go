package train

// Evaluation, as DESIGN.md's protocol defines it: the loss is the symmetric
// cross-entropy over batches that pair each image with its first caption, in split
// order, the last partial batch included, averaged per pair; retrieval ranks all
// captions by cosine similarity to each image (image to text) and all images to each
// caption (text to image).

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"

	"goclip/clip"
	"goclip/clip/tokenizer"
	"goclip/dataset"
	"goclip/torch"
)

// RecallKs are the k of the recalls reported.
var RecallKs = []int{1, 5, 10}

// Recalls are R@1, R@5 and R@10 as fractions in [0, 1].
type Recalls struct {
	R1  float64 `json:"R@1"`
	R5  float64 `json:"R@5"`
	R10 float64 `json:"R@10"`
}

func recallsOf(r []float64) Recalls { return Recalls{R1: r[0], R5: r[1], R10: r[2]} }

// EvalResult is what `goclip eval --json` prints and eval.json holds.
type EvalResult struct {
	Loss        float64 `json:"loss"`
	ImageToText Recalls `json:"image_to_text"`
	TextToImage Recalls `json:"text_to_image"`
	Images      int     `json:"images"`
	Captions    int     `json:"captions"`
}

// String is a one-line summary for logs.
func (r EvalResult) String() string {
	return fmt.Sprintf("loss %.4f  image->text R@1/5/10 %.3f/%.3f/%.3f  text->image R@1/5/10 %.3f/%.3f/%.3f  (%d images, %d captions)",
		r.Loss, r.ImageToText.R1, r.ImageToText.R5, r.ImageToText.R10,
		r.TextToImage.R1, r.TextToImage.R5, r.TextToImage.R10, r.Images, r.Captions)
}

// EvalOptions configure Evaluate.
type EvalOptions struct {
	BatchSize int            // pairs per loss batch and per forward pass (default 256)
	Workers   int            // image decoders (default: the loader's)
	Precision clip.Precision // autocast for the forward passes (default fp32)
	CacheDir  string         // a dataset cache to read images from ("" for none)
	Report    *dataset.Report

	// Progress, when set, is told the pass's work: (0, total) at the start, then after
	// each image batch and each caption batch embedded, where total is this rank's
	// images and captions; a last call (total, total) when the embeddings are done (an
	// unreadable image's captions are not embedded).
	Progress func(done, total int)

	// ProcessGroup, when set, splits the work over its ranks: each embeds a contiguous
	// share of the images (RankSlice) and of the captions, the embeddings are gathered
	// in rank order, and every rank computes the same metrics, those of one process
	// (up to float rounding of the forward passes). Every rank must call Evaluate with
	// the same items and options. nil: one process.
	ProcessGroup *torch.ProcessGroup
}

// DefaultEvalBatch is the evaluation batch size when none is given.
const DefaultEvalBatch = 256

// Evaluate runs the evaluation protocol on items with m in evaluation mode (it leaves m
// in evaluation mode). Captions are tokenized with tok at the model's context length.
// Unreadable images are left out, with their captions, and recorded in opts.Report.
func Evaluate(ctx context.Context, m *clip.Model, tok *tokenizer.Tokenizer, items []dataset.Item, opts EvalOptions) (res EvalResult, err error) {
	if len(items) == 0 {
		return res, errors.New("evaluate: the split holds no images")
	}
	if opts.BatchSize <= 0 {
		opts.BatchSize = DefaultEvalBatch
	}
	m.SetTrain(false)
	dev := m.Device()
	nCaps := 0
	for _, it := range items {
		nCaps += len(it.Captions)
	}
	lo, hi := shareOf(opts.ProcessGroup, len(items))
	caps0, caps1 := shareOf(opts.ProcessGroup, nCaps)
	report := progressOf(opts.Progress, hi-lo+caps1-caps0)

	scope := torch.NewScope() // the pass's: the embeddings of every batch
	defer scope.Close()
	img, kept, err := embedItemImages(ctx, m, items, opts, report) // [N, P]
	if err != nil {
		return res, fmt.Errorf("evaluate: %w", err)
	}
	if len(kept) == 0 {
		return res, errors.New("evaluate: no image of the split could be read")
	}

	// Every caption of every kept image, in order; first[i] is image i's first caption.
	var captions []string
	var owner []int
	first := make([]int64, len(kept))
	for i, idx := range kept {
		first[i] = int64(len(captions))
		for _, c := range items[idx].Captions {
			captions = append(captions, c)
			owner = append(owner, i)
		}
	}

	err = torch.Try(func() {
		torch.NoGrad(func() {
			txt := embedTexts(m, tok, captions, opts, report) // [M, P]
			report(-1)                                        // every embedding is done (an unreadable image's captions are not embedded)
			pairTxt := txt.IndexSelect(0, torch.FromInt64(first, int64(len(first))).ToDevice(dev, false))
			res.Loss = PairLoss(img, pairTxt, m.LogitScale.Item(), opts.BatchSize)
			res.ImageToText, res.TextToImage = Retrieval(img, txt, owner)
		})
	})
	if err != nil {
		return res, fmt.Errorf("evaluate: %w", err)
	}
	res.Images, res.Captions = len(kept), len(captions)
	return res, nil
}

// progressOf returns the report function of a pass of total units told to progress
// (nil: none): (0, total) at once, then report(n) adds n done, report(-1) finishes.
func progressOf(progress func(done, total int), total int) func(n int) {
	done := 0
	report := func(n int) {
		if progress == nil {
			return
		}
		if n < 0 {
			done = total
		} else {
			done = min(done+n, total)
		}
		progress(done, total)
	}
	report(0)
	return report
}

// shareOf is this process's part [lo, hi) of n rows under pg (all of them when nil).
func shareOf(pg *torch.ProcessGroup, n int) (int, int) {
	if pg == nil {
		return 0, n
	}
	return RankSlice(n, pg.Rank(), pg.World())
}

// embedItemImages embeds the images of items with m (unnormalised projected
// embeddings), in batches of opts.BatchSize, in the current scope: img [N, P] holds the
// N readable images in item order and kept their indices into items. Unreadable images
// are left out and recorded in opts.Report. With opts.ProcessGroup each rank embeds its
// RankSlice and every rank gets all rows. Every batch's activations are freed as it
// ends, and report is told its images.
func embedItemImages(ctx context.Context, m *clip.Model, items []dataset.Item, opts EvalOptions, report func(int)) (img *torch.Tensor, kept []int, err error) {
	dev := m.Device()
	pg := opts.ProcessGroup
	lo, hi := shareOf(pg, len(items))
	loader := dataset.NewLoader(items[lo:hi], dataset.LoaderOptions{
		Size: int(m.Config.Vision.ImageSize), BatchSize: opts.BatchSize, Workers: opts.Workers, FirstCaption: true,
		CacheDir: opts.CacheDir, Report: opts.Report,
	})
	defer loader.Close()
	if err := loader.Start(0, 0); err != nil {
		return nil, nil, err
	}
	var imgChunks []*torch.Tensor
	var loadErr error
	err = torch.Try(func() {
		torch.NoGrad(func() {
			for {
				b, err := loader.Next(ctx)
				if err == io.EOF {
					break
				}
				if err != nil {
					loadErr = err
					return
				}
				n := int64(b.Len())
				s := int64(b.Size)
				imgChunks = append(imgChunks, inBatchScope(func() *torch.Tensor {
					var e *torch.Tensor
					opts.Precision.Run(dev, func() {
						x := torch.FromFloat32(b.Pixels, n, 3, s, s).ToDevice(dev, false) // [B, 3, S, S]
						e = m.EncodeImage(x).To(torch.Float32)                            // [B, P]
					})
					return e
				}))
				for _, i := range b.Items {
					kept = append(kept, lo+i)
				}
				report(b.Len())
				b.Release()
			}
		})
	})
	if err == nil {
		err = loadErr
	}
	if err != nil {
		return nil, nil, err
	}
	err = torch.Try(func() {
		if len(imgChunks) == 0 {
			img = torch.Zeros([]int64{0, m.Config.ProjectionDim}, torch.Float32, dev)
		} else {
			img = torch.Cat(imgChunks, 0) // [N, P]
		}
		if pg == nil {
			return
		}
		all, err := pg.AllGather(img)
		mustDist(err)
		img = all
		ids := make([]int64, len(kept))
		for i, k := range kept {
			ids[i] = int64(k)
		}
		allIDs, err := pg.AllGather(torch.FromInt64(ids, int64(len(ids))))
		mustDist(err)
		kept = kept[:0]
		for _, k := range allIDs.Int64s() {
			kept = append(kept, int(k))
		}
	})
	if err != nil {
		return nil, nil, err
	}
	return img, kept, nil
}

// embedTexts embeds texts with m (unnormalised projected embeddings [M, P], in text
// order), tokenized with tok at the model's context length, in batches of
// opts.BatchSize, in the current scope. With opts.ProcessGroup each rank embeds its
// RankSlice and every rank gets all rows. It panics with a *torch.Error on failure, so
// it runs inside torch.Try (and NoGrad). report is told each batch's texts.
func embedTexts(m *clip.Model, tok *tokenizer.Tokenizer, texts []string, opts EvalOptions, report func(int)) *torch.Tensor {
	dev := m.Device()
	ctxLen := int(m.Config.Text.MaxPositionEmbeddings)
	pg := opts.ProcessGroup
	lo, hi := shareOf(pg, len(texts)) // this rank's texts
	chunks := []*torch.Tensor{torch.Zeros([]int64{0, m.Config.ProjectionDim}, torch.Float32, dev)}
	for start := lo; start < hi; start += opts.BatchSize {
		batch := texts[start:min(start+opts.BatchSize, hi)]
		ids, _ := tok.Batch(batch, ctxLen)
		chunks = append(chunks, inBatchScope(func() *torch.Tensor {
			var e *torch.Tensor
			opts.Precision.Run(dev, func() {
				x := m.TextIDs(ids, len(batch)).ToDevice(dev, false) // [B, L]
				e = m.EncodeText(x).To(torch.Float32)                // [B, P]
			})
			return e
		}))
		report(len(batch))
	}
	txt := torch.Cat(chunks, 0) // [M, P] (this rank's share)
	if pg != nil {
		all, err := pg.AllGather(txt)
		mustDist(err)
		txt = all // [M, P]
	}
	return txt
}

// inBatchScope runs one evaluation batch's forward pass f in its own scope and keeps
// only the embeddings it returns (in the enclosing scope): the batch's activations and
// inputs are freed before the next batch, whether f returns or panics.
func inBatchScope(f func() *torch.Tensor) *torch.Tensor {
	s := torch.NewScope()
	defer s.Close()
	return s.Keep(f())
}

// PairLoss is the evaluation loss: img [N, P] and txt [N, P] are the (unnormalised)
// embeddings of N matching pairs; the symmetric cross-entropy with logits
// exp(logitScale)·cos is taken over consecutive batches of batch pairs (the last one
// partial) and averaged per pair.
func PairLoss(img, txt *torch.Tensor, logitScale float64, batch int) float64 {
	scope := torch.NewScope()
	defer scope.Close()
	n := img.Size(0)
	scale := math.Exp(logitScale)
	in := img.Normalize(2, -1, 1e-12) // [N, P]
	tn := txt.Normalize(2, -1, 1e-12) // [N, P]
	var sum float64
	for s := int64(0); s < n; s += int64(batch) {
		torch.WithScope(func() {
			b := min(int64(batch), n-s)
			logits := in.Narrow(0, s, b).Matmul(tn.Narrow(0, s, b).T()).MulScalar(scale) // [b, b]
			sum += clip.ContrastiveLoss(logits).Item() * float64(b)
		})
	}
	return sum / float64(n)
}

// retrievalChunk is the number of query rows ranked at once.
const retrievalChunk = 1024

// retrievalChunkHook, when set, runs inside each retrieval chunk's scope with the
// chunk's first query row. Tests set it to raise a *torch.Error there and check that
// Evaluate returns the error and frees every tensor. nil outside tests.
var retrievalChunkHook func(start int)

// Retrieval computes the recalls at RecallKs from image embeddings img [N, P] and
// caption embeddings txt [M, P] (unnormalised; similarity is the cosine), caption j
// describing image owner[j]. Image-to-text R@k is the fraction of images that have any
// of their captions among the k captions nearest to them; text-to-image R@k the
// fraction of captions whose image is among the k images nearest to them. A k larger
// than the candidates counts every candidate. Ties rank in index order.
func Retrieval(img, txt *torch.Tensor, owner []int) (imageToText, textToImage Recalls) {
	scope := torch.NewScope()
	defer scope.Close()
	if int64(len(owner)) != txt.Size(0) {
		panic(&torch.Error{Op: "retrieval", Msg: fmt.Sprintf("%d caption owners for %d captions", len(owner), txt.Size(0))})
	}
	in := img.Normalize(2, -1, 1e-12) // [N, P]
	tn := txt.Normalize(2, -1, 1e-12) // [M, P]

	// rank gives the recalls of queries against cands; match says whether candidate c
	// is a right answer for query q.
	rank := func(queries, cands *torch.Tensor, match func(q, c int) bool) []float64 {
		nq, nc := int(queries.Size(0)), int(cands.Size(0))
		kmax := min(RecallKs[len(RecallKs)-1], nc)
		found := make([]float64, len(RecallKs))
		for s := 0; s < nq; s += retrievalChunk {
			b := min(retrievalChunk, nq-s)
			var top []int64
			torch.WithScope(func() { // the chunk's similarities are freed before the next
				if retrievalChunkHook != nil {
					retrievalChunkHook(s)
				}
				sims := queries.Narrow(0, int64(s), int64(b)).Matmul(cands.T()) // [b, nc]
				_, idx := sims.TopK(int64(kmax), 1, true)                       // [b, kmax]
				top = idx.Int64s()
			})
			for q := 0; q < b; q++ {
				first := kmax // rank of the first match
				for r := 0; r < kmax; r++ {
					if match(s+q, int(top[q*kmax+r])) {
						first = r
						break
					}
				}
				for i, k := range RecallKs {
					if first < k {
						found[i]++
					}
				}
			}
		}
		for i := range found {
			found[i] /= float64(nq)
		}
		return found
	}
	imageToText = recallsOf(rank(in, tn, func(q, c int) bool { return owner[c] == q }))
	textToImage = recallsOf(rank(tn, in, func(q, c int) bool { return owner[q] == c }))
	return imageToText, textToImage
}
