package main

// Checkpoint history on the command line: --save-every with --keep, and --resume-from.

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"goclip/train"
)

// TestResumeFromStepCheckpoint: --save-every 2 --keep 1 leaves step-4.pt beside
// last.pt; --resume-from a step that was not kept is refused naming the flag and the
// kept steps, changing nothing; --resume-from step-4 with a new --max-steps and --keep
// continues, and args.json records --keep but not --resume-from.
func TestResumeFromStepCheckpoint(t *testing.T) {
	data := tinyData(t)
	run := filepath.Join(t.TempDir(), "run")
	mustGoclip(t, tinyTrainArgs(data, run, "--max-steps", "4", "--save-every", "2", "--keep", "1")...)
	ckpts := filepath.Join(run, "checkpoints")
	steps := func() []int {
		s, err := train.StepCheckpoints(ckpts)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	if s := steps(); !reflect.DeepEqual(s, []int{4}) {
		t.Fatalf("--save-every 2 --keep 1 after 4 steps kept %v, want step-4.pt", s)
	}
	for _, n := range []string{train.LastCheckpoint, train.BestCheckpoint} {
		if _, err := os.Stat(filepath.Join(ckpts, n)); err != nil {
			t.Errorf("%s: %v", n, err)
		}
	}

	before := snapshot(t, run)
	_, _, err := runGoclip(t, "train", "--out", run, "--resume-from", "step-2")
	if err == nil || !strings.Contains(err.Error(), "--resume-from step-2") || !strings.Contains(err.Error(), "step-4") {
		t.Errorf("--resume-from a step checkpoint that --keep removed: %v", err)
	}
	assertUnchanged(t, "a refused --resume-from", run, before)

	_, stderr, err := runGoclip(t, "train", "--out", run, "--resume-from", "step-4", "--max-steps", "6", "--keep", "2")
	if err != nil {
		t.Fatalf("--resume-from step-4: %v\n%s", err, stderr)
	}
	if !strings.Contains(stderr, "resume: from "+filepath.Join(ckpts, "step-4.pt")+" (step 4)") {
		t.Errorf("the resume does not say which checkpoint it continued from:\n%s", stderr)
	}
	if s := steps(); !reflect.DeepEqual(s, []int{4, 6}) {
		t.Errorf("after --resume-from step-4 --max-steps 6 --keep 2: %v, want step-4 and step-6", s)
	}
	var args runArgsFile
	raw, err := os.ReadFile(filepath.Join(run, ArgsFile))
	if err != nil || json.Unmarshal(raw, &args) != nil {
		t.Fatalf("args.json: %v", err)
	}
	if string(args.Flags["keep"]) != "2" || args.Flags["resume-from"] != nil {
		t.Errorf("args.json records keep %s, resume-from %s; want 2 and nothing", args.Flags["keep"], args.Flags["resume-from"])
	}
}
