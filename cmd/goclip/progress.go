package main

import (
	"os"
	"time"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"
)

// imageProgress draws a progress bar of n images labelled desc on stderr, when stderr
// is a terminal. It returns the callback for the Progress field of dataset's options
// (nil without a terminal) and a function that closes the bar (call it when done).
func imageProgress(n int, desc string) (progress func(done, total int), closeBar func()) {
	if !term.IsTerminal(int(os.Stderr.Fd())) {
		return nil, func() {}
	}
	bar := progressbar.NewOptions(n,
		progressbar.OptionSetWriter(os.Stderr),
		progressbar.OptionSetDescription(desc),
		progressbar.OptionShowCount(),
		progressbar.OptionShowIts(),
		progressbar.OptionSetItsString("img"),
		progressbar.OptionThrottle(100*time.Millisecond),
		progressbar.OptionClearOnFinish(),
	)
	return func(done, _ int) { bar.Set(done) }, func() { bar.Close() }
}
