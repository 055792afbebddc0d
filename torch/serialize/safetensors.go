package serialize

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"unicode/utf8"

	"goclip/internal/atomicfile"
)

// maxSafetensorsHeader is the reference implementation's limit on the JSON
// header (100 MB).
const maxSafetensorsHeader = 100_000_000

// metadataKey is the header entry that holds string metadata, not a tensor.
const metadataKey = "__metadata__"

// TensorInfo describes one tensor of a safetensors file.
type TensorInfo struct {
	DType DType
	Shape []int64
	// DataOffsets are the byte range [begin, end) of the tensor's data,
	// counted from the start of the data section (just after the header).
	DataOffsets [2]int64
}

// SafetensorsFile is an open safetensors file whose header has been read and
// validated; tensors are read one at a time.
type SafetensorsFile struct {
	path      string
	r         io.ReaderAt
	closer    io.Closer
	dataStart int64
	infos     map[string]TensorInfo
	metadata  map[string]string
}

// stError formats an error about a safetensors file and, when key is not
// empty, one of its tensors.
func stError(path, key, format string, args ...any) error {
	msg := fmt.Sprintf(format, args...)
	if key != "" {
		return fmt.Errorf("safetensors %s: tensor %q: %s", path, key, msg)
	}
	return fmt.Errorf("safetensors %s: %s", path, msg)
}

// OpenSafetensors opens path and validates its header against the file size.
func OpenSafetensors(path string) (*SafetensorsFile, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	s, err := newSafetensorsFile(path, f, st.Size())
	if err != nil {
		f.Close()
		return nil, err
	}
	s.closer = f
	return s, nil
}

// newSafetensorsFile reads and validates the header of size bytes of r;
// path names them in errors.
func newSafetensorsFile(path string, r io.ReaderAt, size int64) (*SafetensorsFile, error) {
	var lenBuf [8]byte
	if _, err := r.ReadAt(lenBuf[:], 0); err != nil {
		return nil, stError(path, "", "file too short for the 8-byte header length (%d bytes)", size)
	}
	n := binary.LittleEndian.Uint64(lenBuf[:])
	if err := checkHeaderLength(n, size); err != nil {
		return nil, stError(path, "", "%v", err)
	}
	header := make([]byte, n)
	if _, err := r.ReadAt(header, 8); err != nil {
		return nil, stError(path, "", "reading header: %v", err)
	}
	infos, meta, err := parseSafetensorsHeader(path, header, size-8-int64(n))
	if err != nil {
		return nil, err
	}
	return &SafetensorsFile{path: path, r: r, dataStart: 8 + int64(n), infos: infos, metadata: meta}, nil
}

// checkHeaderLength checks the header length n against the file size.
func checkHeaderLength(n uint64, fileSize int64) error {
	switch {
	case n > maxSafetensorsHeader:
		return fmt.Errorf("header length %d exceeds the limit of %d bytes (not a safetensors file?)", n, maxSafetensorsHeader)
	case int64(n) > fileSize-8:
		return fmt.Errorf("header length %d runs past the end of the file (%d bytes)", n, fileSize)
	case n < 2:
		return fmt.Errorf("header length %d is too small for a JSON object", n)
	}
	return nil
}

// headerEntry is one tensor's entry in the JSON header.
type headerEntry struct {
	DType       *string  `json:"dtype"`
	Shape       *[]int64 `json:"shape"`
	DataOffsets *[]int64 `json:"data_offsets"`
}

// parseSafetensorsHeader parses and validates a JSON header for a data
// section of dataLen bytes. It never panics, whatever the bytes.
func parseSafetensorsHeader(path string, header []byte, dataLen int64) (map[string]TensorInfo, map[string]string, error) {
	if !utf8.Valid(header) {
		return nil, nil, stError(path, "", "header is not valid UTF-8")
	}
	if len(header) == 0 || header[0] != '{' {
		return nil, nil, stError(path, "", "header does not start with '{' (not a safetensors file?)")
	}
	dec := json.NewDecoder(bytes.NewReader(header))
	if _, err := dec.Token(); err != nil {
		return nil, nil, stError(path, "", "invalid JSON header: %v", err)
	}
	infos := map[string]TensorInfo{}
	var meta map[string]string
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, nil, stError(path, "", "invalid JSON header: %v", err)
		}
		key, ok := tok.(string)
		if !ok {
			return nil, nil, stError(path, "", "invalid JSON header: key %v is not a string", tok)
		}
		if seen[key] {
			return nil, nil, stError(path, key, "appears twice in the header")
		}
		seen[key] = true
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return nil, nil, stError(path, key, "invalid JSON header: %v", err)
		}
		if key == metadataKey {
			if err := json.Unmarshal(raw, &meta); err != nil {
				return nil, nil, stError(path, "", "__metadata__ must map strings to strings: %v", err)
			}
			continue
		}
		info, err := parseHeaderEntry(raw, dataLen)
		if err != nil {
			return nil, nil, stError(path, key, "%v", err)
		}
		infos[key] = info
	}
	if _, err := dec.Token(); err != nil {
		return nil, nil, stError(path, "", "invalid JSON header: %v", err)
	}
	if rest := header[dec.InputOffset():]; len(bytes.TrimRight(rest, " \t\r\n")) != 0 {
		return nil, nil, stError(path, "", "header has %d bytes of trailing garbage after the JSON object", len(rest))
	}
	if err := checkLayout(path, infos, dataLen); err != nil {
		return nil, nil, err
	}
	return infos, meta, nil
}

// parseHeaderEntry decodes and checks one tensor's entry on its own.
func parseHeaderEntry(raw json.RawMessage, dataLen int64) (TensorInfo, error) {
	var e headerEntry
	if err := json.Unmarshal(raw, &e); err != nil {
		return TensorInfo{}, fmt.Errorf("invalid entry: %v", err)
	}
	if e.DType == nil || e.Shape == nil || e.DataOffsets == nil {
		return TensorInfo{}, errors.New("entry needs dtype, shape and data_offsets")
	}
	d := DType(*e.DType)
	if !d.Valid() {
		return TensorInfo{}, fmt.Errorf("unknown dtype %q", *e.DType)
	}
	offs := *e.DataOffsets
	if len(offs) != 2 {
		return TensorInfo{}, fmt.Errorf("data_offsets has %d values, want 2", len(offs))
	}
	begin, end := offs[0], offs[1]
	if begin < 0 || end < begin {
		return TensorInfo{}, fmt.Errorf("invalid data_offsets [%d, %d]", begin, end)
	}
	if end > dataLen {
		return TensorInfo{}, fmt.Errorf("data_offsets [%d, %d] run past the end of the file (data section holds %d bytes)", begin, end, dataLen)
	}
	want, err := byteLength(d, *e.Shape)
	if err != nil {
		return TensorInfo{}, err
	}
	if end-begin != want {
		return TensorInfo{}, fmt.Errorf("%s%v needs %d bytes but data_offsets [%d, %d] hold %d", d, *e.Shape, want, begin, end, end-begin)
	}
	return TensorInfo{DType: d, Shape: *e.Shape, DataOffsets: [2]int64{begin, end}}, nil
}

// checkLayout checks that the tensors' byte ranges tile the data section:
// from 0, one after another, ending at dataLen.
func checkLayout(path string, infos map[string]TensorInfo, dataLen int64) error {
	names := make([]string, 0, len(infos))
	for k := range infos {
		names = append(names, k)
	}
	sort.Slice(names, func(i, j int) bool {
		a, b := infos[names[i]].DataOffsets, infos[names[j]].DataOffsets
		if a != b {
			return a[0] < b[0] || a[0] == b[0] && a[1] < b[1]
		}
		return names[i] < names[j]
	})
	pos, prev := int64(0), ""
	for _, k := range names {
		o := infos[k].DataOffsets
		switch {
		case o[0] < pos:
			return stError(path, k, "data_offsets [%d, %d] overlap tensor %q, which ends at %d", o[0], o[1], prev, pos)
		case o[0] > pos && prev == "":
			return stError(path, k, "data_offsets [%d, %d] leave a gap: the first tensor must start at 0", o[0], o[1])
		case o[0] > pos:
			return stError(path, k, "data_offsets [%d, %d] leave a gap after tensor %q, which ends at %d", o[0], o[1], prev, pos)
		}
		pos, prev = o[1], k
	}
	if pos != dataLen {
		return stError(path, "", "tensors end at byte %d of the data section, but the file holds %d bytes of data (truncated or padded file?)", pos, dataLen)
	}
	return nil
}

// Path is the file's path.
func (s *SafetensorsFile) Path() string { return s.path }

// Names lists the tensors in name order.
func (s *SafetensorsFile) Names() []string {
	names := slices.Sorted(maps.Keys(s.infos))
	return names
}

// Info describes one tensor.
func (s *SafetensorsFile) Info(name string) (TensorInfo, bool) {
	info, ok := s.infos[name]
	return info, ok
}

// Infos describes every tensor; the map is the caller's.
func (s *SafetensorsFile) Infos() map[string]TensorInfo {
	m := make(map[string]TensorInfo, len(s.infos))
	for k, v := range s.infos {
		m[k] = v
	}
	return m
}

// Metadata is the header's __metadata__ (nil when the file has none).
func (s *SafetensorsFile) Metadata() map[string]string { return s.metadata }

// ReadInto reads a tensor's bytes into dst, which must be exactly as long as
// the tensor's data.
func (s *SafetensorsFile) ReadInto(name string, dst []byte) error {
	info, ok := s.infos[name]
	if !ok {
		return stError(s.path, name, "no such tensor")
	}
	o := info.DataOffsets
	if int64(len(dst)) != o[1]-o[0] {
		return stError(s.path, name, "destination holds %d bytes, tensor has %d", len(dst), o[1]-o[0])
	}
	if _, err := s.r.ReadAt(dst, s.dataStart+o[0]); err != nil {
		return stError(s.path, name, "reading data: %v", err)
	}
	return nil
}

// Tensor reads one tensor into new memory.
func (s *SafetensorsFile) Tensor(name string) (RawTensor, error) {
	info, ok := s.infos[name]
	if !ok {
		return RawTensor{}, stError(s.path, name, "no such tensor")
	}
	data := make([]byte, info.DataOffsets[1]-info.DataOffsets[0])
	if err := s.ReadInto(name, data); err != nil {
		return RawTensor{}, err
	}
	return RawTensor{DType: info.DType, Shape: slices.Clone(info.Shape), Data: data}, nil
}

// Close closes the file.
func (s *SafetensorsFile) Close() error {
	if s.closer == nil {
		return nil
	}
	return s.closer.Close()
}

// ReadSafetensors reads every tensor of a file and its __metadata__. Each
// tensor's bytes are read once, straight from the file into their own slice.
func ReadSafetensors(path string) (map[string]RawTensor, map[string]string, error) {
	s, err := OpenSafetensors(path)
	if err != nil {
		return nil, nil, err
	}
	defer s.Close()
	return s.readAll()
}

// readAll reads every tensor.
func (s *SafetensorsFile) readAll() (map[string]RawTensor, map[string]string, error) {
	out := make(map[string]RawTensor, len(s.infos))
	for name := range s.infos {
		t, err := s.Tensor(name)
		if err != nil {
			return nil, nil, err
		}
		out[name] = t
	}
	return out, s.metadata, nil
}

// ReadSafetensorsHeader reads and validates only the header: each tensor's
// dtype, shape and byte range, and the __metadata__.
func ReadSafetensorsHeader(path string) (map[string]TensorInfo, map[string]string, error) {
	s, err := OpenSafetensors(path)
	if err != nil {
		return nil, nil, err
	}
	defer s.Close()
	return s.infos, s.metadata, nil
}

// WriteSafetensors writes tensors and metadata (nil for none) to path,
// atomically. Tensors are laid out as the reference implementation lays them
// out (decreasing element size, then name) and listed in that order in the
// header, after __metadata__ (whose keys are sorted); the header is padded
// with spaces to a multiple of 8 bytes.
func WriteSafetensors(path string, tensors map[string]RawTensor, metadata map[string]string) error {
	if err := checkWritable(path, tensors); err != nil {
		return err
	}
	return atomicfile.WriteFile(path, func(w io.Writer) error {
		return encodeSafetensors(w, tensors, metadata)
	})
}

// checkWritable validates every tensor before anything is written.
func checkWritable(path string, tensors map[string]RawTensor) error {
	for name, t := range tensors {
		if name == metadataKey {
			return stError(path, name, "a tensor cannot be named %s", metadataKey)
		}
		if !utf8.ValidString(name) {
			return stError(path, name, "name is not valid UTF-8")
		}
		if err := t.Validate(); err != nil {
			return stError(path, name, "%v", err)
		}
	}
	return nil
}

// encodeSafetensors writes the length, the header and the tensors' data of
// tensors that checkWritable accepted.
func encodeSafetensors(w io.Writer, tensors map[string]RawTensor, metadata map[string]string) error {
	names := make([]string, 0, len(tensors))
	for name := range tensors {
		names = append(names, name)
	}
	sort.Slice(names, func(i, j int) bool {
		ri, rj := dtypes[tensors[names[i]].DType].rank, dtypes[tensors[names[j]].DType].rank
		if ri != rj {
			return ri > rj
		}
		return names[i] < names[j]
	})
	header, err := safetensorsHeader(names, tensors, metadata)
	if err != nil {
		return err
	}
	var lenBuf [8]byte
	binary.LittleEndian.PutUint64(lenBuf[:], uint64(len(header)))
	if _, err := w.Write(lenBuf[:]); err != nil {
		return err
	}
	if _, err := w.Write(header); err != nil {
		return err
	}
	for _, name := range names {
		if _, err := w.Write(tensors[name].Data); err != nil {
			return err
		}
	}
	return nil
}

// safetensorsHeader builds the padded JSON header, in the reference's compact
// form: {"__metadata__":{...},"name":{"dtype":..,"shape":[..],"data_offsets":[b,e]},...}.
func safetensorsHeader(names []string, tensors map[string]RawTensor, metadata map[string]string) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	// writeString appends s as a JSON string (the encoder adds a newline).
	writeString := func(s string) error {
		if err := enc.Encode(s); err != nil {
			return err
		}
		buf.Truncate(buf.Len() - 1)
		return nil
	}
	buf.WriteByte('{')
	first := true
	if metadata != nil {
		buf.WriteString(`"__metadata__":{`)
		keys := slices.Sorted(maps.Keys(metadata))
		for i, k := range keys {
			if i > 0 {
				buf.WriteByte(',')
			}
			if err := writeString(k); err != nil {
				return nil, err
			}
			buf.WriteByte(':')
			if err := writeString(metadata[k]); err != nil {
				return nil, err
			}
		}
		buf.WriteByte('}')
		first = false
	}
	var offset int64
	for _, name := range names {
		t := tensors[name]
		if !first {
			buf.WriteByte(',')
		}
		first = false
		if err := writeString(name); err != nil {
			return nil, err
		}
		fmt.Fprintf(&buf, `:{"dtype":"%s","shape":[`, t.DType)
		for i, d := range t.Shape {
			if i > 0 {
				buf.WriteByte(',')
			}
			fmt.Fprintf(&buf, "%d", d)
		}
		end := offset + int64(len(t.Data))
		fmt.Fprintf(&buf, `],"data_offsets":[%d,%d]}`, offset, end)
		offset = end
	}
	buf.WriteByte('}')
	for buf.Len()%8 != 0 {
		buf.WriteByte(' ')
	}
	return buf.Bytes(), nil
}

// SafetensorsIndex is a sharded checkpoint's `model.safetensors.index.json`.
type SafetensorsIndex struct {
	// Dir is the folder that holds the index and its shards.
	Dir string
	// Metadata is the index's "metadata" object (e.g. total_size).
	Metadata map[string]any
	// WeightMap maps each tensor name to the shard file that holds it.
	WeightMap map[string]string
}

// SafetensorsIndexName is the index file's usual name in a model folder.
const SafetensorsIndexName = "model.safetensors.index.json"

// ReadSafetensorsIndex reads a shard index: path is the index file itself or
// a folder that holds model.safetensors.index.json. Shard names must be plain
// file names in the index's folder.
func ReadSafetensorsIndex(path string) (*SafetensorsIndex, error) {
	if st, err := os.Stat(path); err == nil && st.IsDir() {
		path = filepath.Join(path, SafetensorsIndexName)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var raw struct {
		Metadata  map[string]any    `json:"metadata"`
		WeightMap map[string]string `json:"weight_map"`
	}
	if err := json.Unmarshal(b, &raw); err != nil {
		return nil, fmt.Errorf("safetensors index %s: %v", path, err)
	}
	if raw.WeightMap == nil {
		return nil, fmt.Errorf("safetensors index %s: no weight_map", path)
	}
	for name, file := range raw.WeightMap {
		if file == "" || file != filepath.Base(file) || file == "." || file == ".." || strings.ContainsAny(file, `/\`) {
			return nil, fmt.Errorf("safetensors index %s: tensor %q: shard %q is not a file name in the index's folder", path, name, file)
		}
	}
	return &SafetensorsIndex{Dir: filepath.Dir(path), Metadata: raw.Metadata, WeightMap: raw.WeightMap}, nil
}

// Shards lists the shard files, sorted, each once.
func (ix *SafetensorsIndex) Shards() []string {
	var files []string
	for _, f := range ix.WeightMap {
		files = append(files, f)
	}
	slices.Sort(files)
	return slices.Compact(files)
}

// ReadSafetensorsSharded reads every shard of an index (see
// [ReadSafetensorsIndex] for path). Each tensor of the weight map must be in
// the shard the map names, and no tensor may appear in two shards; tensors a
// shard holds beyond the map are kept. The metadata returned is that of the
// first shard that has any.
func ReadSafetensorsSharded(path string) (map[string]RawTensor, map[string]string, error) {
	ix, err := ReadSafetensorsIndex(path)
	if err != nil {
		return nil, nil, err
	}
	out := map[string]RawTensor{}
	from := map[string]string{}
	var meta map[string]string
	for _, shard := range ix.Shards() {
		file := filepath.Join(ix.Dir, shard)
		s, err := OpenSafetensors(file)
		if err != nil {
			return nil, nil, err
		}
		for _, name := range s.Names() {
			if prev, dup := from[name]; dup {
				s.Close()
				return nil, nil, stError(file, name, "also in shard %s", prev)
			}
			t, err := s.Tensor(name)
			if err != nil {
				s.Close()
				return nil, nil, err
			}
			out[name], from[name] = t, shard
		}
		if meta == nil {
			meta = s.Metadata()
		}
		s.Close()
	}
	for name, shard := range ix.WeightMap {
		if from[name] != shard {
			return nil, nil, stError(filepath.Join(ix.Dir, shard), name, "listed in the index but not in this shard")
		}
	}
	return out, meta, nil
}
