package train

// RUN/tb/: the TensorBoard event file of a run, an observer of metrics.jsonl. Every row
// that metrics.jsonl gets becomes one summary event of the row's step, stamped with the
// row's time, holding each of the row's numbers as a scalar (JSON null, a non-finite
// value, as NaN). Tags follow the row's keys: train_loss is train/loss, the training
// row's other numbers are train/<key> (train/lr, train/grad_norm, train/logit_scale,
// train/images_per_s, train/skipped, train/loss_scale), a val_ key is val/<rest> and a
// nested object's numbers are <key>_<name> (val/image_to_text_R@1, ...); time, step and
// epoch are the event's, not scalars. On resume the event file is written anew from
// the rows metrics.jsonl keeps, so that both hold the same history.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"sort"
	"strings"
	"time"

	"goclip/internal/rundir"
	"goclip/internal/tfevents"
)

// TensorBoardDir is the run folder's TensorBoard log folder (`tensorboard --logdir RUN/tb`).
const TensorBoardDir = rundir.TensorBoard

// tensorBoard writes metrics rows to RUN/tb/.
type tensorBoard struct {
	w *tfevents.Writer
}

// openTensorBoard starts RUN/tb/ with one event file holding the rows (metrics.jsonl
// lines) given, replacing the event files of earlier processes.
func openTensorBoard(run string, rows [][]byte) (*tensorBoard, error) {
	var events []tfevents.Event
	for _, line := range rows {
		e, ok, err := rowEvent(line)
		if err != nil {
			return nil, err
		}
		if ok {
			events = append(events, e)
		}
	}
	w, err := tfevents.Create(RunDir(run).TensorBoard(), time.Now(), events)
	if err != nil {
		return nil, fmt.Errorf("tensorboard: %w", err)
	}
	return &tensorBoard{w: w}, nil
}

// add appends the event of a row (its metrics.jsonl line).
func (tb *tensorBoard) add(line []byte) error {
	e, ok, err := rowEvent(line)
	if err != nil || !ok {
		return err
	}
	if err := tb.w.Add(e); err != nil {
		return fmt.Errorf("tensorboard: %w", err)
	}
	return nil
}

// rowEvent is the summary event of a metrics.jsonl row; ok is false for a row without
// a step or without numbers.
func rowEvent(line []byte) (e tfevents.Event, ok bool, err error) {
	var row map[string]json.RawMessage
	if err := json.Unmarshal(line, &row); err != nil {
		return e, false, fmt.Errorf("tensorboard: metrics row %.80s: %w", line, err)
	}
	stepText, hasStep := row["step"]
	if !hasStep || json.Unmarshal(stepText, &e.Step) != nil {
		return e, false, nil
	}
	wall := time.Now()
	var stamp string
	if json.Unmarshal(row["time"], &stamp) == nil {
		if t, err := time.Parse(time.RFC3339Nano, stamp); err == nil {
			wall = t
		}
	}
	e.WallTime = tfevents.WallTime(wall)
	train := row["train_loss"] != nil
	for key, raw := range row {
		if key == "time" || key == "step" || key == "epoch" {
			continue
		}
		tag := tensorBoardTag(key, train)
		if v, isNum := jsonScalar(raw); isNum {
			e.Scalars = append(e.Scalars, tfevents.Scalar{Tag: tag, Value: v})
			continue
		}
		var sub map[string]json.RawMessage
		if json.Unmarshal(raw, &sub) != nil {
			continue
		}
		for name, raw := range sub {
			if v, isNum := jsonScalar(raw); isNum {
				e.Scalars = append(e.Scalars, tfevents.Scalar{Tag: tag + "_" + name, Value: v})
			}
		}
	}
	sort.Slice(e.Scalars, func(i, j int) bool { return e.Scalars[i].Tag < e.Scalars[j].Tag })
	return e, len(e.Scalars) > 0, nil
}

// tensorBoardTag is the tag of a row's key (see the file's comment).
func tensorBoardTag(key string, trainRow bool) string {
	for _, p := range []string{"train", "val", "test", "zeroshot"} {
		if rest, ok := strings.CutPrefix(key, p+"_"); ok {
			return p + "/" + rest
		}
	}
	if trainRow {
		return "train/" + key
	}
	return key
}

// jsonScalar reads a JSON number (or null, as NaN).
func jsonScalar(raw json.RawMessage) (float64, bool) {
	raw = bytes.TrimSpace(raw)
	if bytes.Equal(raw, []byte("null")) {
		return math.NaN(), true
	}
	var v float64
	if json.Unmarshal(raw, &v) != nil {
		return 0, false
	}
	return v, true
}
