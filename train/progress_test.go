package train

import (
	"bytes"
	"image/png"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestProgressBarSpansTheRun: on a terminal, one bar over the run's steps (here a run
// cut by --max-steps to 8 steps of 3-step epochs, resumed after 2), ending at 8 of 8
// in epoch 3 of 3.
func TestProgressBarSpansTheRun(t *testing.T) {
	var buf bytes.Buffer
	p := newProgress(&buf, 10, 3, 8, 2, 10)
	p.tty = true
	for step := 3; step <= 8; step++ {
		epoch := (step - 1) / 3
		if (step-1)%3 == 0 || step == 3 {
			p.startEpoch(epoch, 3, (step-1)%3)
		}
		p.update(step, 1.5, 1e-4, 100)
		p.finishEpoch()
	}
	out := buf.String()
	if p.bar != nil {
		t.Error("the bar is still open after the run's last step")
	}
	for _, want := range []string{"step 8/8 epoch 3/3", "100%"} {
		if !strings.Contains(out, want) {
			t.Errorf("bar output lacks %q:\n%q", want, out)
		}
	}
	if strings.Contains(out, "epoch 3/10") || strings.Count(out, "100%") != 1 {
		t.Errorf("the bar counts epochs beyond --max-steps or ends more than once:\n%q", out)
	}
}

// TestProgressPlainLines: piped, one line per logged step, the first and last always.
func TestProgressPlainLines(t *testing.T) {
	var buf bytes.Buffer
	p := newProgress(&buf, 2, 3, 5, 0, 10)
	p.startEpoch(0, 3, 0)
	for step := 1; step <= 5; step++ {
		if step == 4 {
			p.startEpoch(1, 3, 0)
		}
		p.update(step, 1, 1e-4, 50)
	}
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[0], "step 1/5  epoch 1/2") || !strings.HasPrefix(lines[1], "step 5/5  epoch 2/2") {
		t.Errorf("plain progress:\n%s", buf.String())
	}
	if Plural(1, "epoch") != "1 epoch" || Plural(2, "step") != "2 steps" || Plural(0, "step") != "0 steps" {
		t.Error("Plural")
	}
}

// TestLearningCurvePanels: the curve has a second panel once there are evaluations.
func TestLearningCurvePanels(t *testing.T) {
	dir := t.TempDir()
	m, err := openMetrics(dir, false, 0, true)
	if err != nil {
		t.Fatal(err)
	}
	height := func() int {
		path := filepath.Join(dir, CurveFile)
		if err := m.plot(path, "run"); err != nil {
			t.Fatal(err)
		}
		f, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		cfg, err := png.DecodeConfig(f)
		if err != nil {
			t.Fatal(err)
		}
		return cfg.Height
	}
	for s := 1; s <= 4; s++ {
		if err := m.add(TrainRow{Step: s, Epoch: float64(s) / 2, TrainLoss: 3 - float64(s)/4}); err != nil {
			t.Fatal(err)
		}
	}
	one := height()
	for s := 2; s <= 4; s += 2 {
		r := Recalls{R1: 0.1 * float64(s), R5: 0.2 * float64(s), R10: 0.25 * float64(s)}
		if err := m.add(EvalRow{Step: s, Epoch: float64(s) / 2, ValLoss: 2, ImageToText: r, TextToImage: r}); err != nil {
			t.Fatal(err)
		}
	}
	if two := height(); two != 2*one {
		t.Errorf("curve height %d with evaluations, %d without: want a second panel of the same height", two, one)
	}
	// Reopened on resume, the rows give the same curve, and the last evaluated step.
	r, err := openMetrics(dir, true, 4, false)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.recalls) != 2 || r.recalls[1].t2i.R5 != 0.8 || r.lastEvalStep != 4 {
		t.Errorf("reopened metrics: %d recall points, last eval step %d", len(r.recalls), r.lastEvalStep)
	}
}
