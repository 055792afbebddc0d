package train

// Progress on stderr: a progress bar per epoch with loss, learning rate, images/s and
// ETA when the writer is a terminal, plain periodic lines otherwise.

import (
	"fmt"
	"io"
	"os"
	"time"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"
)

// progress reports one epoch at a time.
type progress struct {
	w      io.Writer
	tty    bool
	every  int // steps between plain lines
	bar    *progressbar.ProgressBar
	epochs int
	epoch  int
	total  int // batches in the epoch
	start  time.Time
	done   int
}

// isTerminal reports whether w is a terminal.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

func newProgress(w io.Writer, epochs, every int) *progress {
	if w == nil {
		w = io.Discard
	}
	return &progress{w: w, tty: isTerminal(w), every: max(1, every), epochs: epochs}
}

// startEpoch begins epoch (0-based) of total batches, the first done of them already
// consumed (a resumed epoch).
func (p *progress) startEpoch(epoch, total, done int) {
	p.epoch, p.total, p.done, p.start = epoch, total, done, time.Now()
	if !p.tty {
		return
	}
	p.bar = progressbar.NewOptions(total,
		progressbar.OptionSetWriter(p.w),
		progressbar.OptionSetDescription(fmt.Sprintf("epoch %d/%d", epoch+1, p.epochs)),
		progressbar.OptionShowCount(),
		progressbar.OptionSetPredictTime(true),
		progressbar.OptionSetElapsedTime(true),
		progressbar.OptionFullWidth(),
		progressbar.OptionThrottle(200*time.Millisecond),
		progressbar.OptionShowDescriptionAtLineEnd(),
	)
	if done > 0 {
		_ = p.bar.Set(done)
	}
}

// update records one more batch with the current loss, learning rate and throughput.
func (p *progress) update(step int, loss, lr, imagesPerS float64) {
	p.done++
	if p.bar != nil {
		p.bar.Describe(fmt.Sprintf("epoch %d/%d loss %.4f lr %.2e %.0f img/s", p.epoch+1, p.epochs, loss, lr, imagesPerS))
		_ = p.bar.Set(p.done)
		return
	}
	if step%p.every != 0 && p.done != p.total {
		return
	}
	eta := "?"
	if p.done > 0 {
		per := time.Since(p.start) / time.Duration(p.done)
		eta = (per * time.Duration(p.total-p.done)).Round(time.Second).String()
	}
	fmt.Fprintf(p.w, "epoch %d/%d  batch %d/%d  step %d  loss %.4f  lr %.3e  %.1f img/s  epoch ETA %s\n",
		p.epoch+1, p.epochs, p.done, p.total, step, loss, lr, imagesPerS, eta)
}

// finishEpoch ends the bar.
func (p *progress) finishEpoch() {
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
