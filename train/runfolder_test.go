package train

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestCheckRunFolder: a new run needs no checkpoints/last.pt, a resumed run needs one,
// and the errors name the folder and the checkpoint; OpenRun applies the same rule.
func TestCheckRunFolder(t *testing.T) {
	dir := t.TempDir()
	rd := RunDir(dir)
	if err := CheckRunFolder(dir, false); err != nil {
		t.Fatalf("a fresh run in an empty folder: %v", err)
	}
	err := CheckRunFolder(dir, true)
	if err == nil || !strings.Contains(err.Error(), "--resume: "+dir) || !strings.Contains(err.Error(), rd.Last()) {
		t.Fatalf("resuming without a checkpoint gave %v, want an error naming %s", err, rd.Last())
	}
	if err := os.MkdirAll(rd.Checkpoints(), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(rd.Last(), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := CheckRunFolder(dir, true); err != nil {
		t.Fatalf("resuming with a checkpoint: %v", err)
	}
	err = CheckRunFolder(dir, false)
	if err == nil || !strings.Contains(err.Error(), "already holds a run") || !strings.Contains(err.Error(), "--resume") {
		t.Fatalf("a fresh run over a checkpoint gave %v", err)
	}
	if _, oerr := OpenRun(dir, false); oerr == nil || oerr.Error() != err.Error() {
		t.Fatalf("OpenRun over a checkpoint gave %v, want CheckRunFolder's %v", oerr, err)
	}
}

// TestStarted: a run has started once it wrote a checkpoint or a metrics row; an empty
// metrics.jsonl (what a run writes before its first row) is not a start.
func TestStarted(t *testing.T) {
	dir := t.TempDir()
	rd := RunDir(dir)
	if Started(dir) {
		t.Fatal("an empty folder counts as started")
	}
	if err := os.WriteFile(rd.Metrics(), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if Started(dir) {
		t.Fatal("an empty metrics.jsonl counts as started")
	}
	if err := os.WriteFile(rd.Metrics(), []byte("{\"step\":1}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if !Started(dir) {
		t.Fatal("a metrics row does not count as started")
	}
	other := t.TempDir()
	if err := os.MkdirAll(RunDir(other).Checkpoints(), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(RunDir(other).Last(), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if !Started(other) {
		t.Fatal("a checkpoint does not count as started")
	}
}

// TestAbandon: after a failed start, a folder OpenRun created is removed unless the run
// wrote into it; a folder that was there before stays.
func TestAbandon(t *testing.T) {
	open := func(dir string) *RunFolder {
		rf, err := OpenRun(dir, false)
		if err != nil {
			t.Fatal(err)
		}
		return rf
	}
	made := filepath.Join(t.TempDir(), "new")
	if err := open(made).Abandon(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(made); err == nil {
		t.Fatalf("Abandon left %s, which OpenRun created", made)
	}
	given := t.TempDir()
	if err := open(given).Abandon(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(given); err != nil {
		t.Fatalf("Abandon removed %s, which was there before: %v", given, err)
	}
	started := filepath.Join(t.TempDir(), "started")
	rf := open(started)
	if err := os.WriteFile(RunDir(started).Metrics(), []byte("{\"step\":1}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := rf.Abandon(); err != nil {
		t.Fatal(err)
	}
	if !Started(started) {
		t.Fatalf("Abandon removed %s, whose run wrote a metrics row", started)
	}
	var none *RunFolder
	if err := none.Abandon(); err != nil {
		t.Fatal(err)
	}
}
