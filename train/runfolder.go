package train

// The run folder's safety: a new run goes only into an empty folder or a goclip run's
// own, one process at a time holds it (an exclusive flock on RUN/.goclip-run, which
// also marks the folder as a run), and what killed writers left behind is swept.

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"goclip/internal/atomicfile"
	"goclip/internal/rundir"
)

// RunMarker is the file that marks a folder as a goclip run and that a running goclip
// holds locked. It records the pid and command line of the last process that held it.
const RunMarker = rundir.Marker

// RunDir is a run folder's path, with a method per file and folder of the run (see
// internal/rundir, the one owner of the layout): RunDir(out).Last() is
// RUN/checkpoints/last.pt.
type RunDir = rundir.Dir

// RunFolder is a run folder held exclusively by this process (see OpenRun).
type RunFolder struct {
	Dir     string
	lock    *os.File
	created bool // dir did not exist before OpenRun
	// Swept are the temporary files of killed writers that OpenRun removed.
	Swept []string
}

// runHolder is what RunMarker holds.
type runHolder struct {
	Format  string   `json:"format"`
	PID     int      `json:"pid"`
	Command []string `json:"command,omitempty"`
	Started string   `json:"started"`
}

// IsRunFolder reports whether dir is a goclip run: it holds RunMarker, or (a run of a
// release before the marker) args.json beside metrics.jsonl or checkpoints/last.pt.
func IsRunFolder(dir string) bool {
	rd := RunDir(dir)
	exists := func(path string) bool { _, err := os.Stat(path); return err == nil }
	return exists(rd.Marker()) || (exists(rd.Args()) && (exists(rd.Metrics()) || exists(rd.Last())))
}

// OpenRun takes the run folder dir for a run of this process: a new run (resume false)
// needs dir to be absent, empty, or a goclip run without a checkpoint (a run that
// stopped before writing one); a resumed run needs a goclip run with
// checkpoints/last.pt. It then locks dir (flock on RUN/.goclip-run, released by Close
// or when the process dies), failing at once, with the holder's pid, when another
// process holds it, and removes the temporary files that killed writers left in the
// run's folders. Every error names dir.
func OpenRun(dir string, resume bool) (*RunFolder, error) {
	if dir == "" {
		return nil, errors.New("train: no run folder (--out)")
	}
	rd := RunDir(dir)
	if resume && !IsRunFolder(dir) {
		return nil, fmt.Errorf("--resume: %s is not a goclip run folder", dir)
	}
	if err := CheckRunFolder(dir, resume); err != nil {
		return nil, err
	}
	if !resume && !IsRunFolder(dir) {
		entries, err := os.ReadDir(dir)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("--out %s: %w", dir, err)
		}
		if len(entries) > 0 {
			names := make([]string, 0, 4)
			for _, e := range entries[:min(len(entries), 4)] {
				names = append(names, e.Name())
			}
			more := ""
			if len(entries) > 4 {
				more = fmt.Sprintf(", ... %d more", len(entries)-4)
			}
			return nil, fmt.Errorf("--out %s is not empty and is not a goclip run (it holds %s%s): choose a new or empty folder",
				dir, strings.Join(names, ", "), more)
		}
	}
	_, statErr := os.Stat(dir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("--out %s: %w", dir, err)
	}
	path := rd.Marker()
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("--out %s: %w", dir, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		defer f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("%s is in use by another goclip process%s: wait for it to end or choose another --out", dir, holderOf(f))
		}
		return nil, fmt.Errorf("locking %s: %w", path, err)
	}
	rf := &RunFolder{Dir: dir, lock: f, created: errors.Is(statErr, os.ErrNotExist)}
	h := runHolder{Format: "goclip-run/1", PID: os.Getpid(), Command: os.Args, Started: time.Now().UTC().Format(time.RFC3339)}
	data, _ := json.Marshal(h)
	if err := f.Truncate(0); err == nil {
		_, err = f.WriteAt(append(data, '\n'), 0)
	}
	// Holding the lock, no other goclip writes here: every temporary is debris.
	for _, sub := range rd.Folders() {
		gone, err := atomicfile.RemoveStale(sub, true)
		rf.Swept = append(rf.Swept, gone...)
		if err != nil {
			rf.Close()
			return nil, fmt.Errorf("--out %s: removing stale temporary files: %w", dir, err)
		}
	}
	return rf, nil
}

// CheckRunFolder is the fresh-run/resume rule on dir's checkpoint, which OpenRun
// applies before it takes the folder: a new run (resume false) needs no
// checkpoints/last.pt in dir, a resumed run needs one. Ranks other than 0 of a
// distributed run, which do not take the folder, check only this.
func CheckRunFolder(dir string, resume bool) error {
	last := RunDir(dir).Last()
	_, err := os.Stat(last)
	switch {
	case resume && err != nil:
		return fmt.Errorf("--resume: %s has no checkpoint to resume from (%s)", dir, last)
	case !resume && err == nil:
		return fmt.Errorf("%s already holds a run (%s): continue it with --resume, or choose another --out", dir, last)
	}
	return nil
}

// Started reports whether the run in dir has written anything of its own: a checkpoint
// or a metrics row. A command that created dir removes it when a run fails before it
// started.
func Started(dir string) bool {
	rd := RunDir(dir)
	if _, err := os.Stat(rd.Last()); err == nil {
		return true
	}
	st, err := os.Stat(rd.Metrics())
	return err == nil && st.Size() > 0
}

// holderOf describes the process recorded in a locked marker: " (pid 123: goclip
// train ...)", or "" when the file says nothing readable.
func holderOf(f *os.File) string {
	data, err := io.ReadAll(io.NewSectionReader(f, 0, 1<<16))
	if err != nil {
		return ""
	}
	var h runHolder
	if json.Unmarshal(bytes.TrimSpace(data), &h) != nil || h.PID <= 0 {
		return ""
	}
	s := fmt.Sprintf(" (pid %d", h.PID)
	if len(h.Command) > 0 {
		s += ": " + strings.Join(h.Command, " ")
	}
	if h.Started != "" {
		s += ", since " + h.Started
	}
	return s + ")"
}

// Close releases the lock; the marker stays.
func (r *RunFolder) Close() error {
	if r == nil || r.lock == nil {
		return nil
	}
	err := r.lock.Close() // closing the descriptor releases the flock
	r.lock = nil
	return err
}

// Abandon releases the folder after a failed start: a folder that OpenRun created is
// removed when the run wrote nothing of its own (see Started), so that a failed start
// leaves no folder behind.
func (r *RunFolder) Abandon() error {
	if r == nil {
		return nil
	}
	err := r.Close()
	if r.created && !Started(r.Dir) {
		if rerr := os.RemoveAll(r.Dir); err == nil {
			err = rerr
		}
	}
	return err
}

// reportSwept tells the log which temporary files OpenRun removed.
func reportSwept(opts Options, rf *RunFolder) {
	if len(rf.Swept) == 0 {
		return
	}
	names := make([]string, len(rf.Swept))
	for i, p := range rf.Swept {
		names[i], _ = filepath.Rel(rf.Dir, p)
	}
	fmt.Fprintf(logw(opts), "run folder %s: removed %d temporary file(s) left by an interrupted process: %s\n", rf.Dir, len(names), strings.Join(names, ", "))
}
