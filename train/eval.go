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

	"goclip/clip"
	"goclip/clip/tokenizer"
	"goclip/dataset"
	"goclip/embedding"
	"goclip/torch"
)

// recallKs are the k of the recalls reported, those of Recalls' fields in order.
var recallKs = [...]int{1, 5, 10}

// Recalls are R@1, R@5 and R@10 as fractions in [0, 1].
type Recalls struct {
	R1  float64 `json:"R@1"`
	R5  float64 `json:"R@5"`
	R10 float64 `json:"R@10"`
}

func recallsOf(r [len(recallKs)]float64) Recalls { return Recalls{R1: r[0], R5: r[1], R10: r[2]} }

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
const DefaultEvalBatch = embedding.DefaultBatchSize

// EvalOptions are the options of the evaluations of a run (validation, zero-shot and
// test), the same for each but their report and progress: the run's batch size,
// workers, precision, cache and process group.
func (o Options) EvalOptions(report *dataset.Report, progress func(done, total int)) EvalOptions {
	return EvalOptions{BatchSize: o.EvalBatchSize, Workers: o.Workers, Precision: o.Precision, CacheDir: o.CacheDir,
		Report: report, Progress: progress, ProcessGroup: o.ProcessGroup}
}

// embedder is the embedding pipeline of opts for m and tok, telling report the inputs
// embedded.
func (opts EvalOptions) embedder(m *clip.Model, tok *tokenizer.Tokenizer, report func(int)) *embedding.Embedder {
	if opts.BatchSize <= 0 {
		opts.BatchSize = DefaultEvalBatch
	}
	return embedding.New(m, tok, embedding.Options{BatchSize: opts.BatchSize, Workers: opts.Workers,
		Precision: opts.Precision, CacheDir: opts.CacheDir, Report: opts.Report, Progress: report})
}

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
	pg := opts.ProcessGroup
	lo, hi := shareOf(pg, len(items))
	caps0, caps1 := shareOf(pg, nCaps)
	report := progressOf(opts.Progress, hi-lo+caps1-caps0)
	emb := opts.embedder(m, tok, report)

	scope := torch.NewScope() // the pass's: the embeddings of every batch
	defer scope.Close()
	img, kept, err := imagesOf(ctx, emb, items, pg) // [N, P]
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
	txt, err := textsOf(emb, captions, pg) // [M, P]
	if err != nil {
		return res, fmt.Errorf("evaluate: %w", err)
	}
	report(-1) // every embedding is done (an unreadable image's captions are not embedded)
	err = torch.Try(func() {
		torch.NoGrad(func() {
			pairTxt := txt.IndexSelect(0, torch.FromInt64(first, int64(len(first))).ToDevice(dev, false)) // [N, P]
			res.Loss = pairLoss(img, pairTxt, m.LogitScale, opts.BatchSize)
		})
	})
	if err == nil {
		res.ImageToText, res.TextToImage, err = Retrieval(img, txt, owner)
	}
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

// imagesOf embeds the images of items with emb, in the current scope: img [N, P] holds
// the N readable images in item order and kept their indices into items. With pg each
// rank embeds its RankSlice of the items and every rank gets all rows.
func imagesOf(ctx context.Context, emb *embedding.Embedder, items []dataset.Item, pg *torch.ProcessGroup) (img *torch.Tensor, kept []int, err error) {
	lo, hi := shareOf(pg, len(items))
	res, err := emb.Images(ctx, items[lo:hi])
	if err != nil {
		return nil, nil, err
	}
	ids := make([]int64, len(res.Kept))
	for i, k := range res.Kept {
		ids[i] = int64(lo + k)
	}
	img = res.Embeddings // [N, P]
	if pg != nil {
		if img, err = pg.AllGather(img); err != nil {
			return nil, nil, err
		}
		var all *torch.Tensor
		if err := torch.Try(func() { all = torch.FromInt64(ids, int64(len(ids))) }); err != nil {
			return nil, nil, err
		}
		if all, err = pg.AllGather(all); err != nil {
			return nil, nil, err
		}
		if err := torch.Try(func() { ids = all.Int64s() }); err != nil {
			return nil, nil, err
		}
	}
	kept = make([]int, len(ids))
	for i, k := range ids {
		kept[i] = int(k)
	}
	return img, kept, nil
}

// textsOf embeds texts with emb, in the current scope: [M, P] in text order. With pg
// each rank embeds its RankSlice of the texts and every rank gets all rows.
func textsOf(emb *embedding.Embedder, texts []string, pg *torch.ProcessGroup) (*torch.Tensor, error) {
	lo, hi := shareOf(pg, len(texts))
	txt, err := emb.Texts(texts[lo:hi]) // [M, P] (this rank's share)
	if err != nil || pg == nil {
		return txt, err
	}
	return pg.AllGather(txt) // [M, P]
}

// pairLoss is the evaluation loss: img [N, P] and txt [N, P] are the (unnormalised)
// embeddings of N matching pairs; the symmetric cross-entropy of their logits
// (clip.Logits with logitScale) is taken over consecutive batches of batch pairs (the
// last one partial) and averaged per pair. It panics like tensor operations.
func pairLoss(img, txt, logitScale *torch.Tensor, batch int) float64 {
	scope := torch.NewScope()
	defer scope.Close()
	n := img.Size(0)
	in := clip.Normalized(img) // [N, P]
	tn := clip.Normalized(txt) // [N, P]
	var sum float64
	for s := int64(0); s < n; s += int64(batch) {
		torch.WithScope(func() {
			b := min(int64(batch), n-s)
			logits := clip.Logits(in.Narrow(0, s, b), tn.Narrow(0, s, b), logitScale) // [b, b]
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

// Retrieval computes the recalls at 1, 5 and 10 from image embeddings img [N, P] and
// caption embeddings txt [M, P] (unnormalised; similarity is the cosine), caption j
// describing image owner[j]. Image-to-text R@k is the fraction of images that have any
// of their captions among the k captions nearest to them; text-to-image R@k the
// fraction of captions whose image is among the k images nearest to them. A k larger
// than the candidates counts every candidate. Ties rank in index order. An owner list
// that does not match the captions and images is an error, as is a tensor failure.
func Retrieval(img, txt *torch.Tensor, owner []int) (imageToText, textToImage Recalls, err error) {
	var n, m int64
	if err := torch.Try(func() { n, m = img.Size(0), txt.Size(0) }); err != nil {
		return imageToText, textToImage, fmt.Errorf("retrieval: %w", err)
	}
	if int64(len(owner)) != m {
		return imageToText, textToImage, fmt.Errorf("retrieval: %d caption owners for %d captions", len(owner), m)
	}
	for j, o := range owner {
		if o < 0 || int64(o) >= n {
			return imageToText, textToImage, fmt.Errorf("retrieval: caption %d belongs to image %d of %d", j, o, n)
		}
	}
	err = torch.Try(func() {
		scope := torch.NewScope()
		defer scope.Close()
		in := clip.Normalized(img) // [N, P]
		tn := clip.Normalized(txt) // [M, P]
		imageToText = recallsOf(rank(in, tn, func(q, c int) bool { return owner[c] == q }))
		textToImage = recallsOf(rank(tn, in, func(q, c int) bool { return owner[q] == c }))
	})
	if err != nil {
		return Recalls{}, Recalls{}, fmt.Errorf("retrieval: %w", err)
	}
	return imageToText, textToImage, nil
}

// rank gives the recalls at recallKs of queries [nq, P] against cands [nc, P] (both
// normalised), match saying whether candidate c is a right answer for query q. It
// panics like tensor operations.
func rank(queries, cands *torch.Tensor, match func(q, c int) bool) [len(recallKs)]float64 {
	nq, nc := int(queries.Size(0)), int(cands.Size(0))
	kmax := min(recallKs[len(recallKs)-1], nc)
	var found [len(recallKs)]float64
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
			for i, k := range recallKs {
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
