package dataset

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"

	"codeberg.org/sbinet/npyio/npy"

	"goclip/internal/atomicfile"
)

// The preprocessed cache holds every image resized and centre cropped to S x S
// (ResizeCropUint8), so that epochs read 3*S*S bytes an image instead of decoding.
//
// Layout: DIR/s<S>/index.json and DIR/s<S>/shard-NNNNN.npy, each shard a NumPy array
// of shape (N, S, S, 3), dtype uint8, images in item order (numpy.load opens them;
// index.json maps each image to its shard and row). Each size has its own folder. An
// image's entry is valid while its file keeps the size and modification time recorded
// in the index: the loader serves stale or unknown images by decoding them, and
// BuildCache rebuilds a cache whose entries no longer match the items. Images that
// failed to decode are recorded (with the reason) so that loaders skip them without
// trying again.
//
// The default location is DefaultCacheDir(data dir), i.e. DATA/.goclip-cache.

// DefaultCacheDir is where `goclip cache` writes and the trainer looks by default.
func DefaultCacheDir(dataDir string) string { return filepath.Join(dataDir, ".goclip-cache") }

const (
	cacheVersion   = 1
	cacheShardSize = 1024 // images per shard
	cacheIndexName = "index.json"
)

// CacheEntry is one image of a cache index.
type CacheEntry struct {
	Image   string `json:"image"`    // absolute path of the source file
	Name    string `json:"name"`     // Item.Name
	Bytes   int64  `json:"bytes"`    // source size
	MTimeNs int64  `json:"mtime_ns"` // source modification time
	Shard   int    `json:"shard"`    // -1: the image could not be read
	Row     int    `json:"row"`
	Reason  Reason `json:"reason,omitempty"` // why it could not be read
	Error   string `json:"error,omitempty"`
}

// CacheIndex is index.json.
type CacheIndex struct {
	Version int          `json:"version"`
	Size    int          `json:"size"`
	Shards  []string     `json:"shards"`
	Entries []CacheEntry `json:"entries"`
}

// CacheOptions tune BuildCache.
type CacheOptions struct {
	Workers   int                   // decoders (default runtime.NumCPU())
	MaxPixels int                   // see ReadImage
	Force     bool                  // rebuild even when up to date
	Progress  func(done, total int) // (0, total) when a build starts, then after each image (up to total), from one goroutine; not called when up to date
	Report    *Report               // unreadable images are recorded here when set
}

// CacheStats says what BuildCache did.
type CacheStats struct {
	Dir      string // the size's folder, DIR/s<S>
	Images   int    // images cached
	Failed   int    // images that could not be read
	Bytes    int64  // size of the shards
	UpToDate bool   // nothing was done: the cache already matched
}

// CacheSizeDir is the folder of the size-S cache under dir.
func CacheSizeDir(dir string, size int) string {
	return filepath.Join(dir, "s"+strconv.Itoa(size))
}

type sourceStat struct {
	abs   string
	bytes int64
	mtime int64
	err   error
}

func statSource(path string) sourceStat {
	abs, err := filepath.Abs(path)
	if err != nil {
		return sourceStat{abs: path, err: err}
	}
	fi, err := os.Stat(abs)
	if err != nil {
		return sourceStat{abs: abs, err: err}
	}
	return sourceStat{abs: abs, bytes: fi.Size(), mtime: fi.ModTime().UnixNano()}
}

func readCacheIndex(dir string) (*CacheIndex, error) {
	raw, err := os.ReadFile(filepath.Join(dir, cacheIndexName))
	if err != nil {
		return nil, err
	}
	var idx CacheIndex
	if err := json.Unmarshal(raw, &idx); err != nil {
		return nil, fmt.Errorf("cache index %s: %w", filepath.Join(dir, cacheIndexName), err)
	}
	return &idx, nil
}

// BuildCache decodes and preprocesses items (resize + centre crop to size) into the
// cache under dir (see CacheSizeDir); it does nothing when the cache there already
// matches the items' files (unless opts.Force). Unreadable images are recorded, not
// fatal; I/O errors on the cache itself are.
func BuildCache(items []Item, dir string, size int, opts CacheOptions) (*CacheStats, error) {
	if size <= 0 {
		return nil, fmt.Errorf("cache: bad image size %d", size)
	}
	sdir := CacheSizeDir(dir, size)
	stats := &CacheStats{Dir: sdir}
	srcs := make([]sourceStat, len(items))
	for i, it := range items {
		srcs[i] = statSource(it.Image)
	}
	if !opts.Force {
		if c, err := OpenCache(dir, size); err == nil {
			fresh := true
			for i := range items {
				e, ok := c.byPath[srcs[i].abs]
				if ok && srcs[i].err != nil && e.Reason == MissingImage {
					continue // still missing
				}
				if !ok || srcs[i].err != nil || e.Bytes != srcs[i].bytes || e.MTimeNs != srcs[i].mtime {
					fresh = false
					break
				}
			}
			c.Close()
			if fresh {
				stats.UpToDate = true
				for _, e := range c.index.Entries {
					if e.Shard < 0 {
						stats.Failed++
					} else {
						stats.Images++
					}
				}
				return stats, nil
			}
		}
	}
	if err := os.MkdirAll(sdir, 0o755); err != nil {
		return nil, fmt.Errorf("cache: %w", err)
	}
	// Invalidate first: a crash part way leaves no index, hence no cache.
	if err := os.Remove(filepath.Join(sdir, cacheIndexName)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("cache: %w", err)
	}
	old, _ := filepath.Glob(filepath.Join(sdir, "shard-*.npy"))
	for _, p := range old {
		os.Remove(p)
	}
	workers := opts.Workers
	if workers <= 0 {
		workers = runtime.NumCPU()
	}
	idx := &CacheIndex{Version: cacheVersion, Size: size}
	seen := make(map[string]bool, len(items))
	done := 0
	if opts.Progress != nil {
		opts.Progress(0, len(items))
	}
	for start := 0; start < len(items); start += cacheShardSize {
		end := min(start+cacheShardSize, len(items))
		bufs := make([][]uint8, end-start)
		errs := make([]error, end-start)
		var wg sync.WaitGroup
		next := make(chan int)
		for range workers {
			wg.Go(func() {
				for i := range next {
					if srcs[i].err != nil {
						errs[i-start] = &ImageError{items[i].Image, srcs[i].err}
						continue
					}
					img, err := ReadImage(items[i].Image, opts.MaxPixels)
					if err != nil {
						errs[i-start] = err
						continue
					}
					bufs[i-start] = ResizeCropUint8(img, size).Pix
				}
			})
		}
		for i := start; i < end; i++ {
			next <- i
		}
		close(next)
		wg.Wait()

		shard := len(idx.Shards)
		name := fmt.Sprintf("shard-%05d.npy", shard)
		var rows [][]uint8
		for i := start; i < end; i++ {
			done++
			if opts.Progress != nil {
				opts.Progress(done, len(items))
			}
			if seen[srcs[i].abs] {
				continue
			}
			seen[srcs[i].abs] = true
			e := CacheEntry{Image: srcs[i].abs, Name: items[i].Name, Bytes: srcs[i].bytes, MTimeNs: srcs[i].mtime, Shard: -1}
			if err := errs[i-start]; err != nil {
				e.Reason, e.Error = imageReason(err), err.Error()
				stats.Failed++
				if opts.Report != nil {
					opts.Report.AddSkippedImage(e.Reason, itemLabel(items[i]))
				}
			} else {
				e.Shard, e.Row = shard, len(rows)
				rows = append(rows, bufs[i-start])
				stats.Images++
			}
			idx.Entries = append(idx.Entries, e)
		}
		if len(rows) == 0 {
			continue
		}
		n, err := writeShard(filepath.Join(sdir, name), rows, size)
		if err != nil {
			return nil, err
		}
		stats.Bytes += n
		idx.Shards = append(idx.Shards, name)
	}
	raw, err := json.Marshal(idx)
	if err != nil {
		return nil, err
	}
	if err := atomicfile.WriteBytes(filepath.Join(sdir, cacheIndexName), raw); err != nil {
		return nil, fmt.Errorf("cache: %w", err)
	}
	return stats, nil
}

// imageReason classifies a ReadImage error for the Report.
func imageReason(err error) Reason {
	switch {
	case errors.Is(err, os.ErrNotExist):
		return MissingImage
	case errors.Is(err, ErrTooManyPixels):
		return OversizedImage
	}
	return UnreadableImage
}

func itemLabel(it Item) string {
	if it.Name != "" {
		return it.Name
	}
	return it.Image
}

// writeShard writes rows (each S*S*3 bytes, HWC) as one (N, S, S, 3) uint8 .npy file.
//
// The header is the NumPy format 1.0 one; the data is streamed rather than passed to
// npyio's Write, which walks every element by reflection (about 20 s for 30 MB).
// Shards are read back through npyio's header parser (OpenCache).
func writeShard(path string, rows [][]uint8, size int) (int64, error) {
	hdr := npyHeader("|u1", []int{len(rows), size, size, 3})
	err := atomicfile.WriteFile(path, func(w io.Writer) error {
		w.Write(hdr) // write errors are sticky: the flush reports them
		for _, r := range rows {
			w.Write(r)
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("cache: writing %s: %w", path, err)
	}
	return int64(len(hdr) + len(rows)*3*size*size), nil
}

// npyHeader is a NumPy format 1.0 header: magic, version, little-endian header length,
// the dict padded with spaces and a newline to a multiple of 64 bytes.
func npyHeader(descr string, shape []int) []byte {
	var dims bytes.Buffer
	dims.WriteByte('(')
	for i, d := range shape {
		if i > 0 {
			dims.WriteString(", ")
		}
		dims.WriteString(strconv.Itoa(d))
	}
	if len(shape) == 1 {
		dims.WriteByte(',')
	}
	dims.WriteByte(')')
	dict := fmt.Sprintf("{'descr': '%s', 'fortran_order': False, 'shape': %s, }", descr, dims.String())
	n := 10 + len(dict) + 1
	pad := (64 - n%64) % 64
	out := make([]byte, 0, n+pad)
	out = append(out, "\x93NUMPY\x01\x00"...)
	out = binary.LittleEndian.AppendUint16(out, uint16(len(dict)+pad+1))
	out = append(out, dict...)
	out = append(out, bytes.Repeat([]byte{' '}, pad)...)
	return append(out, '\n')
}

// Cache is an opened cache of one size, safe for concurrent reads.
type Cache struct {
	Size   int
	index  *CacheIndex
	byPath map[string]*CacheEntry
	shards []*os.File
	offset []int64 // data offset of each shard
}

// OpenCache opens the size-S cache under dir (see CacheSizeDir), checking each shard's
// header (read with npyio) against the index.
func OpenCache(dir string, size int) (*Cache, error) {
	sdir := CacheSizeDir(dir, size)
	idx, err := readCacheIndex(sdir)
	if err != nil {
		return nil, err
	}
	if idx.Version != cacheVersion || idx.Size != size {
		return nil, fmt.Errorf("cache %s: version %d size %d, want version %d size %d", sdir, idx.Version, idx.Size, cacheVersion, size)
	}
	c := &Cache{Size: size, index: idx, byPath: make(map[string]*CacheEntry, len(idx.Entries))}
	rows := make([]int, len(idx.Shards))
	for i := range idx.Entries {
		e := &idx.Entries[i]
		c.byPath[e.Image] = e
		if e.Shard >= len(idx.Shards) {
			return nil, fmt.Errorf("cache %s: entry %s names shard %d of %d", sdir, e.Image, e.Shard, len(idx.Shards))
		}
		if e.Shard >= 0 {
			rows[e.Shard] = max(rows[e.Shard], e.Row+1)
		}
	}
	for i, name := range idx.Shards {
		f, off, err := openShard(filepath.Join(sdir, name), rows[i], size)
		if err != nil {
			c.Close()
			return nil, err
		}
		c.shards = append(c.shards, f)
		c.offset = append(c.offset, off)
	}
	return c, nil
}

func openShard(path string, minRows, size int) (*os.File, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, 0, fmt.Errorf("cache: %w", err)
	}
	r, err := npy.NewReader(f)
	if err != nil {
		f.Close()
		return nil, 0, fmt.Errorf("cache shard %s: %w", path, err)
	}
	sh := r.Header.Descr.Shape
	dt := strings.Trim(r.Header.Descr.Type, `'"`)
	if dt != "|u1" && dt != "<u1" || r.Header.Descr.Fortran ||
		len(sh) != 4 || sh[0] < minRows || sh[1] != size || sh[2] != size || sh[3] != 3 {
		f.Close()
		return nil, 0, fmt.Errorf("cache shard %s: header %v, want uint8 (>=%d, %d, %d, 3)", path, r.Header, minRows, size, size)
	}
	off, err := f.Seek(0, io.SeekCurrent) // npyio read the header straight from f
	if err == nil {
		var fi os.FileInfo
		if fi, err = f.Stat(); err == nil && fi.Size() < off+int64(sh[0])*int64(3*size*size) {
			err = errors.New("file shorter than its header says")
		}
	}
	if err != nil {
		f.Close()
		return nil, 0, fmt.Errorf("cache shard %s: %w", path, err)
	}
	return f, off, nil
}

// Close closes the shard files.
func (c *Cache) Close() error {
	for _, f := range c.shards {
		f.Close()
	}
	c.shards = nil
	return nil
}

// Len is the number of images the index lists (cached or failed).
func (c *Cache) Len() int { return len(c.index.Entries) }

// Lookup finds the valid entry for the image at path: ok is false when the cache does
// not hold it or the file changed since (size or modification time). An entry with
// Shard < 0 records an image that could not be read (and, for MissingImage, still
// does not exist).
func (c *Cache) Lookup(path string) (e CacheEntry, ok bool) {
	s := statSource(path)
	p, found := c.byPath[s.abs]
	if found && p.Reason == MissingImage && errors.Is(s.err, os.ErrNotExist) {
		return *p, true // still missing
	}
	if !found || s.err != nil || p.Bytes != s.bytes || p.MTimeNs != s.mtime {
		return CacheEntry{}, false
	}
	return *p, true
}

// ReadInto reads a cached image (S*S*3 bytes, HWC) into dst.
func (c *Cache) ReadInto(e CacheEntry, dst []uint8) error {
	n := 3 * c.Size * c.Size
	if e.Shard < 0 || e.Shard >= len(c.shards) || len(dst) < n {
		return fmt.Errorf("cache: no image for %s", e.Image)
	}
	_, err := c.shards[e.Shard].ReadAt(dst[:n], c.offset[e.Shard]+int64(e.Row)*int64(n))
	if err != nil {
		return fmt.Errorf("cache: reading %s: %w", e.Image, err)
	}
	return nil
}
