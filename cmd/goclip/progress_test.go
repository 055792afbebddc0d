package main

import (
	"path/filepath"
	"strings"
	"testing"

	"goclip/internal/testutil"
)

// TestPipedProgressLines: with stderr piped, goclip synth, cache, eval and train from
// scratch (its BPE training) report their long work as a start line and an end line,
// without bar redraws (carriage returns).
func TestPipedProgressLines(t *testing.T) {
	model := testutil.Fixtures(t, "clip-tiny-openai")
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	check := func(what, errOut string, want ...string) {
		t.Helper()
		if strings.Contains(errOut, "\r") {
			t.Errorf("%s: carriage returns on piped stderr:\n%q", what, errOut)
		}
		for _, w := range want {
			if !strings.Contains(errOut, w) {
				t.Errorf("%s: stderr lacks %q:\n%s", what, w, errOut)
			}
		}
	}
	run := func(args ...string) string {
		t.Helper()
		_, errOut, err := runGoclip(t, args...)
		if err != nil {
			t.Fatalf("goclip %s: %v\n%s", strings.Join(args, " "), err, errOut)
		}
		return errOut
	}

	check("synth", run("synth", "--out", data, "--images", "12", "--size", "32", "--seed", "2", "--val", "2", "--test", "2"),
		"synth base: 12 images\n", "synth base: done, 12/12 images in ")
	errOut := run("cache", "--data", data, "--size", "16", "--workers", "1")
	check("cache", errOut, "cache 16px: 12 images\n", "cache 16px: done, 12/12 images in ")
	if n := strings.Count(errOut, "\n"); n != 2 {
		t.Errorf("cache: %d lines on stderr, want the start and end lines:\n%s", n, errOut)
	}
	// Items: 12 images and their 60 captions (5 each).
	check("eval", run("eval", "--model", model, "--data", data, "--split", "all", "--batch-size", "4", "--device", "cpu", "--threads", "1", "--workers", "1"),
		"evaluation: 72 items\n", "evaluation: done, 72/72 items in ")
	check("train", run("train", "--config", "tiny", "--data", data, "--out", filepath.Join(dir, "run"), "--vocab-size", "600", "--max-steps", "1",
		"--batch-size", "4", "--device", "cpu", "--threads", "1", "--workers", "1", "--warmup", "1"),
		"tokenizer: 86 merges\n", "tokenizer: done, 86/86 merges in ", "test evaluation: ", "test evaluation: done, ")
}
