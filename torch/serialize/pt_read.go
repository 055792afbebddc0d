package serialize

import (
	"archive/zip"
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/big"
	"math/bits"
	"os"
	"slices"
	"strconv"
	"strings"
)

// maxPickleRecord bounds the data.pkl record read into memory (the pickle of
// a large model's state dict is a few hundred kilobytes).
const maxPickleRecord = 1 << 30

// legacyMagic is the number that opens a legacy (pre-zip) torch.save file.
var legacyMagic = func() *big.Int {
	n, _ := new(big.Int).SetString("1950a86a20f9469cfc6c", 16)
	return n
}()

// maxConvertDepth bounds the nesting of containers in a pickle.
const maxConvertDepth = 10000

// ptError formats an error about a .pt file.
func ptError(path, format string, args ...any) error {
	return fmt.Errorf("pt %s: %s", path, fmt.Sprintf(format, args...))
}

// ReadPT reads a state dict from a torch.save file: the top-level object
// must be a dict (or OrderedDict) of tensors, or a dict whose "state_dict" or
// "model" entry is one (as training checkpoints hold it). Use [ReadPTObject]
// for anything else.
func ReadPT(path string) (map[string]RawTensor, error) {
	obj, err := ReadPTObject(path)
	if err != nil {
		return nil, err
	}
	sd, err := StateDict(obj)
	if err != nil {
		return nil, ptError(path, "%v", err)
	}
	return sd, nil
}

// StateDict finds the tensors in a value read by [ReadPTObject]: the value
// itself when it is a dict of tensors, or else its "state_dict" or "model"
// entry when that is one.
func StateDict(obj any) (map[string]RawTensor, error) {
	m, ok := obj.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("top-level object is a %s, not a dict of tensors", pyTypeName(obj))
	}
	sd, err := tensorDict(m)
	if err == nil {
		return sd, nil
	}
	for _, k := range []string{"state_dict", "model"} {
		if inner, ok := m[k].(map[string]any); ok {
			if sd, err2 := tensorDict(inner); err2 == nil {
				return sd, nil
			}
		}
	}
	return nil, err
}

func tensorDict(m map[string]any) (map[string]RawTensor, error) {
	out := make(map[string]RawTensor, len(m))
	for k, v := range m {
		t, ok := v.(RawTensor)
		if !ok {
			return nil, fmt.Errorf("key %q holds a %s, not a tensor (read it with ReadPTObject)", k, pyTypeName(v))
		}
		out[k] = t
	}
	return out, nil
}

// ReadPTObject reads any object a torch.save file holds, with these Go
// types: dict and OrderedDict -> map[string]any (map[any]any when a key is
// not a string: int64, bool, float64 or nil keys), list and set -> []any,
// tuple and torch.Size -> [Tuple], int -> int64 (*big.Int beyond 64 bits),
// float -> float64, str -> string, bytes -> []byte, bool, None -> nil,
// tensor and nn.Parameter -> [RawTensor] (contiguous), anything else ->
// [*Object].
func ReadPTObject(path string) (any, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	return readPTFrom(path, f, st.Size())
}

// readPTFrom reads a torch.save file of size bytes from r; path names it in errors.
func readPTFrom(path string, r io.ReaderAt, size int64) (any, error) {
	var magic [4]byte
	if _, err := r.ReadAt(magic[:], 0); err != nil {
		return nil, ptError(path, "file too short (%d bytes)", size)
	}
	var obj any
	var err error
	if string(magic[:]) == "PK\x03\x04" {
		obj, err = readZipPT(r, size)
	} else {
		obj, err = readLegacyPT(r, size)
	}
	if err != nil {
		return nil, ptError(path, "%v", err)
	}
	return obj, nil
}

// storageSource loads a storage's bytes, keeping each in memory only until
// the last tensor built on it has been copied out.
type storageSource struct {
	load   func(s *storageRef) ([]byte, error)
	cache  map[string][]byte
	bigEnd bool
}

// readZipPT reads the zip archive torch.save writes since torch 1.6.
func readZipPT(f io.ReaderAt, size int64) (any, error) {
	zr, err := zip.NewReader(f, size)
	if err != nil {
		return nil, fmt.Errorf("reading zip: %v", err)
	}
	records := map[string]*zip.File{}
	prefix := ""
	// content is what the records can yield: the file's bytes, plus what
	// compressed records inflate to beyond their size.
	content := size
	for _, zf := range zr.File {
		if err := checkRecord(zf, size); err != nil {
			return nil, err
		}
		if zf.Method != zip.Store && zf.UncompressedSize64 > zf.CompressedSize64 {
			content += int64(zf.UncompressedSize64 - zf.CompressedSize64)
		}
		records[zf.Name] = zf
		if dir, ok := strings.CutSuffix(zf.Name, "/data.pkl"); ok && prefix == "" && !strings.Contains(dir, "/") {
			prefix = dir + "/"
		}
	}
	if prefix == "" {
		return nil, errors.New("zip archive has no <name>/data.pkl record (not a torch.save file)")
	}
	if records[prefix+"constants.pkl"] != nil {
		return nil, errors.New("a TorchScript archive (torch.jit.save), not a torch.save file")
	}
	src := &storageSource{cache: map[string][]byte{}}
	if zf := records[prefix+"byteorder"]; zf != nil {
		b, err := readRecord(zf, 16)
		if err != nil {
			return nil, err
		}
		switch strings.TrimSpace(string(b)) {
		case "little":
		case "big":
			src.bigEnd = true
		default:
			return nil, fmt.Errorf("unknown byteorder %q", b)
		}
	}
	src.load = func(s *storageRef) ([]byte, error) {
		name := prefix + "data/" + s.key
		zf := records[name]
		if zf == nil {
			return nil, fmt.Errorf("storage record %s is missing", name)
		}
		need, err := mulSize(s.numel, int64(s.dtype.Size()))
		if err != nil || zf.UncompressedSize64 < uint64(need) {
			return nil, fmt.Errorf("storage record %s holds %d bytes, %d %s elements need more", name, zf.UncompressedSize64, s.numel, s.dtype)
		}
		// checkRecord has bounded the record by the file, so need is too.
		buf := make([]byte, need)
		if zf.Method == zip.Store {
			off, err := zf.DataOffset()
			if err != nil {
				return nil, err
			}
			if _, err := f.ReadAt(buf, off); err != nil {
				return nil, fmt.Errorf("reading %s: %v", name, unexpected(err))
			}
			return buf, nil
		}
		rc, err := zf.Open()
		if err != nil {
			return nil, err
		}
		defer rc.Close()
		if _, err := io.ReadFull(rc, buf); err != nil {
			return nil, fmt.Errorf("reading %s: %v", name, unexpected(err))
		}
		return buf, nil
	}
	pkl, err := readRecord(records[prefix+"data.pkl"], maxPickleRecord)
	if err != nil {
		return nil, err
	}
	storages := map[string]*storageRef{}
	u := newUnpickler(bytes.NewReader(pkl), int64(len(pkl)), func(pid any) (any, error) {
		t, ok := pid.(Tuple)
		if !ok || len(t) != 5 {
			return nil, fmt.Errorf("persistent id is not a 5-tuple (%s)", pyTypeName(pid))
		}
		s, err := storageFromPID(t)
		if err != nil {
			return nil, err
		}
		if prev, ok := storages[s.key]; ok {
			if prev.dtype != s.dtype || prev.numel != s.numel {
				return nil, fmt.Errorf("storage %s is named as both %s[%d] and %s[%d]", s.key, prev.dtype, prev.numel, s.dtype, s.numel)
			}
			return prev, nil
		}
		storages[s.key] = s
		return s, nil
	})
	obj, err := u.load()
	if err != nil {
		return nil, fmt.Errorf("data.pkl: %v", err)
	}
	return convert(obj, src, content)
}

// maxInflate is the most that deflate can expand its input (1032:1), with
// room for the stream's framing.
const maxInflate = 1032

// checkRecord checks a zip entry against the file that holds it: its data
// (as stored) lies inside the file, a stored record is as long as it says,
// and a compressed one does not claim more than deflate can produce. The
// sizes come from the archive's directory and may lie (zip64 sizes reach
// 2^64), so nothing may be allocated from them before this check.
func checkRecord(zf *zip.File, fileSize int64) error {
	off, err := zf.DataOffset()
	if err != nil {
		return fmt.Errorf("record %s: %v", brief(zf.Name), err)
	}
	if off < 0 || off > fileSize || zf.CompressedSize64 > uint64(fileSize-off) {
		return fmt.Errorf("record %s declares %d bytes at offset %d, past the end of the file (%d bytes)", brief(zf.Name), zf.CompressedSize64, off, fileSize)
	}
	switch zf.Method {
	case zip.Store:
		if zf.UncompressedSize64 != zf.CompressedSize64 {
			return fmt.Errorf("stored record %s declares %d bytes but holds %d", brief(zf.Name), zf.UncompressedSize64, zf.CompressedSize64)
		}
	case zip.Deflate:
		if zf.UncompressedSize64/maxInflate > zf.CompressedSize64 {
			return fmt.Errorf("record %s declares %d bytes from %d compressed, more than deflate can produce", brief(zf.Name), zf.UncompressedSize64, zf.CompressedSize64)
		}
	default:
		return fmt.Errorf("record %s uses zip compression method %d (torch.save stores records uncompressed)", brief(zf.Name), zf.Method)
	}
	return nil
}

func readRecord(zf *zip.File, limit uint64) ([]byte, error) {
	if zf.UncompressedSize64 > limit {
		return nil, fmt.Errorf("record %s is too large (%d bytes)", zf.Name, zf.UncompressedSize64)
	}
	rc, err := zf.Open()
	if err != nil {
		return nil, fmt.Errorf("record %s: %v", zf.Name, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		return nil, fmt.Errorf("record %s: %v", zf.Name, err)
	}
	return b, nil
}

// storageFromPID reads the fields that both formats share:
// ('storage', storage_type, key, location, numel, ...).
func storageFromPID(t Tuple) (*storageRef, error) {
	if kind, _ := t[0].(string); kind != "storage" {
		return nil, fmt.Errorf("persistent id of kind %v, want 'storage'", t[0])
	}
	g, ok := t[1].(pyGlobal)
	if !ok {
		return nil, fmt.Errorf("storage type is a %s", pyTypeName(t[1]))
	}
	var d DType
	switch {
	case g.module == "torch" && dtypeOfStorage[g.name] != "":
		d = dtypeOfStorage[g.name]
	case g.String() == "torch.UntypedStorage" || g.String() == "torch.storage.UntypedStorage":
		d = U8
	default:
		return nil, fmt.Errorf("unsupported storage type %s", g)
	}
	var key string
	switch k := t[2].(type) {
	case string:
		key = k
	case int64:
		key = fmt.Sprint(k)
	default:
		return nil, fmt.Errorf("storage key is a %s", pyTypeName(t[2]))
	}
	numel, ok := t[4].(int64)
	if !ok || numel < 0 || numel > (1<<62)/int64(d.Size()) {
		return nil, fmt.Errorf("storage %s: element count is a %s %s", brief(key), pyTypeName(t[4]), briefValue(t[4]))
	}
	return &storageRef{key: key, dtype: d, numel: numel}, nil
}

// readLegacyPT reads the stream format torch.save wrote before 1.6: pickles
// of the magic number, the protocol version and sys_info, then the object,
// then the list of storage keys, then each storage as an int64 element count
// and its bytes.
func readLegacyPT(f io.ReaderAt, size int64) (any, error) {
	var head [512]byte
	if n, _ := f.ReadAt(head[:], 0); n >= 262 && string(head[257:262]) == "ustar" {
		return nil, errors.New("the tar format of torch < 0.4 is not supported")
	}
	br := bufio.NewReaderSize(io.NewSectionReader(f, 0, size), 1<<16)
	in := &pickleInput{r: br, size: size}
	next := func(what string, pl func(any) (any, error)) (any, error) {
		v, err := newUnpicklerOn(in, pl).load()
		if err != nil {
			return nil, fmt.Errorf("%s: %v", what, err)
		}
		return v, nil
	}
	magic, err := next("magic number", nil)
	if err != nil {
		return nil, fmt.Errorf("neither a zip archive nor a legacy torch.save file: %v", err)
	}
	if m, ok := magic.(*big.Int); !ok || m.Cmp(legacyMagic) != 0 {
		return nil, errors.New("neither a zip archive nor a legacy torch.save file (bad magic number)")
	}
	if proto, err := next("protocol version", nil); err != nil {
		return nil, err
	} else if proto != int64(1001) {
		return nil, fmt.Errorf("unsupported legacy protocol version %v", proto)
	}
	sysInfo, err := next("sys_info", nil)
	if err != nil {
		return nil, err
	}
	bigEnd := false
	if d, ok := sysInfo.(*pyDict); ok {
		if i, ok := d.index["little_endian"]; ok && d.vals[i] == false {
			bigEnd = true
		}
	}
	roots := map[string]*storageRef{}
	obj, err := next("object", func(pid any) (any, error) {
		t, ok := pid.(Tuple)
		if !ok || len(t) != 6 {
			return nil, fmt.Errorf("persistent id is not a 6-tuple (%s)", pyTypeName(pid))
		}
		s, err := storageFromPID(t)
		if err != nil {
			return nil, err
		}
		if prev, ok := roots[s.key]; ok {
			if prev.dtype != s.dtype || prev.numel != s.numel {
				return nil, fmt.Errorf("storage %s is named as both %s[%d] and %s[%d]", s.key, prev.dtype, prev.numel, s.dtype, s.numel)
			}
			s = prev
		} else {
			roots[s.key] = s
		}
		if t[5] == nil {
			return s, nil
		}
		view, ok := t[5].(Tuple)
		if !ok || len(view) != 3 {
			return nil, errors.New("storage view metadata is not a 3-tuple")
		}
		off, ok1 := view[1].(int64)
		n, ok2 := view[2].(int64)
		if !ok1 || !ok2 || off < 0 || n < 0 || off > s.numel || n > s.numel-off {
			return nil, fmt.Errorf("storage view (%s, %s) out of range of storage %s", briefValue(view[1]), briefValue(view[2]), brief(s.key))
		}
		return &storageRef{key: s.key, dtype: s.dtype, numel: n, offset: off, root: s}, nil
	})
	if err != nil {
		return nil, err
	}
	keysV, err := next("storage keys", nil)
	if err != nil {
		return nil, err
	}
	keyList, ok := keysV.(*pyList)
	if !ok {
		return nil, errors.New("storage keys are not a list")
	}
	// Find each storage's bytes: an 8-byte count then the data.
	offsets := map[string]int64{}
	pos := in.pos
	for _, kv := range keyList.items {
		key, ok := kv.(string)
		if !ok {
			return nil, fmt.Errorf("storage key is a %s", pyTypeName(kv))
		}
		s := roots[key]
		if s == nil {
			return nil, fmt.Errorf("storage %s is not used by the object", key)
		}
		var nb [8]byte
		if _, err := f.ReadAt(nb[:], pos); err != nil {
			return nil, fmt.Errorf("storage %s: truncated file", key)
		}
		n := int64(binary.LittleEndian.Uint64(nb[:]))
		if n != s.numel {
			return nil, fmt.Errorf("storage %s holds %d elements, its id says %d", brief(key), n, s.numel)
		}
		nbytes, err := mulSize(n, int64(s.dtype.Size()))
		if err != nil || nbytes > size-pos-8 {
			return nil, fmt.Errorf("storage %s runs past the end of the file", brief(key))
		}
		offsets[key] = pos + 8
		pos += 8 + nbytes
	}
	src := &storageSource{cache: map[string][]byte{}, bigEnd: bigEnd}
	src.load = func(s *storageRef) ([]byte, error) {
		off, ok := offsets[s.key]
		if !ok {
			return nil, fmt.Errorf("storage %s has no data in the file", s.key)
		}
		root := roots[s.key]
		buf := make([]byte, root.numel*int64(root.dtype.Size()))
		if _, err := f.ReadAt(buf, off); err != nil {
			return nil, fmt.Errorf("reading storage %s: %v", s.key, unexpected(err))
		}
		return buf, nil
	}
	return convert(obj, src, size)
}

// Limits on the tensors a file may yield. Tensors are read as contiguous
// copies, so a view (a stride-0 expand, say) can be far larger than the
// bytes it is made from: each tensor may be at most maxExpansion times its
// storage's size plus viewSlack, and all of a file's tensors together at
// most maxExpansion times the file's content plus fileSlack. A state dict
// or a checkpoint holds each storage about once (tied or sliced weights a
// few times), far inside both.
const (
	maxExpansion = 4
	viewSlack    = 1 << 20
	fileSlack    = 16 << 20
	maxDims      = 64
)

// convert turns unpickled values into the public Go types, materialising
// tensors from their storages; content is the number of bytes the file's
// records hold, which bounds what the tensors may add up to.
func convert(obj any, src *storageSource, content int64) (any, error) {
	c := &converter{src: src, seen: map[any]any{}, budget: maxExpansion*max(content, 0) + fileSlack, limit: maxExpansion*max(content, 0) + fileSlack}
	return c.value(obj, nil, 0)
}

type converter struct {
	src  *storageSource
	seen map[any]any // every container and tensor converted, by identity
	// budget is what the tensors not yet converted may still add up to, of
	// limit in all.
	budget, limit int64
}

// tupleID identifies a tuple by its backing array: tuples are shared by
// reference in a pickle (through the memo) as lists and dicts are, and a
// few bytes of shared nested tuples describe an exponentially large tree.
type tupleID struct {
	first *any
	n     int
}

// valuePath is where a value sits in the object (["state_dict"]["w"][0]),
// built as a chain and formatted only for an error.
type valuePath struct {
	parent *valuePath
	key    any
}

func (p *valuePath) String() string {
	if p == nil {
		return "top-level value"
	}
	var parts []string
	for q := p; q != nil; q = q.parent {
		switch k := q.key.(type) {
		case string:
			parts = append(parts, "["+strconv.Quote(brief(k))+"]")
		default:
			parts = append(parts, "["+briefValue(k)+"]")
		}
	}
	slices.Reverse(parts)
	return strings.Join(parts, "")
}

func (p *valuePath) child(key any) *valuePath { return &valuePath{p, key} }

func (c *converter) value(v any, at *valuePath, depth int) (any, error) {
	if depth > maxConvertDepth {
		return nil, fmt.Errorf("%s: containers nested too deeply", at)
	}
	switch v := v.(type) {
	case nil, bool, int64, *big.Int, float64, string, []byte:
		return v, nil
	case *pyList:
		if done, ok := c.seen[v]; ok {
			return done, nil
		}
		out := make([]any, len(v.items))
		c.seen[v] = out
		for i, it := range v.items {
			x, err := c.value(it, at.child(int64(i)), depth+1)
			if err != nil {
				return nil, err
			}
			out[i] = x
		}
		return out, nil
	case Tuple:
		if len(v) == 0 {
			return Tuple{}, nil
		}
		id := tupleID{&v[0], len(v)}
		if done, ok := c.seen[id]; ok {
			return done, nil
		}
		out := make(Tuple, len(v))
		c.seen[id] = out
		for i, it := range v {
			x, err := c.value(it, at.child(int64(i)), depth+1)
			if err != nil {
				return nil, err
			}
			out[i] = x
		}
		return out, nil
	case *pyDict:
		if done, ok := c.seen[v]; ok {
			return done, nil
		}
		allStrings := true
		for _, k := range v.keys {
			if _, ok := k.(string); !ok {
				allStrings = false
			}
		}
		if allStrings {
			out := make(map[string]any, len(v.keys))
			c.seen[v] = out
			for i, k := range v.keys {
				x, err := c.value(v.vals[i], at.child(k), depth+1)
				if err != nil {
					return nil, err
				}
				out[k.(string)] = x
			}
			return out, nil
		}
		out := make(map[any]any, len(v.keys))
		c.seen[v] = out
		for i, k := range v.keys {
			x, err := c.value(v.vals[i], at.child(k), depth+1)
			if err != nil {
				return nil, err
			}
			out[k] = x
		}
		return out, nil
	case *tensorRef:
		if done, ok := c.seen[v]; ok {
			return done, nil
		}
		t, err := c.tensor(v)
		if err != nil {
			return nil, fmt.Errorf("tensor %s: %w", at, err)
		}
		c.seen[v] = t
		return t, nil
	case *Object:
		if done, ok := c.seen[v]; ok {
			return done, nil
		}
		out := &Object{Class: v.Class}
		c.seen[v] = out
		if v.Args != nil {
			out.Args = make([]any, len(v.Args))
			for i, a := range v.Args {
				x, err := c.value(a, at.child(int64(i)), depth+1)
				if err != nil {
					return nil, err
				}
				out.Args[i] = x
			}
		}
		st, err := c.value(v.State, at, depth+1)
		if err != nil {
			return nil, err
		}
		out.State = st
		return out, nil
	case pyGlobal:
		return &Object{Class: v.String()}, nil
	case *storageRef:
		return nil, fmt.Errorf("%s: a bare storage (%s) outside a tensor is not supported", at, brief(v.key))
	}
	return nil, fmt.Errorf("%s: unexpected value of type %T", at, v)
}

// tensor copies a strided view out of its storage into a C-contiguous
// RawTensor, reusing the storage's bytes when the view is all of them. All
// arithmetic on sizes, strides and offsets is checked: they come from the
// file.
func (c *converter) tensor(t *tensorRef) (RawTensor, error) {
	s := t.storage
	es := int64(s.dtype.Size())
	if len(t.size) > maxDims {
		return RawTensor{}, fmt.Errorf("%d dimensions, more than %d", len(t.size), maxDims)
	}
	nbytes, err := byteLength(s.dtype, t.size)
	if err != nil {
		return RawTensor{}, err
	}
	numel := nbytes / es
	// The last element the view reaches must lie inside the storage.
	last, ok := addSize(s.offset, t.offset)
	for i, n := range t.size {
		if t.stride[i] < 0 {
			return RawTensor{}, fmt.Errorf("negative stride %v", t.stride)
		}
		if n > 0 && ok {
			span, err := mulSize(n-1, t.stride[i])
			if ok = err == nil; ok {
				last, ok = addSize(last, span)
			}
		}
	}
	if !ok {
		return RawTensor{}, fmt.Errorf("offset %d with size %v and strides %v overflows", t.offset, t.size, t.stride)
	}
	shape := slices.Clone(t.size)
	b := s.base()
	if numel == 0 {
		b.refs--
		c.release(b)
		return RawTensor{DType: s.dtype, Shape: shape, Data: []byte{}}, nil
	}
	rootNumel := s.offset + s.numel
	if last >= rootNumel {
		return RawTensor{}, fmt.Errorf("%s%v at offset %d with strides %v reaches past the end of storage %s (%d elements)", s.dtype, t.size, t.offset, t.stride, brief(s.key), s.numel)
	}
	// Storage sizes are bounded by the file (readZipPT, readLegacyPT) when
	// loaded; the view's own size is bounded here, before anything is
	// allocated for it.
	storageBytes := s.numel * es
	if nbytes > maxExpansion*storageBytes+viewSlack {
		return RawTensor{}, fmt.Errorf("%s%v with strides %v would take %d bytes, made from %d bytes of storage %s: a view expanded this far is refused (tensors are read as contiguous copies)", s.dtype, t.size, t.stride, nbytes, storageBytes, brief(s.key))
	}
	if nbytes > c.budget {
		return RawTensor{}, fmt.Errorf("%s%v would take %d bytes, and the file's tensors would add up to more than %d bytes (%dx what its records hold, plus %d MiB): views expanded this far are refused (tensors are read as contiguous copies)", s.dtype, t.size, nbytes, c.limit, maxExpansion, fileSlack>>20)
	}
	data, err := c.storage(s)
	if err != nil {
		return RawTensor{}, err
	}
	if int64(len(data)) < rootNumel*es {
		return RawTensor{}, fmt.Errorf("storage %s is shorter than its id says", brief(s.key))
	}
	c.budget -= nbytes
	b.refs--
	start := (s.offset + t.offset) * es
	var out []byte
	if isContiguous(t.size, t.stride) {
		if b.refs == 0 && start == 0 && nbytes == int64(len(data)) && !c.src.bigEnd {
			out = data // the view is the whole storage and nothing else needs it
		} else {
			out = slices.Clone(data[start : start+nbytes])
		}
	} else {
		out = make([]byte, nbytes)
		stridedCopy(out, data[start:], t.size, t.stride, es)
	}
	c.release(b)
	if c.src.bigEnd && es > 1 {
		for i := int64(0); i < int64(len(out)); i += es {
			slices.Reverse(out[i : i+es])
		}
	}
	return RawTensor{DType: s.dtype, Shape: shape, Data: out}, nil
}

// mulSize is a*b for non-negative sizes, failing past 2^62.
func mulSize(a, b int64) (int64, error) {
	if a < 0 || b < 0 {
		return 0, fmt.Errorf("negative size %d*%d", a, b)
	}
	hi, lo := bits.Mul64(uint64(a), uint64(b))
	if hi != 0 || lo > 1<<62 {
		return 0, fmt.Errorf("size %d*%d overflows", a, b)
	}
	return int64(lo), nil
}

// addSize is a+b for non-negative sizes; ok is false past 2^62.
func addSize(a, b int64) (int64, bool) {
	if a < 0 || b < 0 || a > 1<<62 || b > 1<<62-a {
		return 0, false
	}
	return a + b, true
}

func (c *converter) storage(s *storageRef) ([]byte, error) {
	if b, ok := c.src.cache[s.key]; ok {
		return b, nil
	}
	b, err := c.src.load(s)
	if err != nil {
		return nil, err
	}
	c.src.cache[s.key] = b
	return b, nil
}

// release drops a root storage's bytes once no tensor still needs them.
func (c *converter) release(s *storageRef) {
	if s.refs <= 0 {
		delete(c.src.cache, s.key)
	}
}

// isContiguous reports whether strides are C-contiguous for size, ignoring
// dimensions of size 1 (whose stride does not matter).
func isContiguous(size, stride []int64) bool {
	want := int64(1)
	for i := len(size) - 1; i >= 0; i-- {
		if size[i] == 1 {
			continue
		}
		if stride[i] != want {
			return false
		}
		want *= size[i]
	}
	return true
}

// stridedCopy gathers a strided view of src (elements of es bytes) into dst
// in C order; the innermost dimension is copied as one block when its
// stride is 1.
func stridedCopy(dst, src []byte, size, stride []int64, es int64) {
	if len(size) == 0 {
		copy(dst, src[:es])
		return
	}
	n, st := size[0], stride[0]
	if len(size) == 1 {
		if st == 1 {
			copy(dst, src[:n*es])
			return
		}
		for i := int64(0); i < n; i++ {
			copy(dst[i*es:(i+1)*es], src[i*st*es:])
		}
		return
	}
	inner := int64(len(dst)) / n
	for i := int64(0); i < n; i++ {
		stridedCopy(dst[i*inner:(i+1)*inner], src[i*st*es:], size[1:], stride[1:], es)
	}
}
