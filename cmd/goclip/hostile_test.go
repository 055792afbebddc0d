package main

// Crafted .pt files (torch/serialize/testdata/hostile, each under 1.1 kB but one)
// given to `goclip convert` end at once with exit status 1 and a one-line error
// naming the file, with no more memory than a run that fails on a missing file; and
// config.json files with absurd sizes given to `goclip info`.

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"
)

// runChild runs a goclip child process and returns its exit status, stderr,
// wall time and peak RSS in bytes.
func runChild(t *testing.T, args ...string) (int, string, time.Duration, int64) {
	t.Helper()
	cmd := childGoclip(t, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	start := time.Now()
	err := cmd.Run()
	elapsed := time.Since(start)
	code := 0
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		code = exit.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	rss := cmd.ProcessState.SysUsage().(*syscall.Rusage).Maxrss * 1024
	return code, stderr.String(), elapsed, rss
}

func TestConvertHostilePT(t *testing.T) {
	files, err := filepath.Glob("../../torch/serialize/testdata/hostile/*.pt")
	if err != nil || len(files) < 10 {
		t.Fatalf("hostile files: %v %v", files, err)
	}
	out := t.TempDir()
	// The baseline: the same command on a file that does not exist.
	code, _, baseTime, baseRSS := runChild(t, "convert", "--config", "tiny", filepath.Join(out, "missing.pt"), filepath.Join(out, "x"))
	if code != 1 {
		t.Fatalf("missing file: exit %d", code)
	}
	t.Logf("baseline: %v, %d MB", baseTime, baseRSS>>20)
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), ".pt")
		t.Run(name, func(t *testing.T) {
			code, stderr, elapsed, rss := runChild(t, "convert", "--config", "tiny", f, filepath.Join(out, name))
			t.Logf("exit %d in %v, %d MB: %s", code, elapsed, rss>>20, strings.TrimSpace(stderr))
			if code != 1 {
				t.Errorf("exit status %d, want 1", code)
			}
			if lines := strings.Split(strings.TrimSpace(stderr), "\n"); len(lines) != 1 || !strings.HasPrefix(lines[0], "goclip: ") || !strings.Contains(lines[0], f) {
				t.Errorf("stderr is not one line naming %s: %q", f, stderr)
			}
			if elapsed > 2*baseTime+time.Second { // a loaded machine slows both
				t.Errorf("took %v, the baseline %v", elapsed, baseTime)
			}
			if rss > baseRSS+128<<20 {
				t.Errorf("peak RSS %d MB, the baseline %d MB", rss>>20, baseRSS>>20)
			}
		})
	}
}

// TestInfoHostileConfig: `goclip info --config FILE` on a config.json with a billion
// layers, a vocabulary of 2^62 or a width of 1e9 is an error naming the key, at once,
// allocating little (a billion layers ran out of memory; 2^62 printed a wrapped count).
func TestInfoHostileConfig(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct{ json, want string }{
		{`{"vision_config": {"num_hidden_layers": 1000000000}}`, "vision_config.num_hidden_layers must be at most 256, got 1000000000"},
		{`{"text_config": {"vocab_size": 4611686018427387904}}`, "text_config.vocab_size must be at most 2097152, got 4611686018427387904"},
		{`{"text_config": {"hidden_size": 1000000000, "num_attention_heads": 1}}`, "text_config.hidden_size must be at most 16384"},
	} {
		path := filepath.Join(dir, "config.json")
		if err := os.WriteFile(path, []byte(c.json), 0o644); err != nil {
			t.Fatal(err)
		}
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		start := time.Now()
		out, _, err := runGoclip(t, "info", "--config", path, "--lora-r", "8")
		elapsed := time.Since(start)
		runtime.ReadMemStats(&after)
		if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), path) {
			t.Errorf("%s: %q, %v; want an error naming %s and saying %q", c.json, out, err, path, c.want)
		}
		if alloc := after.TotalAlloc - before.TotalAlloc; elapsed > time.Second || alloc > 16<<20 {
			t.Errorf("%s: %v and %d bytes", c.json, elapsed, alloc)
		}
	}
}
