package train

// metrics.jsonl (one JSON object per logged step and per evaluation), the learning
// curve drawn from it, and RUN/tb/ (tensorboard.go), which gets the same rows.
//
// JSON has no NaN or infinity: every float this package writes (metrics.jsonl rows,
// eval.json, EvalResult as `goclip eval --json` prints it) is null where its value is
// NaN or infinite, e.g. the train_loss of a window of skipped steps or the loss of a
// model whose weights overflowed.

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"image/color"
	"io"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"

	"goclip/internal/atomicfile"
	"goclip/internal/rundir"
)

// MetricsFile and CurveFile are the run files of this file's writers (see RunDir).
const (
	MetricsFile = rundir.MetricsFile
	CurveFile   = rundir.CurveFile
)

// TrainRow is a metrics.jsonl row for logged training steps: time is when it was
// written (RFC 3339, UTC), lr the learning rate of the row's step, train_loss and
// grad_norm (the gradients' total 2-norm before clipping) the means over the finite
// steps since the previous row, logit_scale the model's exp(logit_scale) (the
// logits' temperature), images_per_s the steps' throughput, skipped the steps skipped
// over the run so far (non-finite or fp16 overflow).
type TrainRow struct {
	Time       string   `json:"time"`
	Step       int      `json:"step"`
	Epoch      float64  `json:"epoch"`
	LR         float64  `json:"lr"`
	TrainLoss  float64  `json:"train_loss"`
	GradNorm   float64  `json:"grad_norm"`
	LogitScale float64  `json:"logit_scale"`
	LogitBias  *float64 `json:"logit_bias,omitempty"` // SigLIP's bias (--loss siglip)
	ImagesPerS float64  `json:"images_per_s"`
	Skipped    int      `json:"skipped"`
	LossScale  float64  `json:"loss_scale,omitempty"`
}

// EvalRow is a metrics.jsonl row for an evaluation on the validation split.
type EvalRow struct {
	Time        string  `json:"time"`
	Step        int     `json:"step"`
	Epoch       float64 `json:"epoch"`
	ValLoss     float64 `json:"val_loss"`
	ImageToText Recalls `json:"val_image_to_text"`
	TextToImage Recalls `json:"val_text_to_image"`
}

// ZeroshotRow is a metrics.jsonl row for a zero-shot measurement (Options.Zeroshot).
type ZeroshotRow struct {
	Time  string  `json:"time"`
	Step  int     `json:"step"`
	Epoch float64 `json:"epoch"`
	Top1  float64 `json:"zeroshot_top1"`
	Top5  float64 `json:"zeroshot_top5"`
}

// metrics appends rows to RUN/metrics.jsonl and keeps the loss curves for the plot.
type metrics struct {
	path        string
	train, val  plotter.XYs // (epoch, loss)
	recalls     []recallPoint
	zs1, zs5    plotter.XYs  // (step, zero-shot top-1 / top-5)
	trainLosses []float64    // per logged row, for tests and the report
	readOnly    bool         // keep rows in memory only (ranks other than 0)
	tb          *tensorBoard // RUN/tb/, the rows' observer (nil when readOnly)
	// lastEvalStep is the step of the last evaluation row (-1: none), so that a
	// resumed run does not evaluate, and append, the same step again.
	lastEvalStep int
	// lastZeroshotStep is the step of the last zero-shot row (-1: none), likewise.
	lastZeroshotStep int
}

// openMetrics starts RUN/metrics.jsonl: a new file, or on resume the existing one cut
// to the rows at or before step (rows a killed run wrote after its last checkpoint).
// Without write (ranks other than 0) it only keeps the rows in memory.
func openMetrics(dir string, resume bool, step int, write bool) (*metrics, error) {
	m := &metrics{path: RunDir(dir).Metrics(), readOnly: !write, lastEvalStep: -1, lastZeroshotStep: -1}
	if !resume {
		if m.readOnly {
			return m, nil
		}
		if err := os.WriteFile(m.path, nil, 0o644); err != nil {
			return nil, err
		}
		var err error
		m.tb, err = openTensorBoard(dir, nil)
		return m, err
	}
	data, err := os.ReadFile(m.path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	var kept bytes.Buffer
	var keptRows [][]byte
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 64*1024), 16*1024*1024)
	for sc.Scan() {
		var row struct {
			Step      int      `json:"step"`
			Epoch     float64  `json:"epoch"`
			TrainLoss *float64 `json:"train_loss"`
			ValLoss   *float64 `json:"val_loss"`
			I2T       Recalls  `json:"val_image_to_text"`
			T2I       Recalls  `json:"val_text_to_image"`
			Zeroshot  *float64 `json:"zeroshot_top1"`
			Zeroshot5 *float64 `json:"zeroshot_top5"`
		}
		if json.Unmarshal(sc.Bytes(), &row) != nil || row.Step > step {
			continue
		}
		kept.Write(sc.Bytes())
		kept.WriteByte('\n')
		keptRows = append(keptRows, bytes.Clone(sc.Bytes()))
		if row.TrainLoss != nil {
			m.train = append(m.train, plotter.XY{X: row.Epoch, Y: *row.TrainLoss})
			m.trainLosses = append(m.trainLosses, *row.TrainLoss)
		}
		if row.ValLoss != nil {
			m.val = append(m.val, plotter.XY{X: row.Epoch, Y: *row.ValLoss})
			m.recalls = append(m.recalls, recallPoint{row.Step, row.I2T, row.T2I})
			m.lastEvalStep = row.Step
		}
		if row.Zeroshot != nil && row.Zeroshot5 != nil {
			m.lastZeroshotStep = row.Step
			m.zs1 = append(m.zs1, plotter.XY{X: float64(row.Step), Y: *row.Zeroshot})
			m.zs5 = append(m.zs5, plotter.XY{X: float64(row.Step), Y: *row.Zeroshot5})
		}
	}
	if m.readOnly {
		return m, nil
	}
	if err := atomicfile.WriteBytes(m.path, kept.Bytes()); err != nil {
		return nil, err
	}
	m.tb, err = openTensorBoard(dir, keptRows)
	return m, err
}

// add appends a row.
func (m *metrics) add(row any) error {
	data, err := json.Marshal(row)
	if err != nil {
		return err
	}
	switch r := row.(type) {
	case TrainRow:
		m.train = append(m.train, plotter.XY{X: r.Epoch, Y: r.TrainLoss})
		m.trainLosses = append(m.trainLosses, r.TrainLoss)
	case EvalRow:
		m.val = append(m.val, plotter.XY{X: r.Epoch, Y: r.ValLoss})
		m.recalls = append(m.recalls, recallPoint{r.Step, r.ImageToText, r.TextToImage})
	case ZeroshotRow:
		m.zs1 = append(m.zs1, plotter.XY{X: float64(r.Step), Y: r.Top1})
		m.zs5 = append(m.zs5, plotter.XY{X: float64(r.Step), Y: r.Top5})
	}
	if m.readOnly {
		return nil
	}
	f, err := os.OpenFile(m.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return err
	}
	if _, err := f.Write(append(data, '\n')); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return m.tb.add(data)
}

// metricsLog is the metrics as an observer of the run: a TrainRow per logging window
// (the means over its finite steps), an EvalRow per evaluation, a ZeroshotRow per
// zero-shot measurement.
type metricsLog struct {
	*metrics
	t          *trainer // the model's logit scale and bias, the loss scaler
	loss, norm float64  // sums over the window's finite steps
	n          int      // the window's finite steps
}

func (l *metricsLog) stepDone(e stepEvent) error {
	if e.res.outcome != stepBad {
		l.loss += e.res.loss
		l.norm += e.res.gradNorm
		l.n++
	}
	if !e.logRow {
		return nil
	}
	n, loss, norm := l.n, l.loss, l.norm
	l.loss, l.norm, l.n = 0, 0, 0
	if n == 0 {
		return nil // a window of skipped steps only
	}
	row := TrainRow{Time: nowText(), Step: e.step, Epoch: e.epoch, LR: e.lr, TrainLoss: loss / float64(n), GradNorm: norm / float64(n),
		ImagesPerS: e.imagesPerS, Skipped: e.skipped, LogitScale: e.logitScale, LogitBias: e.logitBias}
	if l.t.scaler != nil {
		row.LossScale = l.t.scaler.Scale
	}
	return l.add(row)
}

func (l *metricsLog) evaluated(step int, epoch float64, ev EvalResult) error {
	return l.add(EvalRow{Time: nowText(), Step: step, Epoch: epoch, ValLoss: ev.Loss, ImageToText: ev.ImageToText, TextToImage: ev.TextToImage})
}

func (l *metricsLog) zeroshotDone(step int, epoch float64, zs ZeroshotResult) error {
	return l.add(ZeroshotRow{Time: nowText(), Step: step, Epoch: epoch, Top1: zs.Top1, Top5: zs.Top5})
}

// recallPoint is one evaluation's retrieval recall.
type recallPoint struct {
	step     int
	i2t, t2i Recalls
}

// Colours of the curves (matplotlib's first ones).
var (
	blue   = color.RGBA{R: 31, G: 119, B: 180, A: 255}
	orange = color.RGBA{R: 255, G: 127, B: 14, A: 255}
	green  = color.RGBA{R: 44, G: 160, B: 44, A: 255}
)

// legendWidth is the space right of each panel that holds its legend.
const legendWidth = 2.3 * vg.Inch

// panel is a plot and the legend drawn beside it.
type panel struct {
	p      *plot.Plot
	legend plot.Legend
}

func newPanel(title, x, y string) *panel {
	p := plot.New()
	p.Title.Text = title
	p.Title.TextStyle.Font.Size = vg.Points(13)
	for _, a := range []*plot.Axis{&p.X, &p.Y} {
		a.Label.TextStyle.Font.Size = vg.Points(12)
		a.Tick.Label.Font.Size = vg.Points(11)
	}
	p.X.Label.Text, p.Y.Label.Text = x, y
	p.Add(plotter.NewGrid())
	l := plot.NewLegend()
	l.Left, l.Top = true, true
	l.TextStyle.Font.Size = vg.Points(11)
	return &panel{p: p, legend: l}
}

// wholeTicks are gonum's default ticks, labelled as whole numbers (steps read "100", not
// "100.00").
type wholeTicks struct{}

func (wholeTicks) Ticks(min, max float64) []plot.Tick {
	ts := plot.DefaultTicks{}.Ticks(min, max)
	for i := range ts {
		if ts[i].Label != "" {
			ts[i].Label = strconv.FormatFloat(math.Round(ts[i].Value), 'f', -1, 64)
		}
	}
	return ts
}

// line adds a curve of pts (with point markers when marks) to the panel and its legend.
func (pn *panel) line(pts plotter.XYs, name string, c color.Color, dashed, marks bool) error {
	l, sc, err := plotter.NewLinePoints(pts)
	if err != nil {
		return err
	}
	l.Color, l.Width = c, vg.Points(1.8)
	if dashed {
		l.Dashes = []vg.Length{vg.Points(5), vg.Points(3)}
	}
	pn.p.Add(l)
	if marks {
		sc.Color, sc.Radius = c, vg.Points(2.5)
		pn.p.Add(sc)
		pn.legend.Add(name, l, sc)
	} else {
		pn.legend.Add(name, l)
	}
	return nil
}

// draw draws the plot on the left of c and its legend in the legendWidth on the right,
// outside the curves.
func (pn *panel) draw(c draw.Canvas) {
	plotArea := c
	plotArea.Max.X -= legendWidth
	pn.p.Draw(plotArea)
	leg := c
	leg.Min.X = plotArea.Max.X + vg.Points(8)
	leg.Max.Y -= vg.Points(30)
	pn.legend.Draw(leg)
}

// plot draws the learning curve to path: the training and validation loss against
// epochs, and below, when there were evaluations, the validation retrieval recall
// R@1/5/10 (both directions) against steps, and below, when measured, the zero-shot
// top-1 and top-5 accuracy against steps.
func (m *metrics) plot(path, title string) error {
	loss := newPanel(title, "epoch", "loss")
	if len(m.train) > 0 {
		if err := loss.line(m.train, "train loss", blue, false, false); err != nil {
			return err
		}
	}
	if len(m.val) > 0 {
		if err := loss.line(m.val, "validation loss", orange, false, true); err != nil {
			return err
		}
	}
	panels := []*panel{loss}
	if len(m.recalls) > 0 {
		rec := newPanel("validation retrieval", "step", "recall")
		rec.p.X.Tick.Marker = wholeTicks{}
		rec.p.Y.Min, rec.p.Y.Max = 0, 1
		colours := []color.Color{blue, orange, green}
		for k, name := range []string{"R@1", "R@5", "R@10"} {
			var t2i, i2t plotter.XYs
			for _, r := range m.recalls {
				t2i = append(t2i, plotter.XY{X: float64(r.step), Y: []float64{r.t2i.R1, r.t2i.R5, r.t2i.R10}[k]})
				i2t = append(i2t, plotter.XY{X: float64(r.step), Y: []float64{r.i2t.R1, r.i2t.R5, r.i2t.R10}[k]})
			}
			if err := rec.line(t2i, "text->image "+name, colours[k], false, true); err != nil {
				return err
			}
			if err := rec.line(i2t, "image->text "+name, colours[k], true, true); err != nil {
				return err
			}
		}
		panels = append(panels, rec)
	}
	if len(m.zs1) > 0 {
		zs := newPanel("zero-shot classification", "step", "accuracy")
		zs.p.X.Tick.Marker = wholeTicks{}
		zs.p.Y.Min, zs.p.Y.Max = 0, 1
		if err := zs.line(m.zs1, "top-1", blue, false, true); err != nil {
			return err
		}
		if err := zs.line(m.zs5, "top-5", orange, false, true); err != nil {
			return err
		}
		panels = append(panels, zs)
	}
	const w, hPanel = 9 * vg.Inch, 4 * vg.Inch
	img := vgimg.New(w, hPanel*vg.Length(len(panels)))
	dc := draw.New(img)
	for i, pn := range panels {
		c := dc
		c.Max.Y = dc.Max.Y - hPanel*vg.Length(i)
		c.Min.Y = c.Max.Y - hPanel
		c.Max.Y -= vg.Points(8) // a margin above each panel's title
		pn.draw(c)
	}
	return atomicfile.WriteFile(path, func(f io.Writer) error {
		_, err := vgimg.PngCanvas{Canvas: img}.WriteTo(f)
		return err
	})
}

func dirOf(path string) string { return filepath.Dir(path) }

// jsonNumber is a float64 that marshals as null when it is NaN or infinite.
type jsonNumber float64

// MarshalJSON writes the number, or null.
func (x jsonNumber) MarshalJSON() ([]byte, error) {
	if f := float64(x); math.IsNaN(f) || math.IsInf(f, 0) {
		return []byte("null"), nil
	}
	return json.Marshal(float64(x))
}

// MarshalJSON writes the row with null for non-finite numbers.
func (r TrainRow) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		Time       string      `json:"time"`
		Step       int         `json:"step"`
		Epoch      jsonNumber  `json:"epoch"`
		LR         jsonNumber  `json:"lr"`
		TrainLoss  jsonNumber  `json:"train_loss"`
		GradNorm   jsonNumber  `json:"grad_norm"`
		LogitScale jsonNumber  `json:"logit_scale"`
		LogitBias  *jsonNumber `json:"logit_bias,omitempty"`
		ImagesPerS jsonNumber  `json:"images_per_s"`
		Skipped    int         `json:"skipped"`
		LossScale  jsonNumber  `json:"loss_scale,omitempty"`
	}{r.Time, r.Step, jsonNumber(r.Epoch), jsonNumber(r.LR), jsonNumber(r.TrainLoss), jsonNumber(r.GradNorm), jsonNumber(r.LogitScale),
		(*jsonNumber)(r.LogitBias), jsonNumber(r.ImagesPerS), r.Skipped, jsonNumber(r.LossScale)})
}

// MarshalJSON writes the row with null for non-finite numbers.
func (r EvalRow) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		Time        string     `json:"time"`
		Step        int        `json:"step"`
		Epoch       jsonNumber `json:"epoch"`
		ValLoss     jsonNumber `json:"val_loss"`
		ImageToText Recalls    `json:"val_image_to_text"`
		TextToImage Recalls    `json:"val_text_to_image"`
	}{r.Time, r.Step, jsonNumber(r.Epoch), jsonNumber(r.ValLoss), r.ImageToText, r.TextToImage})
}

// MarshalJSON writes the recalls with null for non-finite numbers.
func (r Recalls) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		R1  jsonNumber `json:"R@1"`
		R5  jsonNumber `json:"R@5"`
		R10 jsonNumber `json:"R@10"`
	}{jsonNumber(r.R1), jsonNumber(r.R5), jsonNumber(r.R10)})
}

// MarshalJSON writes the result (eval.json, `goclip eval --json`) with null for
// non-finite numbers.
func (r EvalResult) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		Loss        jsonNumber `json:"loss"`
		ImageToText Recalls    `json:"image_to_text"`
		TextToImage Recalls    `json:"text_to_image"`
		Images      int        `json:"images"`
		Captions    int        `json:"captions"`
	}{jsonNumber(r.Loss), r.ImageToText, r.TextToImage, r.Images, r.Captions})
}

// nowText is the time of a metrics row.
func nowText() string { return time.Now().UTC().Format(time.RFC3339Nano) }
