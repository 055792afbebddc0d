// Package atomicfile writes files atomically: the data goes to a temporary file in the
// destination's folder, which is flushed, synced to disk and renamed over the
// destination, so that a reader (or a run that crashed half-way) sees either the old
// file or the whole new one, never part of it.
//
// Files are written with mode 0644. On any error the temporary file is removed and the
// destination is left as it was. Errors are returned as they come, for the caller to
// wrap with its own context.
//
// It is a leaf: it imports nothing of goclip, so every package may use it.
package atomicfile

import (
	"bufio"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
)

// WriteFile writes path with write. The writer passed to write is buffered, and its
// errors are sticky: a failed write also fails the final flush, so write may leave the
// errors of single writes unchecked.
func WriteFile(path string, write func(w io.Writer) error) (err error) {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
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
