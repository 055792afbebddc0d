package dataset

import (
	"archive/tar"
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"goclip/internal/atomicfile"
)

// ShardWriter writes samples into webdataset tar shards PREFIX-000000.tar,
// PREFIX-000001.tar, ... of at most PerShard samples each, and at Close a SizesFile
// giving their counts. Each shard is written to a temporary file and renamed when
// complete, so a shard on disk is always whole.
type ShardWriter struct {
	Dir, Prefix string
	PerShard    int

	shards []string // base names written
	sizes  []int

	tmp *os.File
	bw  *bufio.Writer
	tw  *tar.Writer
	n   int // samples in the open shard
}

// NewShardWriter makes a writer of shards in dir (created) named prefix-NNNNNN.tar.
func NewShardWriter(dir, prefix string, perShard int) (*ShardWriter, error) {
	if perShard < 1 {
		return nil, fmt.Errorf("shards: %d samples per shard: want at least 1", perShard)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	return &ShardWriter{Dir: dir, Prefix: prefix, PerShard: perShard}, nil
}

// ShardName is the base name of a writer's i-th shard.
func (w *ShardWriter) ShardName(i int) string { return fmt.Sprintf("%s-%06d.tar", w.Prefix, i) }

// Add writes one sample: members maps an extension ("jpg", "txt", "json") to its data,
// written as KEY.EXT in sorted extension order. key must be free of dots.
func (w *ShardWriter) Add(key string, members map[string][]byte) error {
	if key == "" || strings.ContainsAny(key, ".\x00") {
		return fmt.Errorf("shards: sample key %q: want a name without dots", key)
	}
	if w.tw == nil {
		f, err := os.CreateTemp(w.Dir, ".shard-*.tmp")
		if err != nil {
			return err
		}
		w.tmp, w.bw = f, bufio.NewWriterSize(f, 1<<20)
		w.tw = tar.NewWriter(w.bw)
	}
	exts := make([]string, 0, len(members))
	for e := range members {
		exts = append(exts, e)
	}
	sort.Strings(exts)
	for _, e := range exts {
		data := members[e]
		h := &tar.Header{Name: key + "." + e, Mode: 0o644, Size: int64(len(data)), Typeflag: tar.TypeReg, Format: tar.FormatUSTAR}
		if err := w.tw.WriteHeader(h); err != nil {
			return w.abort(err)
		}
		if _, err := w.tw.Write(data); err != nil {
			return w.abort(err)
		}
	}
	w.n++
	if w.n == w.PerShard {
		return w.finishShard()
	}
	return nil
}

func (w *ShardWriter) abort(err error) error {
	if w.tmp != nil {
		w.tmp.Close()
		os.Remove(w.tmp.Name())
		w.tmp, w.tw, w.bw = nil, nil, nil
	}
	return fmt.Errorf("shards: %w", err)
}

func (w *ShardWriter) finishShard() error {
	if w.tw == nil {
		return nil
	}
	err := w.tw.Close()
	if err == nil {
		err = w.bw.Flush()
	}
	if err == nil {
		err = w.tmp.Sync()
	}
	if err == nil {
		err = w.tmp.Close()
	} else {
		w.tmp.Close()
	}
	name := w.ShardName(len(w.shards))
	if err == nil {
		err = os.Rename(w.tmp.Name(), filepath.Join(w.Dir, name))
	}
	if err != nil {
		os.Remove(w.tmp.Name())
		w.tmp, w.tw, w.bw = nil, nil, nil
		return fmt.Errorf("shards: %s: %w", name, err)
	}
	w.shards = append(w.shards, name)
	w.sizes = append(w.sizes, w.n)
	w.tmp, w.tw, w.bw, w.n = nil, nil, nil, 0
	return nil
}

// Close finishes the last shard and writes SizesFile (merged with the counts of other
// shards it already lists, so several writers may share a folder). It returns the
// paths of the shards written.
func (w *ShardWriter) Close() ([]string, error) {
	if err := w.finishShard(); err != nil {
		return nil, err
	}
	sizesPath := filepath.Join(w.Dir, SizesFile)
	all := map[string]int{}
	if data, err := os.ReadFile(sizesPath); err == nil {
		if err := json.Unmarshal(data, &all); err != nil {
			return nil, fmt.Errorf("%s: %w", sizesPath, err)
		}
	}
	for i, s := range w.shards {
		all[s] = w.sizes[i]
	}
	if err := atomicfile.WriteJSON(sizesPath, all); err != nil {
		return nil, err
	}
	out := make([]string, len(w.shards))
	for i, s := range w.shards {
		out[i] = filepath.Join(w.Dir, s)
	}
	return out, nil
}
