package train

// Progress on stderr, for the whole run: on a terminal one progress bar over all the
// run's steps (the step of the total, the epoch, loss, learning rate, images/s and the
// ETA of the run); otherwise, piped, one line per logged step, the first and the last
// step of the run always included.

import (
	"fmt"
	"io"
	"os"
	"time"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"
)

// progress reports a run's steps.
type progress struct {
	w        io.Writer
	tty      bool
	every    int // steps between plain lines
	bar      *progressbar.ProgressBar
	epochs   int // epochs of the run
	perEpoch int // steps per epoch
	total    int // steps of the run
	first    int // steps done before this invocation (a resumed run)
	epoch    int // the current epoch, 0-based
	step     int // steps done
	start    time.Time
}

// isTerminal reports whether w is a terminal.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// newProgress reports a run of total steps over epochs epochs of perEpoch steps, of
// which done were taken before (a resumed run), with a plain line every every steps.
func newProgress(w io.Writer, epochs, perEpoch, total, done, every int) *progress {
	if w == nil {
		w = io.Discard
	}
	if perEpoch > 0 {
		epochs = min(epochs, (total+perEpoch-1)/perEpoch) // --max-steps may end the run early
	}
	return &progress{w: w, tty: isTerminal(w), every: max(1, every), epochs: epochs, perEpoch: perEpoch,
		total: total, first: done, step: done, start: time.Now()}
}

// Plural is "1 step", "2 steps".
func Plural(n int, word string) string {
	if n == 1 {
		return fmt.Sprintf("%d %s", n, word)
	}
	return fmt.Sprintf("%d %ss", n, word)
}

// startEpoch notes the epoch (0-based) the next steps belong to; the bar, made at the
// first step, spans the whole run.
func (p *progress) startEpoch(epoch, _, _ int) {
	p.epoch = epoch
	if p.tty && p.bar == nil && p.step < p.total {
		p.bar = progressbar.NewOptions(p.total-p.first,
			progressbar.OptionSetWriter(p.w),
			progressbar.OptionSetDescription(p.describe(0, 0, 0)),
			progressbar.OptionSetPredictTime(true),
			progressbar.OptionSetElapsedTime(true),
			progressbar.OptionFullWidth(),
			progressbar.OptionThrottle(200*time.Millisecond),
			progressbar.OptionShowDescriptionAtLineEnd(),
		)
	}
}

// describe is the bar's text: the run's step, the epoch and the latest figures.
func (p *progress) describe(loss, lr, imagesPerS float64) string {
	s := fmt.Sprintf("step %d/%d epoch %d/%d", p.step, p.total, p.epoch+1, p.epochs)
	if p.step > p.first {
		s += fmt.Sprintf(" loss %.4f lr %.2e %.0f img/s", loss, lr, imagesPerS)
	}
	return s
}

// eta is the estimated time to the end of the run, from this invocation's pace.
func (p *progress) eta() string {
	done := p.step - p.first
	if done <= 0 {
		return "?"
	}
	per := time.Since(p.start) / time.Duration(done)
	return (per * time.Duration(p.total-p.step)).Round(time.Second).String()
}

// update records the step-th step (1-based, of the run) with its loss, learning rate
// and throughput.
func (p *progress) update(step int, loss, lr, imagesPerS float64) {
	p.step = step
	if p.bar != nil {
		p.bar.Describe(p.describe(loss, lr, imagesPerS))
		_ = p.bar.Set(step - p.first)
		return
	}
	if step%p.every != 0 && step != p.first+1 && step != p.total {
		return
	}
	fmt.Fprintf(p.w, "step %d/%d  epoch %d/%d  loss %.4f  lr %.3e  %.1f img/s  ETA %s\n",
		step, p.total, p.epoch+1, p.epochs, loss, lr, imagesPerS, p.eta())
}

// finishEpoch ends the bar once the run's last step is done.
func (p *progress) finishEpoch() {
	if p.step >= p.total {
		p.close()
	}
}

// close ends the bar, leaving its last state on its own line.
func (p *progress) close() {
	if p.bar != nil {
		_ = p.bar.Finish()
		fmt.Fprintln(p.w)
		p.bar = nil
	}
}

// printf writes a line outside the bar.
func (p *progress) printf(format string, args ...any) {
	if p.bar != nil {
		_ = p.bar.Clear()
	}
	fmt.Fprintf(p.w, format, args...)
}

// Task reports a long piece of work other than training steps (a cache build, BPE
// training, an evaluation pass) on w: on a terminal a bar of done of total units;
// otherwise, piped, one line when the work starts and one when it ends, nothing in
// between. Its Update is the callback library code takes (func(done, total int)).
type Task struct {
	w       io.Writer
	desc    string // what is done, "cache 224px"
	unit    string // what is counted, "image"
	tty     bool
	bar     *progressbar.ProgressBar
	start   time.Time
	done    int
	total   int
	started bool
	ended   bool
}

// NewTask reports the work desc counted in units of unit (a singular noun) on w (nil:
// nowhere).
func NewTask(w io.Writer, desc, unit string) *Task {
	if w == nil {
		w = io.Discard
	}
	return &Task{w: w, desc: desc, unit: unit, tty: isTerminal(w)}
}

// Update records that done of total units are done (total may change as the work
// learns its size); it starts the report at its first call. Call it from one goroutine
// at a time, and Done when the work ends.
func (t *Task) Update(done, total int) {
	if t == nil || t.ended {
		return
	}
	if !t.started {
		t.started, t.start, t.total = true, time.Now(), total
		if t.tty {
			t.bar = progressbar.NewOptions(total,
				progressbar.OptionSetWriter(t.w),
				progressbar.OptionSetDescription(t.desc),
				progressbar.OptionShowCount(),
				progressbar.OptionShowIts(),
				progressbar.OptionSetItsString(t.unit),
				progressbar.OptionSetPredictTime(true),
				progressbar.OptionThrottle(100*time.Millisecond),
				progressbar.OptionClearOnFinish(),
			)
		} else {
			fmt.Fprintf(t.w, "%s: %s\n", t.desc, Plural(total, t.unit))
		}
	}
	if total != t.total {
		t.total = total
		if t.bar != nil {
			t.bar.ChangeMax(total)
		}
	}
	t.done = done
	if t.bar != nil {
		_ = t.bar.Set(done)
	}
}

// Done ends the report (once; a Task never updated reports nothing): the bar is cleared
// and one line says what was done ("done", or "stopped" short of the total) and how
// long it took.
func (t *Task) Done() {
	if t == nil || !t.started || t.ended {
		return
	}
	t.ended = true
	if t.bar != nil {
		_ = t.bar.Finish()
	}
	state := "done"
	if t.done < t.total {
		state = "stopped"
	}
	fmt.Fprintf(t.w, "%s: %s, %d/%s in %s\n", t.desc, state, t.done, Plural(t.total, t.unit),
		time.Since(t.start).Round(time.Millisecond))
}

// stepDone is progress as an observer of the run: the bar (or line) of each step.
func (p *progress) stepDone(e stepEvent) error {
	p.update(e.step, e.res.loss, e.lr, e.imagesPerS)
	return nil
}

// evaluated reports a validation evaluation.
func (p *progress) evaluated(step int, epoch float64, ev EvalResult) error {
	p.printf("step %d (epoch %.2f) validation: %s\n", step, epoch, ev)
	return nil
}

// zeroshotDone reports a zero-shot measurement.
func (p *progress) zeroshotDone(step int, epoch float64, zs ZeroshotResult) error {
	p.printf("step %d (epoch %.2f) %s\n", step, epoch, zs)
	return nil
}
