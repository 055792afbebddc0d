package train

import (
	"fmt"
	"io"
	"math"
	"runtime"

	"goclip/clip"
	"goclip/dataset"
	"goclip/torch"
)

// Options configure Run. Zero values take the defaults given, except where a field
// says what zero means. Validate checks the ranges, naming each field by its goclip
// train flag.
type Options struct {
	Out    string // the run folder
	Resume bool   // continue from Out/checkpoints/last.pt (or ResumeFrom)
	// ResumeFrom is, with Resume, the checkpoint file to continue from ("": last.pt;
	// ResolveCheckpoint turns latest, best and step-N into paths). Step checkpoints
	// after its step are removed, as metrics.jsonl drops its rows after that step.
	ResumeFrom string

	Epochs    int // passes over the training split (0: as many as MaxSteps needs, 1 without MaxSteps)
	MaxSteps  int // stop after this many optimizer steps (0: no limit)
	BatchSize int // the global batch (default 32)
	GradAccum int // micro-batches per step (default 1)

	LR          float64 // peak learning rate (default 5e-4)
	MinLR       float64 // the cosine's floor (default 0)
	Warmup      int     // linear warmup steps
	Schedule    string  // Cosine (default) or Constant
	WeightDecay float64 // decoupled, on weight matrices only (0: none; goclip train's --weight-decay is 0.1)
	Beta1       float64 // default 0.9
	Beta2       float64 // default 0.98
	Eps         float64 // default 1e-6
	ClipGrad    float64 // max gradient 2-norm (0: no clipping)

	Precision   clip.Precision // fp32, bf16 or fp16 (default fp32)
	InitScale   float64        // fp16's initial loss scale (default 65536)
	MaxBadSteps int            // non-finite steps in a row tolerated (default 10); more stop the run at the next read of the steps (see SyncEveryStep)
	// FP32Base keeps a LoRA run's frozen base in float32 under BF16 (autocast then casts
	// it at every step). By default a LoRA run (Job.LoRA) under BF16 keeps it in bf16
	// on the device (lora.KeepBaseIn) and puts the float32 base back before the export.
	FP32Base bool

	LogEvery      int // steps between metrics.jsonl training rows (default 10)
	EvalEvery     int // steps between evaluations (0: at the end of each epoch)
	EvalBatchSize int // evaluation batch (default 256)
	SaveEvery     int // steps between extra writes of last.pt, each also kept as checkpoints/step-N.pt (0: only at evaluations, none kept)
	Keep          int // the step checkpoints kept: the newest Keep (0: all)

	// Zeroshot, when set, is an image folder (dataset.ReadImageFolder) whose zero-shot
	// accuracy (see Zeroshot) is measured every ZeroshotEvery steps (0: at each
	// validation evaluation) and at the end, with ZeroshotTemplates (default
	// ImageNetTemplates), each a ZeroshotRow of metrics.jsonl.
	Zeroshot          *dataset.ImageFolder
	ZeroshotTemplates []string
	ZeroshotEvery     int

	Lock Lock // frozen towers (LiT; see lock.go)
	// Loss is LossCLIP (default: the symmetric contrastive loss) or LossSigLIP (the
	// pairwise sigmoid loss, siglip.go, with a learnable bias logit_bias that the
	// trainer owns and the checkpoints carry; a new SigLIP run starts logit_scale at
	// SigLIPInitLogitScale). Validation losses are CLIP's contrastive loss either way.
	Loss string

	Workers  int                    // image decoders (default runtime.NumCPU())
	Seed     uint64                 // data order, caption draws and augmentation
	Augment  dataset.AugmentOptions // training augmentation
	CacheDir string                 // a dataset cache ("" for none)
	Report   *dataset.Report        // unreadable images are recorded here
	// HostInput makes a CUDA run normalise the images on the host and copy each batch in
	// its step, instead of the default device input path (feed.go): uint8 crops copied one
	// step ahead and normalised on the device, bit for bit the same pixels. On the CPU,
	// where there is nothing to copy, the loader's workers always normalise (a table
	// lookup in the step costs ~35x their time there).
	HostInput bool

	// Folder is Out already taken with OpenRun (the command line takes it before it
	// writes into Out); nil: Run takes it on the main rank and releases it at the end.
	Folder *RunFolder

	// SkipExport leaves out the final model files (model/, model.pt, adapter/): a run
	// that only needs its checkpoints, metrics and evaluations.
	SkipExport bool

	Args any       // written to args.json (the command line's settings; rewritten on resume)
	Log  io.Writer // progress and messages (nil: none)

	// ProcessGroup, when set, makes the run data parallel over its ranks (see
	// DataParallel): each rank loads its contiguous share of every global batch of
	// BatchSize, the loss is taken over the features of the whole batch, the gradients
	// are averaged, and evaluations split their images and captions over the ranks.
	// Every rank runs Run with the same options and data; rank 0 alone writes the run
	// folder (a resumed run reads checkpoints/last.pt on every rank, so Out must be on
	// storage they share). nil: one process.
	ProcessGroup *torch.ProcessGroup

	// SyncEveryStep reads each step's results (loss, gradient norm, skipped or not) as
	// soon as it is queued, a host wait per step, for comparison with the default: a step
	// decides and applies or skips its update on the device, and the host reads the
	// results of the steps taken once per logging window (LogEvery), before an
	// evaluation or checkpoint and at the end of an epoch. Either way the results and
	// the run are the same; only when a run of bad steps is reported differs (see
	// MaxBadSteps).
	SyncEveryStep bool

	// AfterStep, when set, is called after every optimizer step with the number of
	// steps taken (tests use it to interrupt a run by cancelling its context). It needs
	// each step's loss, so it makes the run read every step, as SyncEveryStep does.
	AfterStep func(step int, loss float64)
}

// defaults fills the zero fields that have a default; negative values are left for
// Validate to refuse.
func (o *Options) defaults() {
	if o.Epochs == 0 && o.MaxSteps == 0 {
		o.Epochs = 1
	}
	if o.BatchSize == 0 {
		o.BatchSize = 32
	}
	if o.GradAccum == 0 {
		o.GradAccum = 1
	}
	if o.LR == 0 {
		o.LR = 5e-4
	}
	if o.Schedule == "" {
		o.Schedule = Cosine
	}
	if o.Beta1 == 0 {
		o.Beta1 = 0.9
	}
	if o.Beta2 == 0 {
		o.Beta2 = 0.98
	}
	if o.Eps == 0 {
		o.Eps = 1e-6
	}
	if o.Precision == "" {
		o.Precision = clip.FP32
	}
	if o.InitScale == 0 {
		o.InitScale = DefaultInitScale
	}
	if o.MaxBadSteps == 0 {
		o.MaxBadSteps = 10
	}
	if o.LogEvery == 0 {
		o.LogEvery = 10
	}
	if o.EvalBatchSize == 0 {
		o.EvalBatchSize = DefaultEvalBatch
	}
	if o.Workers == 0 {
		o.Workers = runtime.NumCPU()
	}
}

// Validate checks every setting's range and names the goclip train flag of the first
// one out of range. It takes options as a command line gives them: zero is accepted
// only where the field gives zero a meaning (Epochs with MaxSteps, MaxSteps,
// EvalEvery, SaveEvery, ClipGrad, Warmup, MinLR, WeightDecay) or where the command line
// has no flag for it (Beta1, Eps, InitScale: zero takes the default). Run applies the
// defaults of the zero fields first and then calls Validate.
func (o Options) Validate() error {
	bad := func(flag string, v any, want string) error {
		return fmt.Errorf("--%s %v: %s", flag, v, want)
	}
	finite := func(x float64) bool { return !math.IsNaN(x) && !math.IsInf(x, 0) }
	switch {
	case o.Epochs < 0 || (o.Epochs == 0 && o.MaxSteps <= 0):
		return bad("epochs", o.Epochs, "want at least 1 (or 0 with --max-steps N: as many epochs as N steps need)")
	case o.MaxSteps < 0:
		return bad("max-steps", o.MaxSteps, "want 0 (no limit) or more")
	case o.BatchSize < 1:
		return bad("batch-size", o.BatchSize, "want at least 1")
	case o.GradAccum < 1 || o.GradAccum > o.BatchSize:
		return bad("grad-accum", o.GradAccum, fmt.Sprintf("want 1 to --batch-size (%d)", o.BatchSize))
	case !(o.LR > 0) || !finite(o.LR):
		return bad("lr", o.LR, "want a learning rate above 0")
	case !(o.MinLR >= 0) || o.MinLR > o.LR:
		return bad("min-lr", o.MinLR, fmt.Sprintf("want 0 to --lr (%g)", o.LR))
	case o.Warmup < 0:
		return bad("warmup", o.Warmup, "want 0 or more steps")
	case o.Schedule != "" && o.Schedule != Cosine && o.Schedule != Constant:
		return bad("schedule", o.Schedule, "want "+Cosine+" or "+Constant)
	case !(o.WeightDecay >= 0) || !finite(o.WeightDecay):
		return bad("weight-decay", o.WeightDecay, "want 0 or more")
	case !(o.Beta1 >= 0 && o.Beta1 < 1):
		return bad("beta1", o.Beta1, "want a value in [0, 1)")
	case !(o.Beta2 > 0 && o.Beta2 < 1):
		return bad("beta2", o.Beta2, "want a value in (0, 1)")
	case !(o.Eps >= 0) || !finite(o.Eps):
		return bad("eps", o.Eps, "want a value above 0")
	case !(o.ClipGrad >= 0) || !finite(o.ClipGrad):
		return bad("clip-grad", o.ClipGrad, "want 0 (no clipping) or a positive norm")
	case !(o.InitScale >= 0) || !finite(o.InitScale):
		return bad("init-scale", o.InitScale, "want a loss scale above 0")
	case o.MaxBadSteps < 1:
		return bad("max-bad-steps", o.MaxBadSteps, "want at least 1")
	case o.LogEvery < 1:
		return bad("log-every", o.LogEvery, "want at least 1 step")
	case o.EvalEvery < 0:
		return bad("eval-every", o.EvalEvery, "want 0 (each epoch) or more steps")
	case o.ZeroshotEvery < 0:
		return bad("zeroshot-every", o.ZeroshotEvery, "want 0 (at each evaluation) or more steps")
	case o.EvalBatchSize < 1:
		return bad("eval-batch-size", o.EvalBatchSize, "want at least 1")
	case o.SaveEvery < 0:
		return bad("save-every", o.SaveEvery, "want 0 (at evaluations only) or more steps")
	case o.Keep < 0:
		return bad("keep", o.Keep, "want 0 (keep every step checkpoint) or more")
	case o.Keep > 0 && o.SaveEvery == 0:
		return bad("keep", o.Keep, "keeps the step checkpoints of --save-every N: give --save-every too")
	case o.Loss != "" && o.Loss != LossCLIP && o.Loss != LossSigLIP:
		return bad("loss", o.Loss, "want "+LossCLIP+" or "+LossSigLIP)
	case o.Workers < 1:
		return bad("workers", o.Workers, "want at least 1")
	}
	return o.Lock.Validate()
}
