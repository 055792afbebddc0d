package train

// metrics.jsonl (one JSON object per logged step and per evaluation) and the learning
// curve drawn from it.
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

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"

	"goclip/internal/atomicfile"
)

// MetricsFile and CurveFile are the run files of this file's writers.
const (
	MetricsFile = "metrics.jsonl"
	CurveFile   = "learning_curve.png"
)

// TrainRow is a metrics.jsonl row for logged training steps: train_loss is the mean
// over the steps since the previous row, images_per_s their throughput, skipped the
// steps skipped over the run so far (non-finite or fp16 overflow).
type TrainRow struct {
	Step       int     `json:"step"`
	Epoch      float64 `json:"epoch"`
	LR         float64 `json:"lr"`
	TrainLoss  float64 `json:"train_loss"`
	ImagesPerS float64 `json:"images_per_s"`
	Skipped    int     `json:"skipped"`
	LossScale  float64 `json:"loss_scale,omitempty"`
}

// EvalRow is a metrics.jsonl row for an evaluation on the validation split.
type EvalRow struct {
	Step        int     `json:"step"`
	Epoch       float64 `json:"epoch"`
	ValLoss     float64 `json:"val_loss"`
	ImageToText Recalls `json:"val_image_to_text"`
	TextToImage Recalls `json:"val_text_to_image"`
}

// metrics appends rows to RUN/metrics.jsonl and keeps the loss curves for the plot.
type metrics struct {
	path        string
	train, val  plotter.XYs // (epoch, loss)
	trainLosses []float64   // per logged row, for tests and the report
	readOnly    bool        // keep rows in memory only (ranks other than 0)
}

// openMetrics starts RUN/metrics.jsonl: a new file, or on resume the existing one cut
// to the rows at or before step (rows a killed run wrote after its last checkpoint).
// Without write (ranks other than 0) it only keeps the rows in memory.
func openMetrics(dir string, resume bool, step int, write bool) (*metrics, error) {
	m := &metrics{path: filepath.Join(dir, MetricsFile), readOnly: !write}
	if !resume {
		if m.readOnly {
			return m, nil
		}
		return m, os.WriteFile(m.path, nil, 0o644)
	}
	data, err := os.ReadFile(m.path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	var kept bytes.Buffer
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 64*1024), 16*1024*1024)
	for sc.Scan() {
		var row struct {
			Step      int      `json:"step"`
			Epoch     float64  `json:"epoch"`
			TrainLoss *float64 `json:"train_loss"`
			ValLoss   *float64 `json:"val_loss"`
		}
		if json.Unmarshal(sc.Bytes(), &row) != nil || row.Step > step {
			continue
		}
		kept.Write(sc.Bytes())
		kept.WriteByte('\n')
		if row.TrainLoss != nil {
			m.train = append(m.train, plotter.XY{X: row.Epoch, Y: *row.TrainLoss})
			m.trainLosses = append(m.trainLosses, *row.TrainLoss)
		}
		if row.ValLoss != nil {
			m.val = append(m.val, plotter.XY{X: row.Epoch, Y: *row.ValLoss})
		}
	}
	if m.readOnly {
		return m, nil
	}
	return m, atomicfile.WriteBytes(m.path, kept.Bytes())
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
	return f.Close()
}

// plot draws the training and validation loss against epochs to path.
func (m *metrics) plot(path, title string) error {
	p := plot.New()
	p.Title.Text = title
	p.X.Label.Text = "epoch"
	p.Y.Label.Text = "loss"
	p.Add(plotter.NewGrid())
	if len(m.train) > 0 {
		l, err := plotter.NewLine(m.train)
		if err != nil {
			return err
		}
		l.Color = color.RGBA{R: 31, G: 119, B: 180, A: 255}
		l.Width = vg.Points(1.5)
		p.Add(l)
		p.Legend.Add("train loss", l)
	}
	if len(m.val) > 0 {
		l, pts, err := plotter.NewLinePoints(m.val)
		if err != nil {
			return err
		}
		l.Color = color.RGBA{R: 255, G: 127, B: 14, A: 255}
		l.Width = vg.Points(1.5)
		pts.Color = l.Color
		pts.Shape = nil
		p.Add(l, pts)
		p.Legend.Add("validation loss", l)
	}
	p.Legend.Top = true
	w, err := p.WriterTo(7*vg.Inch, 4.5*vg.Inch, "png")
	if err != nil {
		return err
	}
	return atomicfile.WriteFile(path, func(f io.Writer) error {
		_, err := w.WriteTo(f)
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
		Step       int        `json:"step"`
		Epoch      jsonNumber `json:"epoch"`
		LR         jsonNumber `json:"lr"`
		TrainLoss  jsonNumber `json:"train_loss"`
		ImagesPerS jsonNumber `json:"images_per_s"`
		Skipped    int        `json:"skipped"`
		LossScale  jsonNumber `json:"loss_scale,omitempty"`
	}{r.Step, jsonNumber(r.Epoch), jsonNumber(r.LR), jsonNumber(r.TrainLoss), jsonNumber(r.ImagesPerS), r.Skipped, jsonNumber(r.LossScale)})
}

// MarshalJSON writes the row with null for non-finite numbers.
func (r EvalRow) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		Step        int        `json:"step"`
		Epoch       jsonNumber `json:"epoch"`
		ValLoss     jsonNumber `json:"val_loss"`
		ImageToText Recalls    `json:"val_image_to_text"`
		TextToImage Recalls    `json:"val_text_to_image"`
	}{r.Step, jsonNumber(r.Epoch), jsonNumber(r.ValLoss), r.ImageToText, r.TextToImage})
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
