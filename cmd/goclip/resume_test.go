package main

// Ctrl-C and --resume end to end: a real SIGINT sent to `goclip train` mid-epoch, then
// the same command with --resume, ends with the same validation loss as a run that was
// never interrupted (CPU, fp32, one thread).

import (
	"encoding/json"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// childGoclip is a goclip process: this test binary re-run as TestLaunchChild, which
// runs the app with args.
func childGoclip(t *testing.T, args ...string) *exec.Cmd {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, append([]string{"-test.run=^TestLaunchChild$", "--"}, args...)...)
	cmd.Env = append(os.Environ(), "GOCLIP_LAUNCH_CHILD=1")
	return cmd
}

// lastValLoss is the val_loss of the last evaluation row of RUN/metrics.jsonl.
func lastValLoss(t *testing.T, run string) float64 {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(run, "metrics.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	v := math.NaN()
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		var row struct {
			ValLoss *float64 `json:"val_loss"`
		}
		if err := json.Unmarshal([]byte(line), &row); err != nil {
			t.Fatalf("%s: %v", line, err)
		}
		if row.ValLoss != nil {
			v = *row.ValLoss
		}
	}
	return v
}

func TestSIGINTThenResumeMatchesUninterrupted(t *testing.T) {
	if testing.Short() {
		t.Skip("trains three small runs")
	}
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	mustGoclip(t, "synth", "--out", data, "--images", "120", "--size", "32", "--seed", "4")
	// 108 training images: 6 steps of 16 per epoch, 2 epochs.
	args := func(out string) []string {
		return []string{"train", "--config", "tiny", "--data", data, "--out", out, "--epochs", "2",
			"--batch-size", "16", "--threads", "1", "--workers", "2", "--device", "cpu",
			"--precision", "fp32", "--log-every", "1", "--warmup", "2", "--seed", "9"}
	}

	whole := filepath.Join(dir, "whole")
	if out, err := childGoclip(t, args(whole)...).CombinedOutput(); err != nil {
		t.Fatalf("uninterrupted run: %v\n%s", err, out)
	}

	run := filepath.Join(dir, "interrupted")
	// Interrupt during the first epoch, once two steps are logged.
	exit, msg := interruptAfterSteps(t, run, 2, args(run)...)
	if exit == nil {
		t.Fatalf("an interrupted run exited 0\n%s", msg)
	}
	if !strings.Contains(msg, "--resume") || !strings.Contains(msg, "last.pt") {
		t.Fatalf("the interrupted run did not say how to resume:\n%s", msg)
	}
	steps := len(trainLossesQuiet(run))
	if steps >= 6 {
		t.Fatalf("interrupted after %d steps: not inside the first epoch (6 steps)", steps)
	}

	if out, err := childGoclip(t, append(args(run), "--resume")...).CombinedOutput(); err != nil {
		t.Fatalf("resumed run: %v\n%s", err, out)
	}
	want, got := lastValLoss(t, whole), lastValLoss(t, run)
	t.Logf("interrupted after step %d; final validation loss %.7f resumed, %.7f uninterrupted", steps, got, want)
	if math.IsNaN(got) || math.Abs(got-want) > 1e-5 {
		t.Fatalf("final validation loss %.7f after SIGINT and --resume, %.7f uninterrupted (tolerance 1e-5)", got, want)
	}
}

// interruptAfterSteps runs goclip with args as a child process, sends it SIGINT once
// the run folder run has logged steps training steps, and returns how the child exited
// and what it wrote to stderr. It fails the test when the run ends before that, logs no
// step within 2 minutes, or is still running a minute after the signal.
func interruptAfterSteps(t *testing.T, run string, steps int, args ...string) (exit error, stderr string) {
	t.Helper()
	cmd := childGoclip(t, args...)
	var errOut strings.Builder
	cmd.Stderr = &errOut
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	deadline := time.Now().Add(2 * time.Minute)
	for len(trainLossesQuiet(run)) < steps {
		select {
		case err := <-done:
			t.Fatalf("the run ended before it was interrupted: %v\n%s", err, errOut.String())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			t.Fatalf("no training step after 2 minutes\n%s", errOut.String())
		}
	}
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case exit = <-done:
	case <-time.After(time.Minute):
		cmd.Process.Kill()
		t.Fatalf("still running a minute after SIGINT\n%s", errOut.String())
	}
	return exit, errOut.String()
}
