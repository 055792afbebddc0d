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
		t.dp = NewDataParallel(pg, t.allParams())
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
		t.images, Plural(t.perEpoch, "step"), opts.BatchSize, Plural(p.epochs, "epoch"), Plural(t.total, "step"), opts.Precision, fmtCount(trainable), fmtCount(totalParams))
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

// train runs epochs until the run's steps are taken, then the end-of-run evaluation.
func (t *trainer) train() error {
	t.trainMode()
	t.windowStart = time.Now()
	for t.st.step < t.total {
		epoch := t.st.pos.Epoch
		done, err := t.trainEpoch()
		if err != nil {
			return err
		}
		if done {
			t.st.pos = dataset.Position{Epoch: epoch + 1}
			err = t.checkpoint(endOfEpoch, float64(epoch+1))
		} else {
			err = t.checkpoint(stepsTaken, 0)
		}
		if err != nil {
			return err
		}
	}
	return t.checkpoint(endOfRun, t.epochAt())
}

// trainEpoch takes the steps of the current epoch from the data position on, until the
// epoch's data ends (done) or the run's steps are taken. An interrupt writes the
// checkpoint and returns an *InterruptedError.
func (t *trainer) trainEpoch() (done bool, err error) {
	epoch := t.st.pos.Epoch
	if err := t.loader.StartAt(t.st.pos); err != nil {
		return false, err
	}
	t.prog.startEpoch(epoch, t.perEpoch, t.st.pos.Batch)
	defer t.prog.finishEpoch()
	for t.st.step < t.total {
		if stop, err := t.stopping(); err != nil {
			return false, fmt.Errorf("step %d: %w", t.st.step+1, err)
		} else if stop {
			return false, t.interrupt()
		}
		b, err := t.loader.Next(t.dataCtx)
		if err == io.EOF {
			return true, nil
		}
		if err != nil {
			if t.ctx.Err() != nil {
				return false, t.interrupt()
			}
			return false, err
		}
		lr := t.sched.At(t.st.step)
		sr, err := t.stepBatch(b, lr) // inputs are made and freed in the step's scope
		images := b.Len()
		if t.dp != nil {
			images = t.opts.BatchSize // the global batch, for images/s
		}
		t.st.pos = b.Next
		b.Release()
		if err != nil {
			return false, fmt.Errorf("step %d: %w", t.st.step+1, err)
		}
		t.st.step++
		if err := t.count(sr); err != nil {
			return false, err
		}
		if err := t.notifyStep(sr, lr, images); err != nil {
			return false, err
		}
		if t.opts.AfterStep != nil {
			t.opts.AfterStep(t.st.step, sr.loss)
		}
		if err := t.checkpoint(afterStep, t.epochAt()); err != nil {
			return false, err
		}
	}
	return false, nil
}

// stopping reports whether the run is to stop now (the context is cancelled; in a
// distributed run, on any rank).
func (t *trainer) stopping() (bool, error) {
	stop := t.ctx.Err() != nil
	if t.dp == nil {
		return stop, nil
	}
	return t.dp.AnyRank(stop)
}

// count applies the bad-step policy to a step's outcome: skipped steps are counted, and
// more than MaxBadSteps non-finite ones in a row stop the run.
func (t *trainer) count(sr stepResult) error {
	switch sr.outcome {
	case stepBad:
		t.badStreak++
		t.st.skipped++
		t.prog.printf("step %d: non-finite loss or gradient (loss %v), step skipped (%d in a row)\n", t.st.step, sr.loss, t.badStreak)
		if t.badStreak > t.opts.MaxBadSteps {
			return &BadStepsError{Streak: t.badStreak, Step: t.st.step, Checkpoint: t.lastGood()}
		}
	case stepOverflow:
		t.st.skipped++
		t.prog.printf("step %d: fp16 gradient overflow, step skipped; loss scale now %g\n", t.st.step, t.scaler.Scale)
	default:
		t.badStreak = 0
	}
	return nil
}

// lastGood is the checkpoint a stopped run leaves ("" when none was written).
func (t *trainer) lastGood() string {
	if t.wroteCheckpoint {
		return t.rd.Last()
	}
	return ""
}

// epochAt is the fractional epoch of the data position.
func (t *trainer) epochAt() float64 {
	return float64(t.st.pos.Epoch) + float64(t.st.pos.Batch)/float64(t.perEpoch)
}

// notifyStep tells the observers of the step just taken; a logging window (LogEvery
// steps, or the run's last) ends with it when it is due.
func (t *trainer) notifyStep(sr stepResult, lr float64, images int) error {
	t.windowImages += images
	elapsed := time.Since(t.windowStart).Seconds()
	e := stepEvent{step: t.st.step, epoch: t.epochAt(), lr: lr, res: sr, skipped: t.st.skipped,
		imagesPerS: float64(t.windowImages) / math.Max(elapsed, 1e-9),
		logRow:     t.st.step%t.opts.LogEvery == 0 || t.st.step == t.total}
	for _, o := range t.observers {
		if err := o.stepDone(e); err != nil {
			return err
		}
	}
	if e.logRow {
		t.windowImages, t.windowStart = 0, time.Now()
	}
	return nil
}

// moment is when the loop applies its evaluate/save policy.
type moment int

const (
	afterStep  moment = iota // after each step
	endOfEpoch               // the epoch's data ended
	stepsTaken               // the run's steps were taken part-way through an epoch
	endOfRun                 // after the last epoch
)

// checkpoint is the run's evaluate/save policy, in one place: at the moment at (epoch,
// the fractional epoch, labels the rows), what is measured and written, in this order:
// zero-shot accuracy on its own schedule (ZeroshotEvery), the validation evaluation
// (evaluate; with ZeroshotEvery 0 it measures zero-shot accuracy too), last.pt, the
// final zero-shot measurement, the learning curve and the kept step checkpoint.
//
//   - after a step: zero-shot every ZeroshotEvery steps; evaluate, save and plot every
//     EvalEvery steps; save every SaveEvery steps (keeping it as step-N.pt);
//   - at the end of an epoch: evaluate (EvalEvery 0, once per step), save and plot;
//   - when the steps run out mid-epoch: save and plot;
//   - at the end of the run: evaluate and save unless the last step was evaluated,
//     zero-shot unless measured at the last step, plot.
func (t *trainer) checkpoint(at moment, epoch float64) error {
	o, step := t.opts, t.st.step
	var zeroshot, eval, save, final, plot, keep bool
	switch at {
	case afterStep:
		zeroshot = o.ZeroshotEvery > 0 && step%o.ZeroshotEvery == 0
		eval = o.EvalEvery > 0 && step%o.EvalEvery == 0
		keep = o.SaveEvery > 0 && step%o.SaveEvery == 0
		save, plot = eval || keep, eval
	case endOfEpoch:
		eval = o.EvalEvery == 0 && t.lastEvalStep != step
		save, plot = true, true
	case stepsTaken:
		save, plot = true, true
	case endOfRun:
		eval = t.lastEvalStep != step && len(t.job.Val) > 0
		save, final, plot = eval, t.lastZeroshotStep != step, true
	}
	if zeroshot {
		if err := t.zeroshot(step, epoch); err != nil {
			return err
		}
	}
	if eval {
		if err := t.evaluate(step, epoch); err != nil {
			return err
		}
		t.lastEvalStep = step
	}
	if save {
		if err := t.save(); err != nil {
			return err
		}
		t.wroteCheckpoint = true
	}
	if final {
		if err := t.zeroshot(step, epoch); err != nil {
			return err
		}
	}
	if plot && t.main() {
		if err := t.met.plot(t.rd.Curve(), filepath.Base(filepath.Clean(t.opts.Out))); err != nil {
			return err
		}
	}
	if keep && t.savedStep == step {
		return keepStepCheckpoint(t.rd.Checkpoints(), t.rd.Last(), step, o.Keep)
	}
	return nil
}

// save writes last.pt on the main rank, unless the current steps are non-finite (the
// last good checkpoint is kept).
func (t *trainer) save() error {
	if t.badStreak > 0 || !t.main() {
		return nil
	}
	if t.scaler != nil {
		t.st.skipped = max(t.st.skipped, t.scaler.Skipped)
	}
	if err := t.saveCheckpoint(t.rd.Last(), t.st); err != nil {
		return err
	}
	t.savedStep = t.st.step
	return nil
}

// interrupt writes the checkpoint of an interrupted run.
func (t *trainer) interrupt() error {
	if err := t.save(); err != nil {
		return fmt.Errorf("interrupted after step %d, and the checkpoint could not be written: %w", t.st.step, err)
	}
	return &InterruptedError{Step: t.st.step, Checkpoint: t.rd.Last()}
}

// trainMode puts the model back in training mode, its locked towers in evaluation mode.
func (t *trainer) trainMode() {
	t.model.SetTrain(true)
	t.opts.Lock.setModes(t.model)
}

// zeroshot measures the zero-shot accuracy of Options.Zeroshot (nothing without it).
func (t *trainer) zeroshot(step int, epoch float64) error {
	if t.opts.Zeroshot == nil {
		return nil
	}
	templates := t.opts.ZeroshotTemplates
	if len(templates) == 0 {
		templates = ImageNetTemplates
	}
	// Not cancellable, as the evaluation; unreadable images are not reported again.
	zs, err := Zeroshot(context.WithoutCancel(t.ctx), t.model, t.job.Tokenizer, t.opts.Zeroshot, templates, t.opts.EvalOptions(&dataset.Report{}, nil))
	t.trainMode()
	if err != nil {
		return fmt.Errorf("step %d: %w", step, err)
	}
	t.lastZeroshotStep = step
	t.res.Zeroshot = &zs
	for _, o := range t.observers {
		if err := o.zeroshotDone(step, epoch, zs); err != nil {
			return err
		}
	}
	return nil
}

// evaluate is one validation evaluation (zero-shot accuracy first, with ZeroshotEvery
// 0): its rows, the stop on a non-finite loss, best.pt on a new best.
func (t *trainer) evaluate(step int, epoch float64) error {
	if t.opts.ZeroshotEvery == 0 {
		if err := t.zeroshot(step, epoch); err != nil {
			return err
		}
	}
	if len(t.job.Val) == 0 {
		return nil
	}
	items, rep := t.job.Val, t.opts.Report
	if t.vals != nil {
		var err error
		if items, err = t.vals.current(); err != nil {
			return fmt.Errorf("step %d: %w", step, err)
		}
		rep = &dataset.Report{} // images unreadable now are not recounted at every evaluation
	}
	// Not cancellable: an interrupt during an evaluation is honoured after it, with the
	// checkpoint written.
	ev, err := Evaluate(context.WithoutCancel(t.ctx), t.model, t.job.Tokenizer, items, t.opts.EvalOptions(rep, nil))
	t.trainMode()
	if err != nil {
		return err
	}
	if t.vals != nil {
		if err := t.vals.check(items, ev.Images, rep); err != nil {
			return fmt.Errorf("step %d: %w", step, err)
		}
		if rep.Skipped() > 0 {
			t.prog.printf("step %d validation: %s\n", step, rep.Summary())
		}
	}
	t.res.Val = &ev
	for _, o := range t.observers {
		if err := o.evaluated(step, epoch, ev); err != nil {
			return err
		}
	}
	if math.IsNaN(ev.Loss) || math.IsInf(ev.Loss, 0) {
		// The bad-step policy: stop, keeping the last good checkpoint.
		return &BadStepsError{Step: step, Checkpoint: t.lastGood(), ValLoss: ev.Loss, Validation: true}
	}
	if ev.Loss < t.st.best {
		t.st.best, t.st.bestStep = ev.Loss, step
		t.res.BestValLoss = ev.Loss
		if t.main() {
			return t.saveCheckpoint(t.rd.Best(), t.st)
		}
	}
	return nil
}

// finish evaluates the test split into eval.json and exports the model (the main rank
// writes both; see Job.LoRA and Options.SkipExport).
func (t *trainer) finish() error {
	if len(t.job.Test) > 0 {
		// The run's bar (left open by a run cut short) ends before the pass's; the main
		// process reports the pass.
		t.prog.close()
		task := NewTask(t.opts.Log, "test evaluation", "item")
		ev, err := Evaluate(t.dataCtx, t.model, t.job.Tokenizer, t.job.Test, t.opts.EvalOptions(t.opts.Report, task.Update))
		task.Done()
		if err != nil {
			return fmt.Errorf("test evaluation: %w", err)
		}
		t.res.Test = &ev
		t.prog.printf("test: %s\n", ev)
		if t.main() {
			if err := atomicfile.WriteJSON(t.rd.Eval(), ev); err != nil {
				return err
			}
		}
	}
	if err := t.lowBase.Restore(); err != nil { // the merge and the export are float32
		return err
	}
	if !t.main() || t.opts.SkipExport {
		return nil
	}
	return t.job.export(t.opts.Out)
}

// stepEvent is one optimizer step as the observers hear of it.
type stepEvent struct {
	step       int     // steps taken over the run, this one included
	epoch      float64 // the fractional epoch after it
	lr         float64 // its learning rate
	res        stepResult
	skipped    int     // steps skipped over the run so far
	imagesPerS float64 // the throughput since the logging window began
	logRow     bool    // the step ends a logging window (LogEvery steps, or the run's last)
}

// observer follows a run's events: the progress report (progress) and the metrics
// (metricsLog: metrics.jsonl, RUN/tb/ and the learning curve's data).
type observer interface {
	stepDone(e stepEvent) error
	evaluated(step int, epoch float64, ev EvalResult) error
	zeroshotDone(step int, epoch float64, zs ZeroshotResult) error
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
