package atomicfile

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"testing"
)

func TestWriteFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "f.json")
	if err := WriteJSON(path, map[string]int{"a": 1}); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(path); string(got) != "{\n  \"a\": 1\n}\n" {
		t.Errorf("WriteJSON wrote %q", got)
	}
	if st, err := os.Stat(path); err != nil {
		t.Fatal(err)
	} else if st.Mode().Perm() != 0o644 {
		t.Errorf("mode %v, want 0644", st.Mode().Perm())
	}

	// A failed write leaves the old file and no temporary file.
	boom := errors.New("boom")
	err := WriteFile(path, func(w io.Writer) error {
		io.WriteString(w, "half")
		return boom
	})
	if !errors.Is(err, boom) {
		t.Errorf("WriteFile error %v, want boom", err)
	}
	if got, _ := os.ReadFile(path); string(got) != "{\n  \"a\": 1\n}\n" {
		t.Errorf("after a failed write: %q", got)
	}
	if err := WriteBytes(path, []byte("new")); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(path); string(got) != "new" {
		t.Errorf("WriteBytes wrote %q", got)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Errorf("%d entries in the folder, want 1 (temporary files left?)", len(ents))
	}
}

// TestRemoveStale sweeps what a killed writer left (a file and a folder named after a
// dead pid, and one of an older release without a pid) and keeps a live writer's file
// and unrelated files.
func TestRemoveStale(t *testing.T) {
	dir := t.TempDir()
	// A pid that is certainly dead: a child that has exited and been reaped.
	p, err := os.StartProcess("/bin/true", []string{"true"}, &os.ProcAttr{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Wait(); err != nil {
		t.Fatal(err)
	}
	dead := p.Pid
	mk := func(name string, folder bool) string {
		path := filepath.Join(dir, name)
		if folder {
			if err := os.MkdirAll(filepath.Join(path, "x"), 0o755); err != nil {
				t.Fatal(err)
			}
		} else if err := os.WriteFile(path, []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
		return path
	}
	staleFile := mk(".last.pt.tmp-"+itoa(dead)+"-123", false)
	staleDir := mk(".model.tmp-"+itoa(dead)+"-456", true)
	legacy := mk(".args.json.tmp-789", false)
	live := mk(".metrics.jsonl.tmp-"+itoa(os.Getpid())+"-1", false)
	keep := mk("last.pt", false)
	hidden := mk(".hidden", false)

	// Only the named destination.
	got, err := RemoveStale(dir, false, "last.pt")
	if err != nil || len(got) != 1 || got[0] != staleFile {
		t.Fatalf("RemoveStale(last.pt) = %v, %v; want [%s]", got, err, staleFile)
	}
	got, err = RemoveStale(dir, false)
	if err != nil || len(got) != 2 {
		t.Fatalf("RemoveStale = %v, %v; want the stale folder and the legacy file", got, err)
	}
	for _, p := range []string{staleFile, staleDir, legacy} {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Errorf("%s survived the sweep", p)
		}
	}
	for _, p := range []string{live, keep, hidden} {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("%s was removed: %v", p, err)
		}
	}
	// all: the live writer's file goes too (the caller holds the folder).
	if got, err := RemoveStale(dir, true); err != nil || len(got) != 1 || got[0] != live {
		t.Errorf("RemoveStale(all) = %v, %v; want [%s]", got, err, live)
	}
	if got, err := RemoveStale(filepath.Join(dir, "absent"), false); err != nil || got != nil {
		t.Errorf("RemoveStale(absent) = %v, %v", got, err)
	}
	// WriteFile's temporaries carry this process's pid.
	if pat := TempPattern("f"); pat != ".f.tmp-"+itoa(os.Getpid())+"-*" {
		t.Errorf("TempPattern = %q", pat)
	}
}

func itoa(n int) string { return strconv.Itoa(n) }
