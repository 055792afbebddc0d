package train

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"goclip/dataset"
)

// progressCalls records a progress callback's calls.
type progressCalls [][2]int

func (c *progressCalls) add(done, total int) { *c = append(*c, [2]int{done, total}) }

// check fails unless the calls start at (0, total), never go back, and end at (total,
// total); it returns the total.
func (c progressCalls) check(t *testing.T, what string) int {
	t.Helper()
	if len(c) < 2 {
		t.Fatalf("%s: %d progress calls %v, want a start and an end", what, len(c), c)
	}
	last := c[len(c)-1]
	if c[0][0] != 0 || last[0] != last[1] || last[1] <= 0 {
		t.Fatalf("%s: progress from %v to %v, want (0, total) to (total, total)", what, c[0], last)
	}
	for i := 1; i < len(c); i++ {
		if c[i][0] < c[i-1][0] || c[i][0] > c[i][1] {
			t.Fatalf("%s: progress call %d %v after %v", what, i, c[i], c[i-1])
		}
	}
	return last[1]
}

// TestTaskPipedLines: not on a terminal, a task writes a start line and an end line,
// however many updates come between, and no carriage return; a task stopped short
// says so; a task never updated writes nothing.
func TestTaskPipedLines(t *testing.T) {
	var buf bytes.Buffer
	task := NewTask(&buf, "cache 16px", "image")
	for i := 0; i <= 500; i++ {
		task.Update(i, 500)
	}
	task.Done()
	task.Done() // once only
	lines := strings.Split(strings.TrimSuffix(buf.String(), "\n"), "\n")
	if len(lines) != 2 || lines[0] != "cache 16px: 500 images" || !strings.HasPrefix(lines[1], "cache 16px: done, 500/500 images in ") ||
		strings.Contains(buf.String(), "\r") {
		t.Fatalf("piped task output:\n%q", buf.String())
	}

	buf.Reset()
	task = NewTask(&buf, "evaluation", "item")
	task.Update(0, 1)
	task.Done()
	if got := buf.String(); !strings.HasPrefix(got, "evaluation: 1 item\nevaluation: stopped, 0/1 item in ") {
		t.Fatalf("stopped task: %q", got)
	}

	buf.Reset()
	NewTask(&buf, "idle", "image").Done()
	if buf.Len() != 0 {
		t.Fatalf("a task never updated wrote %q", buf.String())
	}
}

// TestTaskBar: on a terminal, a bar of done/total that ends at the total.
func TestTaskBar(t *testing.T) {
	var buf bytes.Buffer
	task := NewTask(&buf, "tokenizer", "merge")
	task.tty = true
	for i := 0; i <= 40; i++ {
		task.Update(i, 40)
	}
	task.Done()
	out := buf.String()
	if !strings.Contains(out, "tokenizer") || !strings.Contains(out, "40/40") || !strings.Contains(out, "tokenizer: done, 40/40 merges in ") {
		t.Fatalf("bar output:\n%q", out)
	}
}

// TestTrainTokenizerProgress: the BPE training's merges are reported from 0 to the
// number the vocabulary holds.
func TestTrainTokenizerProgress(t *testing.T) {
	f := synthData(t, 40, "base")
	var calls progressCalls
	tok, err := TrainTokenizer(f.ds.Split(dataset.Train), 600, calls.add)
	if err != nil {
		t.Fatal(err)
	}
	if total := calls.check(t, "tokenizer"); total != tok.VocabSize()-514 || len(calls) != total+1 {
		t.Fatalf("%d merges reported in %d calls; the vocabulary holds %d tokens", total, len(calls), tok.VocabSize())
	}
}

// TestEvaluateProgress: an evaluation pass reports its images and captions batch by
// batch, ending at their count.
func TestEvaluateProgress(t *testing.T) {
	f := synthData(t, 40, "base")
	items := f.ds.Split(dataset.Train)[:10]
	captions := 0
	for _, it := range items {
		captions += len(it.Captions)
	}
	m := newModel(t, tinyConfig(t, f.tok), 1)
	var calls progressCalls
	res, err := Evaluate(context.Background(), m, f.tok, items, EvalOptions{BatchSize: 4, Workers: 1, Progress: calls.add})
	if err != nil {
		t.Fatal(err)
	}
	total := calls.check(t, "evaluation")
	// (0, total), 3 image batches, the caption batches, and the last call.
	if want := 1 + 3 + (captions+3)/4 + 1; total != len(items)+captions || res.Captions != captions || len(calls) != want {
		t.Fatalf("progress %v; want %d calls to %d", calls, want, len(items)+captions)
	}
}
