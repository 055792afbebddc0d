package main

import (
	"path/filepath"
	"strings"
	"testing"
)

// TestLossFlag: --loss siglip trains and logs the bias, an unknown loss names the flag,
// and a resume keeps the run's loss (another is refused).
func TestLossFlag(t *testing.T) {
	data := tinyData(t)
	if _, _, err := runGoclip(t, tinyTrainArgs(data, filepath.Join(t.TempDir(), "x"), "--loss", "softmax", "--max-steps", "1")...); err == nil ||
		!strings.Contains(err.Error(), "--loss softmax") {
		t.Errorf("--loss softmax: %v", err)
	}
	run := filepath.Join(t.TempDir(), "run")
	mustGoclip(t, tinyTrainArgs(data, run, "--loss", "siglip", "--max-steps", "2", "--log-every", "1")...)
	n := 0
	for _, r := range metricRows(t, run) {
		if _, ok := r["train_loss"]; ok {
			if _, ok := r["logit_bias"].(float64); !ok {
				t.Errorf("step %v: no logit_bias", r["step"])
			}
			n++
		}
	}
	if n != 2 {
		t.Errorf("%d training rows, want 2", n)
	}
	_, _, err := runGoclip(t, "train", "--out", run, "--resume", "--loss", "clip", "--max-steps", "3")
	if err == nil || !strings.Contains(err.Error(), `--loss "clip" differs from the run's "siglip"`) {
		t.Errorf("--resume --loss clip of a siglip run: %v", err)
	}
}
