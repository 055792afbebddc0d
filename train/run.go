package train

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"runtime"
	"strings"
	"time"

	"goclip/clip"
	"goclip/clip/tokenizer"
	"goclip/dataset"
	"goclip/internal/atomicfile"
	"goclip/internal/numfmt"
	"goclip/lora"
	"goclip/nn"
	"goclip/torch"
)

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

	// LoRA, when set, makes the run a LoRA fine-tune of the adapter injected into
	// Model (see LoRA); nil trains every parameter of the model and exports model/
	// (an HF folder, clip.SaveHF) and model.pt (clip.SavePT).
	LoRA *LoRA

	params     []nn.Named             // NewStepper's parameters to train (nil: see trainable)
	exportHook func(run string) error // tests: runs instead of the export
}

// trainable are the parameters the job trains (they must require grad): the adapter's
// of a LoRA run, else every parameter of the model. Their names key the checkpoint's
// tensors.
func (j *Job) trainable() []nn.Named {
	switch {
	case j.LoRA != nil:
		return j.LoRA.Adapter.Trainable()
	case j.params != nil:
		return j.params
	}
	return j.Model.NamedParameters()
}

// key is the checkpoint's entry of the trained tensors.
func (j *Job) key() string {
	if j.LoRA != nil {
		return "adapter"
	}
	return "model"
}

// export writes the final model files into the run folder run.
func (j *Job) export(run string) error {
	if j.exportHook != nil {
		return j.exportHook(run)
	}
	if j.LoRA != nil {
		return j.LoRA.export(run, j.TokenizerDir)
	}
	return SaveModel(run, j.Model, j.TokenizerDir)
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

// trainer is the state of one run: the optimizer over the trained parameters (what
// newTrainer builds, all a Stepper needs) and, for Run, the loop's state, which prepare
// sets up and trainEpoch, evaluate and checkpoint advance.
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

	// The loop's state (Run).
	ctx       context.Context // cancelled: stop after the current step
	dataCtx   context.Context // what the loader waits under (not cancellable in a distributed run)
	rd        RunDir
	from      string          // the checkpoint a resume loaded
	st        checkpointState // what the checkpoint holds beyond tensors
	loader    dataset.BatchSource
	lowBase   *lora.LowPrecisionBase // the bf16 base of a LoRA run (nil: none)
	perEpoch  int                    // steps (batches) per epoch
	total     int                    // steps of the run
	images    int                    // training images (one epoch's samples)
	vals      *valSet
	met       *metrics
	prog      *progress
	observers []observer // progress, then metrics (in the order they hear of events)
	res       *Result

	badStreak        int  // non-finite steps in a row
	wroteCheckpoint  bool // last.pt was written (or resumed from)
	savedStep        int  // the step last.pt was last written at by this process (-1: none)
	lastEvalStep     int  // a resumed run does not evaluate the same step twice
	lastZeroshotStep int  // nor measure zero-shot accuracy twice
	windowImages     int  // images since the last logging window began
	windowStart      time.Time
	pending          []pendingStep // steps whose results are still on the device (see sync)
	readLogitScale   float64       // exp(logit_scale) and SigLIP's bias, as the last sync read them
	readLogitBias    *float64
}

// main reports whether this process writes the run folder (rank 0, or the only one).
func (t *trainer) main() bool { return t.dp == nil || t.dp.IsMain() }

// newTrainer builds the optimizer over job's trainable parameters.
func newTrainer(job Job, opts Options) (*trainer, error) {
	opts.defaults()
	t := &trainer{job: job, opts: opts, model: job.Model}
	params := job.trainable()
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
	decay, noDecay, gerr := ParamGroups(params)
	if gerr != nil {
		t.free()
		return nil, gerr
	}
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
	for _, p := range t.pending {
		p.stats.Free()
	}
	t.pending = nil
	t.scaler.free()
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
func Run(ctx context.Context, job Job, opts Options) (res *Result, err error) {
	runtime.LockOSThread() // grad mode and autocast are per OS thread
	defer runtime.UnlockOSThread()
	root := torch.NewScope() // the run's root scope: nothing the run makes outlives it unowned
	defer root.Close()
	defer recoverTorch(&err) // a tensor panic outside a step's own recovery is the error
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
	release, err := t.prepare(ctx)
	defer release()
	if err != nil {
		return nil, err
	}
	if err := t.train(); err != nil {
		return nil, err
	}
	if err := t.finish(); err != nil {
		return nil, err
	}
	t.res.Steps, t.res.Skipped = t.st.step, t.st.skipped
	t.res.TrainLosses = t.met.trainLosses
	t.res.Duration = time.Since(began)
	return t.res, nil
}

// recoverTorch turns a *torch.Error panic into *err; other panics go on.
func recoverTorch(err *error) {
	if r := recover(); r != nil {
		te, ok := r.(*torch.Error)
		if !ok {
			panic(r)
		}
		*err = te
	}
}

// prepare readies the run: the process group's checks, the run folder (taken, or on
// ranks other than 0 checked), the checkpoint resumed from, config.json and args.json,
// the ranks' shared starting weights, the loader, the schedule, metrics.jsonl and the
// progress report. release undoes what it took (the loader, the folder's lock, the
// progress bar) and is to be called whatever the error.
func (t *trainer) prepare(ctx context.Context) (release func(), err error) {
	var undo []func()
	release = func() {
		for i := len(undo) - 1; i >= 0; i-- {
			undo[i]()
		}
	}
	opts := &t.opts
	t.ctx, t.dataCtx, t.rd = ctx, ctx, RunDir(opts.Out)
	if pg := opts.ProcessGroup; pg != nil {
		if opts.BatchSize/pg.World() < opts.GradAccum {
			return release, fmt.Errorf("train: a global batch of %d over %d ranks gives shares of %d samples, fewer than the %d micro-batches of --grad-accum",
				opts.BatchSize, pg.World(), opts.BatchSize/pg.World(), opts.GradAccum)
		}
		if t.dp, err = NewDataParallel(pg, t.allParams()); err != nil {
			return release, err
		}
		// Collectives must not be abandoned by some ranks only: a distributed run waits
		// for data without ctx, and the ranks agree on stopping once per step.
		t.dataCtx = context.WithoutCancel(ctx)
	}
	if !t.main() {
		opts.Log = nil // rank 0 reports progress
	}
	if t.main() {
		rf := opts.Folder
		if rf == nil {
			if rf, err = OpenRun(opts.Out, opts.Resume); err != nil {
				return release, err
			}
			undo = append(undo, func() { rf.Close() })
		}
		reportSwept(*opts, rf)
	} else if err := CheckRunFolder(opts.Out, opts.Resume); err != nil {
		return release, err
	}
	if len(t.job.Train) == 0 && t.job.TrainShards == nil {
		return release, errors.New("train: the training split holds no images")
	}
	if t.main() {
		if err := os.MkdirAll(t.rd.Checkpoints(), 0o755); err != nil {
			return release, err
		}
	}
	if err := t.resume(); err != nil {
		return release, err
	}
	if t.main() && (!opts.Resume || opts.Args != nil) {
		// A resume rewrites it once the checkpoint has loaded: the settings it runs with.
		if err := atomicfile.WriteJSON(t.rd.Args(), opts.Args); err != nil {
			return release, err
		}
	}
	if t.dp != nil {
		// Every rank starts from rank 0's weights (a fresh init may differ by rank; a
		// resumed run's are equal already, and so is the optimizer state all ranks read).
		if err := t.dp.SyncParameters(); err != nil {
			return release, err
		}
	}
	if t.job.LoRA != nil && opts.Precision == clip.BF16 && !opts.FP32Base {
		if t.lowBase, err = lora.KeepBaseIn(t.model, torch.BFloat16); err != nil {
			return release, err
		}
		undo = append(undo, func() { // a run that stops early: the model is float32 again (no-op after finish's restore)
			if err := t.lowBase.Restore(); err != nil {
				fmt.Fprintf(logw(t.opts), "warning: %v\n", err)
			}
		})
	}
	if err := t.openLoader(); err != nil {
		return release, err
	}
	undo = append(undo, func() { t.loader.Close() })
	epochs := opts.Epochs
	if epochs <= 0 {
		epochs = 1
		if opts.MaxSteps > 0 {
			epochs = (opts.MaxSteps + t.perEpoch - 1) / t.perEpoch
		}
	}
	t.total = epochs * t.perEpoch
	if opts.MaxSteps > 0 {
		t.total = min(t.total, opts.MaxSteps)
	}
	t.sched = Schedule{Kind: opts.Schedule, Base: opts.LR, MinLR: opts.MinLR, Warmup: opts.Warmup, Total: t.total}
	if err := t.sched.Validate(); err != nil {
		return release, err
	}
	if t.met, err = openMetrics(opts.Out, opts.Resume, t.st.step, t.main()); err != nil {
		return release, err
	}
	t.prog = newProgress(opts.Log, epochs, t.perEpoch, t.total, t.st.step, opts.LogEvery)
	undo = append(undo, t.prog.close)
	t.observers = []observer{t.prog, &metricsLog{metrics: t.met, t: t}}
	t.banner()

	t.res = &Result{BestValLoss: math.NaN()}
	if !math.IsInf(t.st.best, 1) {
		t.res.BestValLoss = t.st.best
	}
	// The validation set is fixed now (a distributed run's ranks must evaluate the same
	// items, so there it is taken as given).
	if len(t.job.Val) > 0 && t.dp == nil {
		t.vals = fixValSet(t.job.Val, opts.Report)
	}
	t.wroteCheckpoint = opts.Resume
	t.savedStep = -1
	t.lastEvalStep, t.lastZeroshotStep = t.met.lastEvalStep, t.met.lastZeroshotStep
	return release, nil
}

// resume loads the checkpoint of a resumed run (dropping the step checkpoints after
// it); a new run starts SigLIP's logit scale and writes config.json.
func (t *trainer) resume() error {
	opts, m := t.opts, t.model
	t.st = checkpointState{seed: opts.Seed, best: math.Inf(1), bestStep: -1}
	if !opts.Resume {
		if opts.Loss == LossSigLIP {
			if err := torch.Try(func() { torch.NoGrad(func() { m.LogitScale.Fill(SigLIPInitLogitScale) }) }); err != nil {
				return err
			}
		}
		if t.main() {
			return m.Config.Save(t.rd.Config())
		}
		return nil
	}
	t.from = t.rd.Last()
	if opts.ResumeFrom != "" {
		t.from = opts.ResumeFrom
	}
	var err error
	if t.st, err = t.loadCheckpoint(t.from); err != nil {
		return err
	}
	log := logw(opts)
	if t.from != t.rd.Last() {
		fmt.Fprintf(log, "resume: from %s (step %d)\n", t.from, t.st.step)
	}
	if t.main() {
		gone, err := dropStepCheckpointsAfter(t.rd.Checkpoints(), t.st.step)
		if err != nil {
			return err
		}
		if len(gone) > 0 {
			fmt.Fprintf(log, "resume: removed the step checkpoints after step %d: %s\n", t.st.step, strings.Join(gone, ", "))
		}
	}
	if t.st.seed != opts.Seed {
		fmt.Fprintf(log, "resume: using the checkpoint's data seed %d (not %d)\n", t.st.seed, opts.Seed)
	}
	return nil
}

// openLoader wires the training loader: this rank's share of each global batch, from
// the checkpoint's data seed, and checks a resumed position against it.
func (t *trainer) openLoader() error {
	opts, job := t.opts, t.job
	ctxLen := int(t.model.Config.Text.MaxPositionEmbeddings)
	tok := job.Tokenizer
	lopts := dataset.LoaderOptions{
		Size: int(t.model.Config.Vision.ImageSize), BatchSize: opts.BatchSize, Workers: opts.Workers, Seed: int64(t.st.seed),
		Shuffle: true, DropLast: true, Augment: opts.Augment, CacheDir: opts.CacheDir, Report: opts.Report,
		Tokenize: func(c string) []int64 { ids, _ := tok.Batch([]string{c}, ctxLen); return ids },
	}
	useFeed := !opts.HostInput && (t.model.Device().IsCUDA() || feedOnCPU)
	lopts.Uint8 = useFeed // the feed normalises on the device
	if t.dp != nil {
		lopts.Rank, lopts.World = t.dp.Rank(), t.dp.World() // this rank's share of each batch
	}
	t.images = len(job.Train)
	if job.TrainShards != nil {
		var err error
		if t.loader, err = dataset.NewStreamLoader(job.TrainShards, lopts); err != nil {
			return err
		}
		t.images, _ = job.TrainShards.EpochSamples()
	} else {
		t.loader = dataset.NewLoader(job.Train, lopts)
	}
	if useFeed {
		var err error
		if t.feed, err = newFeed(t.loader, t.model); err != nil {
			t.loader.Close()
			return err
		}
		t.loader = t.feed
	}
	if t.perEpoch = t.loader.Len(); t.perEpoch == 0 {
		return fmt.Errorf("train: the training split has %d images, fewer than one batch of %d", t.images, opts.BatchSize)
	}
	if !opts.Resume {
		return nil
	}
	samples := len(job.Train)
	if job.TrainShards != nil {
		samples = math.MaxInt // a stream's position counts the samples read, bad ones included
	}
	return t.st.checkPosition(t.from, t.perEpoch, samples)
}

// banner reports what the run trains, before its first step.
func (t *trainer) banner() {
	opts, p := t.opts, t.prog
	totalParams, trainable := nn.Count(t.model.NamedParameters())
	p.printf("training %d images (%s of %d per epoch, %s, %s in all), %s, %s of %s parameters trained\n",
		t.images, Plural(t.perEpoch, "step"), opts.BatchSize, Plural(p.epochs, "epoch"), Plural(t.total, "step"), opts.Precision, numfmt.Thousands(trainable), numfmt.Thousands(totalParams))
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
		p.printf("locked (frozen, in evaluation mode): %s\n", strings.Join(parts, ", "))
	}
	if opts.Warmup > t.total {
		p.printf("warning: --warmup %d is longer than the run's %s: the learning rate never reaches its peak %g\n", opts.Warmup, Plural(t.total, "step"), opts.LR)
	}
	if t.dp != nil {
		p.printf("data parallel: %d ranks (%s), %d samples of each batch per rank\n", t.dp.World(), t.dp.PG.Backend(), opts.BatchSize/t.dp.World())
	}
	if opts.Resume {
		p.printf("resuming at step %d (epoch %d, batch %d)\n", t.st.step, t.st.pos.Epoch+1, t.st.pos.Batch)
	}
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
