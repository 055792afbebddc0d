package train

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"goclip/clip"
	"goclip/clip/tokenizer"
	"goclip/dataset"
	"goclip/internal/atomicfile"
	"goclip/lora"
	"goclip/nn"
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
	WeightDecay float64 // decoupled, on weight matrices only (default 0.1)
	Beta1       float64 // default 0.9
	Beta2       float64 // default 0.98
	Eps         float64 // default 1e-6
	ClipGrad    float64 // max gradient 2-norm (0: no clipping)

	Precision   clip.Precision // fp32, bf16 or fp16 (default fp32)
	InitScale   float64        // fp16's initial loss scale (default 65536)
	MaxBadSteps int            // non-finite steps in a row tolerated (default 10)
	// FP32Base keeps a LoRA run's frozen base in float32 under BF16 (autocast then casts
	// it at every step). By default a LoRA run (Job.Adapter) under BF16 keeps it in bf16
	// on the device (lora.KeepBaseIn) and puts the float32 base back before Job.Finish.
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

	// AfterStep, when set, is called after every optimizer step with the number of
	// steps taken (tests use it to interrupt a run by cancelling its context).
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

// Job is what to train: a built model and the data. Training from scratch, full
// fine-tuning and LoRA fine-tuning differ only here.
type Job struct {
	Model        *clip.Model
	Tokenizer    *tokenizer.Tokenizer
	TokenizerDir string // its vocab.json and merges.txt, copied into model/ ("" for none)

	Train, Val, Test []dataset.Item
	// TrainShards, when set, streams the training data from webdataset shards
	// (dataset.StreamLoader) instead of Train.
	TrainShards *dataset.Shards

	// Params are the parameters to train (they must require grad); nil trains every
	// parameter of the model. Their names key the checkpoint's tensors.
	Params []nn.Named
	// Adapter marks a LoRA run: the checkpoint holds its tensors under "adapter"
	// instead of "model".
	Adapter bool

	// Finish writes the final model files into the run folder; nil writes model/ (an
	// HF folder, clip.SaveHF) and model.pt (clip.SavePT). LoRA runs pass a function
	// that also writes adapter/ and saves the merged model.
	Finish func(run string) error
}

func (j *Job) key() string {
	if j.Adapter {
		return "adapter"
	}
	return "model"
}

// Result summarises a finished run.
type Result struct {
	Steps       int             // optimizer steps taken over the run (resumed runs included)
	Skipped     int             // steps skipped (non-finite, fp16 overflow)
	TrainLosses []float64       // the train_loss of each metrics row
	Val         *EvalResult     // the last validation evaluation (nil without a val split)
	BestValLoss float64         // the lowest validation loss (NaN without evaluations)
	Test        *EvalResult     // eval.json (nil without a test split)
	Zeroshot    *ZeroshotResult // the last zero-shot measurement (nil without Options.Zeroshot)
	Duration    time.Duration   // wall time of this invocation
}

// InterruptedError is returned when the context was cancelled: the current step was
// finished and the checkpoint written.
type InterruptedError struct {
	Step       int
	Checkpoint string
}

func (e *InterruptedError) Error() string {
	return fmt.Sprintf("interrupted after step %d; the run was saved to %s", e.Step, e.Checkpoint)
}

// BadStepsError stops a run whose loss or gradients stayed non-finite, or whose
// validation loss was not finite (Validation).
type BadStepsError struct {
	Streak     int
	Step       int
	Checkpoint string // the last good checkpoint ("" when none was written)

	Validation bool    // the validation loss at Step was not finite
	ValLoss    float64 // that loss
}

func (e *BadStepsError) Error() string {
	msg := fmt.Sprintf("%d steps in a row had a non-finite loss or gradient (up to step %d): stopping", e.Streak, e.Step)
	if e.Validation {
		msg = fmt.Sprintf("the validation loss at step %d is %v: stopping", e.Step, e.ValLoss)
	}
	if e.Checkpoint != "" {
		msg += "; the last good checkpoint is " + e.Checkpoint
	}
	return msg + " (lower --lr, raise --warmup, set --clip-grad, or use --precision fp32)"
}

// trainer is the state of one run.
type trainer struct {
	job    Job
	opts   Options
	model  *clip.Model
	params []nn.Named   // trained parameters, in optimizer group order
	groups [][]nn.Named // the optimizer's groups: decay, then no decay
	opt    *torch.AdamW
	bias   *torch.Tensor // SigLIP's logit_bias (nil for CLIP's loss)
	sched  Schedule
	scaler *LossScaler
	dp     *DataParallel // nil: one process
	feed   *feed         // the device input path (nil: the host path)
	// afterForward, set for one step, runs once that step's first forward is queued,
	// before the host waits for its loss (the feed reads the next batch ahead there).
	afterForward func()
}

// main reports whether this process writes the run folder (rank 0, or the only one).
func (t *trainer) main() bool { return t.dp == nil || t.dp.IsMain() }

// newTrainer builds the optimizer over job's trainable parameters.
func newTrainer(job Job, opts Options) (*trainer, error) {
	opts.defaults()
	t := &trainer{job: job, opts: opts, model: job.Model}
	params := job.Params
	if params == nil {
		params = job.Model.NamedParameters()
	}
	if err := opts.Lock.Check(job.Model.Config); err != nil {
		return nil, err
	}
	if err := opts.Lock.apply(job.Model.Config, params); err != nil {
		return nil, err
	}
	if opts.Loss == LossSigLIP {
		if err := torch.Try(func() {
			t.bias = torch.FromFloat32([]float32{float32(SigLIPInitLogitBias)}).ToDevice(job.Model.Device(), false).SetRequiresGrad(true).Owned()
		}); err != nil {
			return nil, err
		}
		params = append(append([]nn.Named(nil), params...), nn.Named{Name: LogitBiasKey, T: t.bias})
	}
	decay, noDecay := ParamGroups(params)
	if len(decay)+len(noDecay) == 0 {
		return nil, errors.New("train: no parameter requires grad")
	}
	t.groups = [][]nn.Named{decay, noDecay}
	t.params = append(append([]nn.Named(nil), decay...), noDecay...)
	tensors := func(ps []nn.Named) []*torch.Tensor {
		out := make([]*torch.Tensor, len(ps))
		for i, p := range ps {
			out[i] = p.T
		}
		return out
	}
	var err error
	if terr := torch.Try(func() {
		t.opt = torch.NewAdamW([][]*torch.Tensor{tensors(decay), tensors(noDecay)},
			[]float64{opts.WeightDecay, 0}, opts.Beta1, opts.Beta2, opts.Eps)
	}); terr != nil {
		err = terr
	}
	if opts.Precision == clip.FP16 {
		t.scaler = NewLossScaler(opts.InitScale)
	}
	return t, err
}

func (t *trainer) free() {
	if t.opt != nil {
		t.opt.Free()
	}
	if t.bias != nil {
		t.bias.Free()
	}
}

// allParams are the model's parameters and the trainer's own (SigLIP's bias).
func (t *trainer) allParams() []nn.Named {
	ps := t.model.NamedParameters()
	if t.bias != nil {
		ps = append(ps, nn.Named{Name: LogitBiasKey, T: t.bias})
	}
	return ps
}

// Run trains job.Model on job.Train as opts says, evaluating on job.Val, and writes the
// run folder opts.Out (see DESIGN.md, "Files a run writes"). It returns an
// *InterruptedError when ctx is cancelled (after saving the checkpoint) and a
// *BadStepsError when too many steps in a row were not finite.
func Run(ctx context.Context, job Job, opts Options) (*Result, error) {
	runtime.LockOSThread() // grad mode and autocast are per OS thread
	defer runtime.UnlockOSThread()
	root := torch.NewScope() // the run's root scope: nothing the run makes outlives it unowned
	defer root.Close()
	began := time.Now()
	if opts.Out == "" {
		return nil, errors.New("train: no run folder (Options.Out)")
	}
	opts.defaults()
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	t, err := newTrainer(job, opts)
	if err != nil {
		return nil, err
	}
	defer t.free()
	opts = t.opts
	m := job.Model
	if pg := opts.ProcessGroup; pg != nil {
		if opts.BatchSize/pg.World() < opts.GradAccum {
			return nil, fmt.Errorf("train: a global batch of %d over %d ranks gives shares of %d samples, fewer than the %d micro-batches of --grad-accum",
				opts.BatchSize, pg.World(), opts.BatchSize/pg.World(), opts.GradAccum)
		}
		t.dp = NewDataParallel(pg, t.allParams())
	}
	isMain := t.main()
	if !isMain {
		opts.Log = nil // rank 0 reports progress
	}
	// Collectives must not be abandoned by some ranks only: a distributed run waits for
	// data without ctx, and the ranks agree on stopping once per step.
	dataCtx := ctx
	if t.dp != nil {
		dataCtx = context.WithoutCancel(ctx)
	}
	stopping := func() (bool, error) {
		stop := ctx.Err() != nil
		if t.dp == nil {
			return stop, nil
		}
		return t.dp.AnyRank(stop)
	}
	out := opts.Out
	rd := RunDir(out)
	ckptDir := rd.Checkpoints()
	last := rd.Last()
	if isMain {
		rf := opts.Folder
		if rf == nil {
			if rf, err = OpenRun(out, opts.Resume); err != nil {
				return nil, err
			}
			defer rf.Close()
		}
		reportSwept(opts, rf)
	} else {
		if !opts.Resume {
			if _, err := os.Stat(last); err == nil {
				return nil, fmt.Errorf("%s already holds a run (%s): continue it with --resume, or choose another --out", out, last)
			}
		} else if _, err := os.Stat(last); err != nil {
			return nil, fmt.Errorf("--resume: %s has no checkpoint to resume from (%s)", out, last)
		}
	}
	if len(job.Train) == 0 && job.TrainShards == nil {
		return nil, errors.New("train: the training split holds no images")
	}
	if isMain {
		if err := os.MkdirAll(ckptDir, 0o755); err != nil {
			return nil, err
		}
	}

	st := checkpointState{seed: opts.Seed, best: math.Inf(1), bestStep: -1}
	from := last
	if opts.Resume && opts.ResumeFrom != "" {
		from = opts.ResumeFrom
	}
	if opts.Resume {
		if st, err = t.loadCheckpoint(from); err != nil {
			return nil, err
		}
		if from != last {
			fmt.Fprintf(logw(opts), "resume: from %s (step %d)\n", from, st.step)
		}
		if isMain {
			gone, err := dropStepCheckpointsAfter(ckptDir, st.step)
			if err != nil {
				return nil, err
			}
			if len(gone) > 0 {
				fmt.Fprintf(logw(opts), "resume: removed the step checkpoints after step %d: %s\n", st.step, strings.Join(gone, ", "))
			}
		}
		if st.seed != opts.Seed {
			fmt.Fprintf(logw(opts), "resume: using the checkpoint's data seed %d (not %d)\n", st.seed, opts.Seed)
		}
	} else {
		if opts.Loss == LossSigLIP {
			if err := torch.Try(func() { torch.NoGrad(func() { m.LogitScale.Fill(SigLIPInitLogitScale) }) }); err != nil {
				return nil, err
			}
		}
		if isMain {
			if err := m.Config.Save(rd.Config()); err != nil {
				return nil, err
			}
		}
	}
	if isMain && (!opts.Resume || opts.Args != nil) {
		// A resume rewrites it once the checkpoint has loaded: the settings it runs with.
		if err := atomicfile.WriteJSON(rd.Args(), opts.Args); err != nil {
			return nil, err
		}
	}

	if t.dp != nil {
		// Every rank starts from rank 0's weights (a fresh init may differ by rank; a
		// resumed run's are equal already, and so is the optimizer state all ranks read).
		if err := t.dp.SyncParameters(); err != nil {
			return nil, err
		}
	}
	var lowBase *lora.LowPrecisionBase // the bf16 base of a LoRA run (nil: none)
	if job.Adapter && opts.Precision == clip.BF16 && !opts.FP32Base {
		if lowBase, err = lora.KeepBaseIn(m, torch.BFloat16); err != nil {
			return nil, err
		}
		defer func() { // a run that stops early: the model is float32 again (no-op after Finish's restore)
			if err := lowBase.Restore(); err != nil {
				fmt.Fprintf(logw(opts), "warning: %v\n", err)
			}
		}()
	}

	size := int(m.Config.Vision.ImageSize)
	ctxLen := int(m.Config.Text.MaxPositionEmbeddings)
	tok := job.Tokenizer
	lopts := dataset.LoaderOptions{
		Size: size, BatchSize: opts.BatchSize, Workers: opts.Workers, Seed: int64(st.seed),
		Shuffle: true, DropLast: true, Augment: opts.Augment, CacheDir: opts.CacheDir, Report: opts.Report,
		Tokenize: func(c string) []int64 { ids, _ := tok.Batch([]string{c}, ctxLen); return ids },
	}
	useFeed := !opts.HostInput && (m.Device().IsCUDA() || feedOnCPU)
	lopts.Uint8 = useFeed // the feed normalises on the device
	if t.dp != nil {
		lopts.Rank, lopts.World = t.dp.Rank(), t.dp.World() // this rank's share of each batch
	}
	var loader dataset.BatchSource
	trainImages := len(job.Train)
	if job.TrainShards != nil {
		if loader, err = dataset.NewStreamLoader(job.TrainShards, lopts); err != nil {
			return nil, err
		}
		trainImages, _ = job.TrainShards.EpochSamples()
	} else {
		loader = dataset.NewLoader(job.Train, lopts)
	}
	if useFeed {
		if t.feed, err = newFeed(loader, m); err != nil {
			loader.Close()
			return nil, err
		}
		loader = t.feed
	}
	defer loader.Close()
	perEpoch := loader.Len()
	if perEpoch == 0 {
		return nil, fmt.Errorf("train: the training split has %d images, fewer than one batch of %d", trainImages, opts.BatchSize)
	}
	if opts.Resume {
		samples := len(job.Train)
		if job.TrainShards != nil {
			samples = math.MaxInt // a stream's position counts the samples read, bad ones included
		}
		if err := st.checkPosition(from, perEpoch, samples); err != nil {
			return nil, err
		}
	}
	epochs := opts.Epochs
	if epochs <= 0 {
		epochs = 1
		if opts.MaxSteps > 0 {
			epochs = (opts.MaxSteps + perEpoch - 1) / perEpoch
		}
	}
	total := epochs * perEpoch
	if opts.MaxSteps > 0 {
		total = min(total, opts.MaxSteps)
	}
	t.sched = Schedule{Kind: opts.Schedule, Base: opts.LR, MinLR: opts.MinLR, Warmup: opts.Warmup, Total: total}
	if err := t.sched.Validate(); err != nil {
		return nil, err
	}
	met, err := openMetrics(out, opts.Resume, st.step, isMain)
	if err != nil {
		return nil, err
	}
	prog := newProgress(opts.Log, epochs, perEpoch, total, st.step, opts.LogEvery)
	defer prog.close()
	totalParams, trainable := nn.Count(m.NamedParameters())
	prog.printf("training %d images (%s of %d per epoch, %s, %s in all), %s, %s of %s parameters trained\n",
		trainImages, Plural(perEpoch, "step"), opts.BatchSize, Plural(prog.epochs, "epoch"), Plural(total, "step"), opts.Precision, fmtCount(trainable), fmtCount(totalParams))
	if l := opts.Lock; l.Any() {
		var parts []string
		if l.Image && l.ImageUnlockedLayers > 0 {
			parts = append(parts, fmt.Sprintf("image tower but its last %s", Plural(l.ImageUnlockedLayers, "layer")))
		} else if l.Image {
			parts = append(parts, "image tower")
		}
		if l.Text {
			parts = append(parts, "text tower")
		}
		prog.printf("locked (frozen, in evaluation mode): %s\n", strings.Join(parts, ", "))
	}
	if opts.Warmup > total {
		prog.printf("warning: --warmup %d is longer than the run's %s: the learning rate never reaches its peak %g\n", opts.Warmup, Plural(total, "step"), opts.LR)
	}
	if t.dp != nil {
		prog.printf("data parallel: %d ranks (%s), %d samples of each batch per rank\n", t.dp.World(), t.dp.PG.Backend(), opts.BatchSize/t.dp.World())
	}
	if opts.Resume {
		prog.printf("resuming at step %d (epoch %d, batch %d)\n", st.step, st.pos.Epoch+1, st.pos.Batch)
	}

	badStreak := 0 // non-finite steps in a row
	res := &Result{BestValLoss: math.NaN()}
	if !math.IsInf(st.best, 1) {
		res.BestValLoss = st.best
	}
	// The validation set is fixed now (a distributed run's ranks must evaluate the same
	// items, so there it is taken as given).
	var vals *valSet
	if len(job.Val) > 0 && t.dp == nil {
		vals = fixValSet(job.Val, opts.Report)
	}
	wroteCheckpoint := opts.Resume
	lastZeroshotStep := met.lastZeroshotStep // a resumed run does not measure the same step twice
	zeroshot := func(step int, epoch float64) error {
		if opts.Zeroshot == nil {
			return nil
		}
		templates := opts.ZeroshotTemplates
		if len(templates) == 0 {
			templates = ImageNetTemplates
		}
		// Not cancellable, as the evaluation; unreadable images are not reported again.
		zs, err := Zeroshot(context.WithoutCancel(ctx), m, tok, opts.Zeroshot, templates, opts.EvalOptions(&dataset.Report{}, nil))
		m.SetTrain(true)
		t.opts.Lock.setModes(m)
		if err != nil {
			return fmt.Errorf("step %d: %w", step, err)
		}
		lastZeroshotStep = step
		res.Zeroshot = &zs
		prog.printf("step %d (epoch %.2f) %s\n", step, epoch, zs)
		return met.add(ZeroshotRow{Time: nowText(), Step: step, Epoch: epoch, Top1: zs.Top1, Top5: zs.Top5})
	}
	evaluate := func(step int, epoch float64) error {
		if opts.ZeroshotEvery == 0 {
			if err := zeroshot(step, epoch); err != nil {
				return err
			}
		}
		if len(job.Val) == 0 {
			return nil
		}
		items, evRep := job.Val, opts.Report
		if vals != nil {
			var err error
			if items, err = vals.current(); err != nil {
				return fmt.Errorf("step %d: %w", step, err)
			}
			evRep = &dataset.Report{} // images unreadable now are not recounted at every evaluation
		}
		// Not cancellable: an interrupt during an evaluation is honoured after it, with
		// the checkpoint written.
		ev, err := Evaluate(context.WithoutCancel(ctx), m, tok, items, opts.EvalOptions(evRep, nil))
		m.SetTrain(true)
		t.opts.Lock.setModes(m)
		if err != nil {
			return err
		}
		if vals != nil {
			if err := vals.check(items, ev.Images, evRep); err != nil {
				return fmt.Errorf("step %d: %w", step, err)
			}
			if evRep.Skipped() > 0 {
				prog.printf("step %d validation: %s\n", step, evRep.Summary())
			}
		}
		res.Val = &ev
		prog.printf("step %d (epoch %.2f) validation: %s\n", step, epoch, ev)
		if err := met.add(EvalRow{Time: nowText(), Step: step, Epoch: epoch, ValLoss: ev.Loss, ImageToText: ev.ImageToText, TextToImage: ev.TextToImage}); err != nil {
			return err
		}
		if math.IsNaN(ev.Loss) || math.IsInf(ev.Loss, 0) {
			// The bad-step policy: stop, keeping the last good checkpoint.
			ck := ""
			if wroteCheckpoint {
				ck = last
			}
			return &BadStepsError{Step: step, Checkpoint: ck, ValLoss: ev.Loss, Validation: true}
		}
		if ev.Loss < st.best {
			st.best, st.bestStep = ev.Loss, step
			res.BestValLoss = ev.Loss
			if isMain {
				return t.saveCheckpoint(rd.Best(), st)
			}
		}
		return nil
	}
	savedStep := -1 // the step last.pt was last written at by this process
	save := func() error {
		if badStreak > 0 || !isMain {
			return nil // keep the last good checkpoint
		}
		if t.scaler != nil {
			st.skipped = max(st.skipped, t.scaler.Skipped)
		}
		if err := t.saveCheckpoint(last, st); err != nil {
			return err
		}
		savedStep = st.step
		return nil
	}
	plot := func() error {
		if !isMain {
			return nil
		}
		return met.plot(rd.Curve(), filepath.Base(filepath.Clean(out)))
	}

	var (
		windowLoss, windowNorm float64
		windowN, windowImgs    int
		windowStart            = time.Now()
		lastEvalStep           = met.lastEvalStep // a resumed run does not evaluate the same step twice
	)
	m.SetTrain(true)
	opts.Lock.setModes(m)
	for st.step < total {
		epoch := st.pos.Epoch
		if err := loader.StartAt(st.pos); err != nil {
			return nil, err
		}
		prog.startEpoch(epoch, perEpoch, st.pos.Batch)
		epochDone := false
		for st.step < total {
			if stop, err := stopping(); err != nil {
				return nil, fmt.Errorf("step %d: %w", st.step+1, err)
			} else if stop {
				prog.finishEpoch()
				return nil, t.interrupt(save, st.step, last)
			}
			b, err := loader.Next(dataCtx)
			if err == io.EOF {
				epochDone = true
				break
			}
			if err != nil {
				if ctx.Err() != nil {
					prog.finishEpoch()
					return nil, t.interrupt(save, st.step, last)
				}
				return nil, err
			}
			lr := t.sched.At(st.step)
			sr, err := t.stepBatch(b, lr) // inputs are made and freed in the step's scope
			images := b.Len()
			if t.dp != nil {
				images = opts.BatchSize // the global batch, for images/s
			}
			st.pos = b.Next
			b.Release()
			if err != nil {
				return nil, fmt.Errorf("step %d: %w", st.step+1, err)
			}
			st.step++
			switch sr.outcome {
			case stepBad:
				badStreak++
				st.skipped++
				prog.printf("step %d: non-finite loss or gradient (loss %v), step skipped (%d in a row)\n", st.step, sr.loss, badStreak)
				if badStreak > opts.MaxBadSteps {
					ck := ""
					if wroteCheckpoint {
						ck = last
					}
					prog.finishEpoch()
					return nil, &BadStepsError{Streak: badStreak, Step: st.step, Checkpoint: ck}
				}
			case stepOverflow:
				st.skipped++
				prog.printf("step %d: fp16 gradient overflow, step skipped; loss scale now %g\n", st.step, t.scaler.Scale)
			default:
				badStreak = 0
			}
			if sr.outcome != stepBad {
				windowLoss += sr.loss
				windowNorm += sr.gradNorm
				windowN++
			}
			windowImgs += images
			elapsed := time.Since(windowStart).Seconds()
			ips := float64(windowImgs) / math.Max(elapsed, 1e-9)
			prog.update(st.step, sr.loss, lr, ips)
			fracEpoch := float64(epoch) + float64(st.pos.Batch)/float64(perEpoch)
			if st.step%opts.LogEvery == 0 || st.step == total {
				row := TrainRow{Time: nowText(), Step: st.step, Epoch: fracEpoch, LR: lr, TrainLoss: math.NaN(), ImagesPerS: ips, Skipped: st.skipped,
					LogitScale: logitScale(m), LogitBias: t.logitBias()}
				if windowN > 0 {
					row.TrainLoss = windowLoss / float64(windowN)
					row.GradNorm = windowNorm / float64(windowN)
				}
				if t.scaler != nil {
					row.LossScale = t.scaler.Scale
				}
				if windowN > 0 {
					if err := met.add(row); err != nil {
						return nil, err
					}
				}
				windowLoss, windowNorm, windowN, windowImgs, windowStart = 0, 0, 0, 0, time.Now()
			}
			if opts.AfterStep != nil {
				opts.AfterStep(st.step, sr.loss)
			}
			if opts.ZeroshotEvery > 0 && st.step%opts.ZeroshotEvery == 0 {
				if err := zeroshot(st.step, fracEpoch); err != nil {
					return nil, err
				}
			}
			if opts.EvalEvery > 0 && st.step%opts.EvalEvery == 0 {
				if err := evaluate(st.step, fracEpoch); err != nil {
					return nil, err
				}
				lastEvalStep = st.step
				if err := save(); err != nil {
					return nil, err
				}
				wroteCheckpoint = true
				if err := plot(); err != nil {
					return nil, err
				}
			} else if opts.SaveEvery > 0 && st.step%opts.SaveEvery == 0 {
				if err := save(); err != nil {
					return nil, err
				}
				wroteCheckpoint = true
			}
			if opts.SaveEvery > 0 && st.step%opts.SaveEvery == 0 && savedStep == st.step {
				if err := keepStepCheckpoint(ckptDir, last, st.step, opts.Keep); err != nil {
					return nil, err
				}
			}
		}
		prog.finishEpoch()
		if epochDone {
			st.pos = dataset.Position{Epoch: epoch + 1}
		}
		if opts.EvalEvery == 0 && epochDone && lastEvalStep != st.step {
			if err := evaluate(st.step, float64(epoch+1)); err != nil {
				return nil, err
			}
			lastEvalStep = st.step
		}
		if err := save(); err != nil {
			return nil, err
		}
		wroteCheckpoint = true
		if err := plot(); err != nil {
			return nil, err
		}
	}
	if lastEvalStep != st.step && len(job.Val) > 0 {
		// The run stopped between evaluations (--max-steps), or was resumed finished.
		if err := evaluate(st.step, float64(st.pos.Epoch)+float64(st.pos.Batch)/float64(perEpoch)); err != nil {
			return nil, err
		}
		if err := save(); err != nil {
			return nil, err
		}
	}
	if lastZeroshotStep != st.step {
		if err := zeroshot(st.step, float64(st.pos.Epoch)+float64(st.pos.Batch)/float64(perEpoch)); err != nil {
			return nil, err
		}
	}
	if err := plot(); err != nil {
		return nil, err
	}

	if len(job.Test) > 0 {
		// The run's bar (left open by a run cut short) ends before the pass's; the main
		// process reports the pass.
		prog.close()
		var w io.Writer
		if isMain {
			w = opts.Log
		}
		task := NewTask(w, "test evaluation", "item")
		ev, err := Evaluate(dataCtx, m, tok, job.Test, opts.EvalOptions(opts.Report, task.Update))
		task.Done()
		if err != nil {
			return nil, fmt.Errorf("test evaluation: %w", err)
		}
		res.Test = &ev
		prog.printf("test: %s\n", ev)
		if isMain {
			if err := atomicfile.WriteJSON(rd.Eval(), ev); err != nil {
				return nil, err
			}
		}
	}
	finish := job.Finish
	if finish == nil {
		finish = func(run string) error { return SaveModel(run, m, job.TokenizerDir) }
	}
	if err := lowBase.Restore(); err != nil { // the merge and the export are float32
		return nil, err
	}
	if isMain {
		if err := finish(out); err != nil {
			return nil, err
		}
	}
	res.Steps, res.Skipped = st.step, st.skipped
	res.TrainLosses = met.trainLosses
	res.Duration = time.Since(began)
	return res, nil
}

// interrupt writes the checkpoint of an interrupted run.
func (t *trainer) interrupt(save func() error, step int, path string) error {
	if err := save(); err != nil {
		return fmt.Errorf("interrupted after step %d, and the checkpoint could not be written: %w", step, err)
	}
	return &InterruptedError{Step: step, Checkpoint: path}
}

// SaveModel writes a run's final model: RUN/model/ (an HF folder with the tokenizer of
// tokenizerDir) and RUN/model.pt (the state dict, HF keys).
func SaveModel(run string, m *clip.Model, tokenizerDir string) error {
	if err := clip.SaveHF(RunDir(run).Model(), m, m.Config, tokenizerDir); err != nil {
		return err
	}
	return clip.SavePT(RunDir(run).ModelPT(), m)
}

func logw(o Options) io.Writer {
	if o.Log == nil {
		return io.Discard
	}
	return o.Log
}

// fmtCount writes n with thousands separators.
func fmtCount(n int64) string {
	s := fmt.Sprint(n)
	var out []byte
	for i := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			out = append(out, ',')
		}
		out = append(out, s[i])
	}
	return string(out)
}
