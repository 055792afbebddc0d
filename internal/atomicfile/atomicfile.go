// Package atomicfile writes files atomically: the data goes to a temporary file in the
// destination's folder, which is flushed, synced to disk and renamed over the
// destination, so that a reader (or a run that crashed half-way) sees either the old
// file or the whole new one, never part of it.
//
// Files are written with mode 0644. On any error the temporary file is removed and the
// destination is left as it was. Errors are returned as they come, for the caller to
// wrap with its own context.
//
// Temporary files are named ".NAME.tmp-PID-RANDOM" (TempPattern), after the destination
// and the writing process, so that RemoveStale can sweep what a killed writer left
// behind without touching a live writer's file.
//
// It is a leaf: it imports nothing of goclip, so every package may use it.
package atomicfile

import (
	"bufio"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
)

// TempPattern is the os.CreateTemp / os.MkdirTemp pattern of a temporary file or folder
// that becomes name (a base name) when complete: ".name.tmp-PID-*".
func TempPattern(name string) string {
	return "." + name + ".tmp-" + strconv.Itoa(os.Getpid()) + "-*"
}

// tempWriter parses a temporary entry's name: the destination name and the writer's
// pid (0 when the name carries none, as older releases wrote them).
func tempWriter(entry string) (name string, pid int, ok bool) {
	if !strings.HasPrefix(entry, ".") {
		return "", 0, false
	}
	i := strings.LastIndex(entry, ".tmp-")
	if i <= 1 {
		return "", 0, false
	}
	name, rest := entry[1:i], entry[i+len(".tmp-"):]
	if j := strings.IndexByte(rest, '-'); j > 0 {
		if n, err := strconv.Atoi(rest[:j]); err == nil && n > 0 {
			pid = n
		}
	}
	return name, pid, true
}

// alive reports whether process pid exists.
func alive(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

// RemoveStale removes the temporary files and folders (TempPattern) in dir whose
// writer is gone: its pid names no running process, or the name carries no pid. With
// names given, only the temporaries of those destinations are considered. With all
// set, the writer's liveness is not asked (for a folder the caller holds exclusively).
// It returns the paths removed; a missing dir is no error.
func RemoveStale(dir string, all bool, names ...string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var removed []string
	for _, e := range entries {
		name, pid, ok := tempWriter(e.Name())
		if !ok || (len(names) > 0 && !slices.Contains(names, name)) {
			continue
		}
		if !all && pid > 0 && (pid == os.Getpid() || alive(pid)) {
			continue
		}
		path := filepath.Join(dir, e.Name())
		if err := os.RemoveAll(path); err != nil {
			return removed, err
		}
		removed = append(removed, path)
	}
	return removed, nil
}

// WriteFile writes path with write. The writer passed to write is buffered, and its
// errors are sticky: a failed write also fails the final flush, so write may leave the
// errors of single writes unchecked.
func WriteFile(path string, write func(w io.Writer) error) (err error) {
	f, err := os.CreateTemp(filepath.Dir(path), TempPattern(filepath.Base(path)))
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
		}
	}()
	bw := bufio.NewWriterSize(f, 1<<20)
	if err = write(bw); err != nil {
		return err
	}
	if err = bw.Flush(); err != nil {
		return err
	}
	if err = f.Chmod(0o644); err != nil {
		return err
	}
	if err = f.Sync(); err != nil {
		return err
	}
	if err = f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// WriteBytes writes data to path.
func WriteBytes(path string, data []byte) error {
	return WriteFile(path, func(w io.Writer) error {
		_, err := w.Write(data)
		return err
	})
}

// WriteJSON writes v to path as JSON indented by two spaces, with a final newline (the
// layout of Hugging Face's config files).
func WriteJSON(path string, v any) error {
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return WriteBytes(path, append(data, '\n'))
}
