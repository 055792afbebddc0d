package main

import (
	"io"

	"goclip/train"
)

// imageProgress reports the work desc over images on w (a bar on a terminal, a start
// and an end line when piped). It returns the callback for the Progress field of
// dataset's options and a function that ends the report (call it when done).
func imageProgress(w io.Writer, desc string) (progress func(done, total int), closeBar func()) {
	t := train.NewTask(w, desc, "image")
	return t.Update, t.Done
}
