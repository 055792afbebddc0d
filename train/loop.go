package train

// The training loop: trainEpoch takes steps, the bad-step policy counts them, the
// observers (progress, metrics) hear of each step and evaluation, and checkpoint is the
// one evaluate/save policy, applied after each step, at the end of each epoch and at
// the end of the run.

import (
	"context"
	"fmt"
	"io"
	"math"
	"path/filepath"
	"time"

	"goclip/dataset"
	"goclip/internal/atomicfile"
	"goclip/torch"
)

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
		stats, err := t.stepBatch(b, lr) // inputs are made and freed in the step's scope
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
		t.pending = append(t.pending, pendingStep{stats: stats, step: t.st.step, epoch: t.epochAt(), lr: lr, images: images})
		if t.syncDue() {
			if err := t.sync(); err != nil {
				return false, err
			}
		}
		if stepHook != nil {
			stepHook(t.st.step)
		}
		if err := t.checkpoint(afterStep, t.epochAt()); err != nil {
			return false, err
		}
	}
	return false, nil
}

// stepHook, when set, runs after each step of Run, once what is due at that step has
// been read (see trainer.sync), without reading anything itself. Tests set it to count
// host reads and to poison a step without the per-step read that AfterStep forces. nil
// outside tests.
var stepHook func(step int)

// pendingStep is a step taken whose results are still on the device.
type pendingStep struct {
	stats  *torch.Tensor // [nStats] float64 (stepInScope's)
	step   int           // steps taken over the run, this one included
	epoch  float64       // the fractional epoch after it
	lr     float64
	images int // the images it took (the global batch in a distributed run)
}

// syncDue reports whether the step just taken ends a read window: it ends a logging
// window (LogEvery steps, or the run's last), the evaluate/save policy acts after it,
// Options.SyncEveryStep asks for a read after each step, or Options.AfterStep wants the
// step's loss. Reads at the end of an epoch, of the run and on an interrupt come from
// checkpoint and interrupt.
func (t *trainer) syncDue() bool {
	o, step := t.opts, t.st.step
	return o.SyncEveryStep || o.AfterStep != nil || step%o.LogEvery == 0 || step == t.total ||
		(o.ZeroshotEvery > 0 && step%o.ZeroshotEvery == 0) || (o.EvalEvery > 0 && step%o.EvalEvery == 0) ||
		(o.SaveEvery > 0 && step%o.SaveEvery == 0)
}

// sync reads the results of the pending steps from the device, all of them (and the
// loss scaler's state, and the logit scale and bias that a logging row reports) in one
// host read, then applies to each step in turn what the loop applied after it when it
// read every step: the bad-step policy (count), the observers (notifyStep) and
// Options.AfterStep. A run of bad steps that exceeds MaxBadSteps is therefore reported
// at the next read, with the step where the limit was passed; the steps after it were
// taken (each applied or skipped its update by its own outcome) and are not reported.
func (t *trainer) sync() error {
	if len(t.pending) == 0 {
		return nil
	}
	pending := t.pending
	t.pending = nil
	defer func() {
		for _, p := range pending {
			p.stats.Free()
		}
	}()
	var v []float64
	what := "the steps' results" // what a failure names
	if err := torch.Try(func() {
		torch.WithScope(func() {
			parts := make([]*torch.Tensor, 0, len(pending)+5)
			for _, p := range pending {
				parts = append(parts, p.stats)
			}
			what = "logit_scale"
			parts = append(parts, t.model.LogitScale.Detach().To(torch.Float64).Reshape(1))
			if t.bias != nil {
				what = LogitBiasKey
				parts = append(parts, t.bias.Detach().To(torch.Float64).Reshape(1))
			}
			if t.scaler != nil {
				what = "the loss scale"
				parts = append(parts, t.scaler.device(t.model.Device()).values()...)
			}
			what = "the steps' results"
			v = torch.Cat(parts, 0).Float64s() // the one host read
		})
	}); err != nil {
		return fmt.Errorf("train: step %d: reading %s: %w", pending[len(pending)-1].step, what, err)
	}
	rest := v[len(pending)*nStats:]
	t.readLogitScale, rest = math.Exp(rest[0]), rest[1:]
	if t.bias != nil {
		b := rest[0]
		t.readLogitBias, rest = &b, rest[1:]
	}
	if t.scaler != nil {
		t.scaler.set(rest)
	}
	for i, p := range pending {
		sr := readStats(v[i*nStats : (i+1)*nStats])
		if err := t.count(p.step, sr); err != nil {
			return err
		}
		if err := t.notifyStep(p, sr); err != nil {
			return err
		}
		if t.opts.AfterStep != nil {
			t.opts.AfterStep(p.step, sr.loss)
		}
	}
	return nil
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

// count applies the bad-step policy to the outcome of step: skipped steps are counted,
// and more than MaxBadSteps non-finite ones in a row stop the run.
func (t *trainer) count(step int, sr stepResult) error {
	switch sr.outcome {
	case stepBad:
		t.badStreak++
		t.st.skipped++
		t.prog.printf("step %d: non-finite loss or gradient (loss %v), step skipped (%d in a row)\n", step, sr.loss, t.badStreak)
		if t.badStreak > t.opts.MaxBadSteps {
			return &BadStepsError{Streak: t.badStreak, Step: step, Checkpoint: t.lastGood()}
		}
	case stepOverflow:
		t.st.skipped++
		t.prog.printf("step %d: fp16 gradient overflow, step skipped; loss scale now %g\n", step, sr.lossScale)
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

// notifyStep tells the observers of step p with its results sr; a logging window
// (LogEvery steps, or the run's last) ends with it when it is due.
func (t *trainer) notifyStep(p pendingStep, sr stepResult) error {
	t.windowImages += p.images
	elapsed := time.Since(t.windowStart).Seconds()
	e := stepEvent{step: p.step, epoch: p.epoch, lr: p.lr, res: sr, skipped: t.st.skipped,
		imagesPerS: float64(t.windowImages) / math.Max(elapsed, 1e-9),
		logRow:     p.step%t.opts.LogEvery == 0 || p.step == t.total,
		logitScale: t.readLogitScale, logitBias: t.readLogitBias}
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
	if zeroshot || eval || save || final || plot || keep {
		if err := t.sync(); err != nil { // the steps' outcomes decide what is saved
			return err
		}
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
	if err := t.sync(); err != nil {
		return err
	}
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
	skipped    int      // steps skipped over the run so far
	imagesPerS float64  // the throughput since the logging window began
	logRow     bool     // the step ends a logging window (LogEvery steps, or the run's last)
	logitScale float64  // exp(logit_scale) and SigLIP's bias (nil: CLIP's loss), as read
	logitBias  *float64 // with the step's results (the model's values at the read)
}

// observer follows a run's events: the progress report (progress) and the metrics
// (metricsLog: metrics.jsonl, RUN/tb/ and the learning curve's data).
type observer interface {
	stepDone(e stepEvent) error
	evaluated(step int, epoch float64, ev EvalResult) error
	zeroshotDone(step int, epoch float64, zs ZeroshotResult) error
}
