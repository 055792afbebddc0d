package train

// Data-parallel training over a torch.ProcessGroup: every rank holds the whole model,
// takes a contiguous slice of each global batch, computes the contrastive loss against
// the features of the whole global batch (gathered with gradients), and averages the
// gradients of the trainable parameters before the optimizer step. The step then updates
// every rank's copy identically, so the ranks stay in sync without sending weights.
//
// Why the gradients come out right: with N rows in the global batch split over W ranks
// (b_r rows on rank r), rank r's loss is over its own rows against all N columns, scaled
// by W·b_r/N (1 for equal slices). The mean of the W rank losses is then exactly the
// global-batch loss. GatherWithGrad sends each rank the gradient of the sum of all ranks'
// losses with respect to its rows, so the sum over ranks of the parameter gradients is
// the gradient of that sum, and dividing by W (AverageGradients) gives the gradient of the
// global-batch loss, as one process with the whole batch would compute it.

import (
	"errors"
	"fmt"
	"time"

	"goclip/clip"
	"goclip/nn"
	"goclip/torch"
)

// DefaultBucketBytes is the size of the flat buffers gradients are all-reduced in, as
// PyTorch DDP's bucket_cap_mb default (25 MB).
const DefaultBucketBytes = 25 << 20

// JoinFromEnv joins the process group that torchrun or goclip launch describe in the
// environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT), with NCCL on
// CUDA and Gloo on the CPU, every collective waiting at most timeout. On CUDA the rank
// runs on its own GPU, cuda:LOCAL_RANK, unless pinned (the device was given with an
// index); the device returned is the one to use. Without WORLD_SIZE, or with
// WORLD_SIZE=1, it returns a nil group and dev: one process.
func JoinFromEnv(dev torch.Device, pinned bool, timeout time.Duration) (*torch.ProcessGroup, torch.Device, error) {
	rv, err := torch.EnvRendezvous()
	if err != nil {
		return nil, dev, err
	}
	if !rv.FromEnv || rv.World < 2 {
		return nil, dev, nil
	}
	if dev.Type == torch.CUDADevice && !pinned {
		dev.Index = rv.LocalRank
		if err := torch.CheckDevice(dev); err != nil {
			return nil, dev, fmt.Errorf("rank %d (LOCAL_RANK %d): %w", rv.Rank, rv.LocalRank, err)
		}
	}
	pg, err := rv.NewProcessGroup(torch.DefaultBackend(dev), timeout)
	if err != nil {
		return nil, dev, fmt.Errorf("rank %d of %d joining the process group at %s:%d: %w", rv.Rank, rv.World, rv.Addr, rv.Port, err)
	}
	return pg, dev, nil
}

// IsMainRank reports whether this process is rank 0 of pg, or the only process (nil).
func IsMainRank(pg *torch.ProcessGroup) bool { return pg == nil || pg.Rank() == 0 }

// DataParallel keeps the parameters of one model in sync over a process group.
type DataParallel struct {
	PG          *torch.ProcessGroup
	BucketBytes int64 // gradient bucket size; DefaultBucketBytes when 0

	params    []nn.Named // every parameter: broadcast at start
	trainable []nn.Named // those that require grad: gradients averaged
}

// NewDataParallel makes the helper for params (all of the model's parameters; those that
// require grad are the trainable ones). It runs no collective. A nil pg, or a parameter
// whose tensor is nil or freed, is an error naming it.
func NewDataParallel(pg *torch.ProcessGroup, params []nn.Named) (*DataParallel, error) {
	if pg == nil {
		return nil, errors.New("train: data parallel: no process group")
	}
	dp := &DataParallel{PG: pg, params: params}
	for _, p := range params {
		var grad bool
		if err := torch.Try(func() { grad = p.T.RequiresGrad() }); err != nil {
			return nil, fmt.Errorf("train: data parallel: parameter %s: %w", p.Name, err)
		}
		if grad {
			dp.trainable = append(dp.trainable, p)
		}
	}
	return dp, nil
}

// checkShare checks, before a step, that this rank's share of the global batch, n
// samples, makes the --grad-accum micro-batches that every rank runs (a rank whose
// loader left out unreadable images can fall short). One process: nothing to check.
// With one micro-batch, an empty share is left to rowOffset, an error on every rank
// alike.
func (t *trainer) checkShare(n int) error {
	if t.dp == nil || len(microBounds(n, t.opts.GradAccum))-1 == t.opts.GradAccum {
		return nil
	}
	return fmt.Errorf("train: rank %d holds %d samples of the batch, fewer than --grad-accum %d", t.dp.Rank(), n, t.opts.GradAccum)
}

// Rank is this process's rank; World the number of ranks.
func (dp *DataParallel) Rank() int  { return dp.PG.Rank() }
func (dp *DataParallel) World() int { return dp.PG.World() }

// IsMain reports whether this is rank 0, the rank that logs, plots and writes
// checkpoints.
func (dp *DataParallel) IsMain() bool { return dp.PG.Rank() == 0 }

// SyncParameters overwrites every parameter with rank 0's values. Call it once after
// the model is built, loaded or resumed, before the first step.
func (dp *DataParallel) SyncParameters() (err error) {
	defer recoverTorch(&err)
	for _, p := range dp.params {
		if err := dp.PG.Broadcast(p.T, 0); err != nil {
			return fmt.Errorf("train: broadcasting %s from rank 0: %w", p.Name, err)
		}
	}
	return nil
}

// AverageGradients replaces the gradient of every trainable parameter by its mean over
// the ranks. Gradients travel in flat buckets of about BucketBytes (one collective each,
// consecutive parameters of one dtype and device). Call it after backward (after the
// last micro-batch when accumulating) and before unscaling, clipping and the optimizer
// step. Parameters without a gradient are skipped: the set with one must be the same on
// every rank, as it is for a model whose every parameter is used in each step.
func (dp *DataParallel) AverageGradients() (err error) {
	defer recoverTorch(&err)
	if dp.PG.World() == 1 {
		return nil
	}
	limit := dp.BucketBytes
	if limit <= 0 {
		limit = DefaultBucketBytes
	}
	scope := torch.NewScope()
	defer scope.Close()
	var bucket []*torch.Tensor
	var bytes int64
	var kind torch.DType
	var dev torch.Device
	flush := func() error {
		if len(bucket) == 0 {
			return nil
		}
		err := dp.PG.AllReduceOp(torch.ReduceAvg, bucket...)
		bucket, bytes = bucket[:0], 0
		return err
	}
	for _, p := range dp.trainable {
		var g *torch.Tensor
		if err := torch.Try(func() { g = p.T.Grad() }); err != nil {
			return err
		}
		if g == nil {
			continue
		}
		dt, d := g.DType(), g.Device()
		if len(bucket) > 0 && (dt != kind || d != dev) {
			if err := flush(); err != nil {
				return err
			}
		}
		kind, dev = dt, d
		bucket = append(bucket, g) // shares the parameter's gradient: reduced in place
		bytes += g.Numel() * int64(dt.Size())
		if bytes >= limit {
			if err := flush(); err != nil {
				return err
			}
		}
	}
	return flush()
}

// RankSlice is the rows [start, end) of a global batch of n samples that rank takes:
// contiguous, in rank order, sizes differing by at most one. n must be at least world.
func RankSlice(n, rank, world int) (start, end int) {
	return rank * n / world, (rank + 1) * n / world
}

// Slice is this rank's rows [start, end) of a global batch of n samples.
func (dp *DataParallel) Slice(n int) (start, end int) {
	return RankSlice(n, dp.PG.Rank(), dp.PG.World())
}

// MeanScalar is the mean of v over the ranks (a step's loss for the log).
func (dp *DataParallel) MeanScalar(v float64) (_ float64, err error) {
	defer recoverTorch(&err)
	t := torch.FromFloat64([]float64{v}, 1)
	defer t.Free()
	if err := dp.PG.AllReduceOp(torch.ReduceAvg, t); err != nil {
		return 0, err
	}
	return t.Float64s()[0], nil
}

// AnyRank reports whether v is true on any rank (a collective: every rank calls it).
// Ranks use it to agree on stopping, e.g. after an interrupt that reached some of them.
func (dp *DataParallel) AnyRank(v bool) (_ bool, err error) {
	defer recoverTorch(&err)
	x := 0.0
	if v {
		x = 1
	}
	t := torch.FromFloat64([]float64{x}, 1)
	defer t.Free()
	if err := dp.PG.AllReduceOp(torch.ReduceMax, t); err != nil {
		return false, err
	}
	return t.Float64s()[0] != 0, nil
}

// ContrastiveLossGathered is this rank's share of CLIP's symmetric contrastive loss over
// the global batch, computed in float32. img and txt [b, P] are this rank's unnormalised
// embeddings, the rows of the global batch of N that follow those of the lower ranks
// (RankSlice(N, rank, W) when every rank has its full share; a rank whose loader left
// out unreadable images has fewer); logitScale is the log of the temperature scale
// (CLIPModel's logit_scale). The features of all ranks are gathered with gradients, so
// the negatives are the whole global batch; the loss covers this rank's rows of
// logits_per_image and logits_per_text [b, N] (open_clip's local loss), scaled by
// W·b/N so that the mean over ranks is the global-batch loss. After backward on every
// rank and AverageGradients, the gradients equal those of the global-batch loss.
// With a nil pg it is the ordinary loss over the local batch. A failed tensor operation
// or collective is the error.
func ContrastiveLossGathered(img, txt, logitScale *torch.Tensor, pg *torch.ProcessGroup) (loss *torch.Tensor, err error) {
	start, err := rowOffsetOf(img, pg)
	if err != nil {
		return nil, err
	}
	err = torch.Try(func() { loss = contrastiveLossGathered(img, txt, logitScale, pg, start) })
	return loss, err
}

// contrastiveLossGathered is ContrastiveLossGathered inside tensor maths, with this
// rank's row offset start (rowOffset) given: it panics with a *torch.Error, a failed
// collective's included, for the caller to recover.
func contrastiveLossGathered(img, txt, logitScale *torch.Tensor, pg *torch.ProcessGroup, start int64) *torch.Tensor {
	in := clip.Normalized(img) // [b, P]
	tn := clip.Normalized(txt) // [b, P]
	allImg, allTxt := in, tn   // [N, P]
	world := 1
	b := in.Size(0)
	if pg != nil {
		world = pg.World()
		// One gather for both towers: with two, their backward all-reduces would run in
		// whatever order each rank's autograd engine picks for independent nodes (it
		// follows per-thread sequence numbers), and a rank summing image gradients with
		// another's text gradients gets wrong, though identical, results.
		p := in.Size(1)
		both := pg.GatherWithGrad(torch.Cat([]*torch.Tensor{in, tn}, 1)) // [N, 2P]
		allImg, allTxt = both.Narrow(1, 0, p), both.Narrow(1, p, p)      // [N, P] each
	}
	n := allImg.Size(0)
	perImage := clip.Logits(in, allTxt, logitScale)                                       // [b, N]
	perText := clip.Logits(tn, allImg, logitScale)                                        // [b, N]
	target := torch.Arange(float64(start), float64(start+b), 1, torch.Int64, in.Device()) // [b]
	loss := torch.CrossEntropy(perImage, target).Add(torch.CrossEntropy(perText, target)) // []
	return loss.MulScalar(0.5 * float64(world) * float64(b) / float64(n))                 // []
}

// rowOffset is where this rank's b rows start in the global batch: the rows of the
// lower ranks, gathered from every rank (one collective and one host read, once per
// step). A rank without rows is an error on every rank alike, since each sees the counts.
func rowOffset(pg *torch.ProcessGroup, b int64, dev torch.Device) (start int64, err error) {
	var counts []int64
	if err := torch.Try(func() {
		torch.WithScope(func() {
			all, err := pg.AllGather(torch.FromInt64([]int64{b}, 1).ToDevice(dev, false)) // [W]
			torch.Must(err)
			counts = all.Int64s()
		})
	}); err != nil {
		return 0, fmt.Errorf("train: gathering the ranks' shares of the batch: %w", err)
	}
	for r, c := range counts {
		if c == 0 {
			return 0, fmt.Errorf("train: rank %d has no sample in its share of the global batch (all its images unreadable?)", r)
		}
		if r < pg.Rank() {
			start += c
		}
	}
	return start, nil
}

// rowOffsetOf is rowOffset of the rows of x [b, ...] (0 with a nil pg: one process).
func rowOffsetOf(x *torch.Tensor, pg *torch.ProcessGroup) (int64, error) {
	if pg == nil {
		return 0, nil
	}
	var b int64
	var dev torch.Device
	if err := torch.Try(func() { b, dev = x.Size(0), x.Device() }); err != nil {
		return 0, err
	}
	return rowOffset(pg, b, dev)
}
