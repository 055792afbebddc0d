package serialize

import (
	"archive/zip"
	"bytes"
	"cmp"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"io"
	"maps"
	"math"
	"slices"
	"strconv"
	"unicode/utf8"

	"goclip/internal/atomicfile"
)

// ptArchiveName is the folder inside the zip; torch accepts any name.
const ptArchiveName = "archive"

// ptAlignment is where torch's writer aligns each record's data.
const ptAlignment = 64

// WritePT writes a state dict to path, atomically, as torch.save writes
// model.state_dict(): an OrderedDict of tensors, keys in sorted order. The
// file loads with torch.load(path, weights_only=True) in torch 1.13 and 2.x.
func WritePT(path string, tensors map[string]RawTensor) error {
	p := newPickler()
	p.w.WriteByte(opProto)
	p.w.WriteByte(2)
	keys := slices.Sorted(maps.Keys(tensors))
	p.orderedDictStart()
	for _, k := range keys {
		if err := p.str(k); err != nil {
			return ptError(path, "key %q: %v", k, err)
		}
		if err := p.tensor(tensors[k]); err != nil {
			return ptError(path, "key %q: %v", k, err)
		}
	}
	p.w.WriteByte(opSetItems)
	p.w.WriteByte(opStop)
	return p.writeZip(path)
}

// WritePTObject writes obj to path, atomically, as torch.save(obj) would.
// obj is built from map[string]any, map[int64]any, map[any]any (string,
// int64, int or bool keys), map[string]RawTensor, []any, [Tuple], []int64,
// []float64, []string, int, int64, float64, string, bool, nil and
// [RawTensor]; maps are written as dicts with their keys sorted, and tensors
// that share one Data slice share one storage. With weights_only=True torch
// 1.13 loads every such value except floats (its unpickler has no float
// opcode); torch 2.x loads them all.
func WritePTObject(path string, obj any) error {
	p := newPickler()
	p.w.WriteByte(opProto)
	p.w.WriteByte(2)
	if err := p.value(obj, "", 0); err != nil {
		return ptError(path, "%v", err)
	}
	p.w.WriteByte(opStop)
	return p.writeZip(path)
}

// pickler writes a protocol-2 pickle restricted to the opcodes that torch
// 1.13's weights_only unpickler accepts (plus BINFLOAT, see WritePTObject).
type pickler struct {
	w        bytes.Buffer
	storages []RawTensor // data records, in key order 0, 1, ...
	shared   map[storageID]int
}

type storageID struct {
	first *byte
	n     int
	dtype DType
}

func newPickler() *pickler { return &pickler{shared: map[storageID]int{}} }

func (p *pickler) global(module, name string) {
	p.w.WriteByte(opGlobal)
	p.w.WriteString(module + "\n" + name + "\n")
}

// orderedDictStart pushes collections.OrderedDict() and a MARK for its items.
func (p *pickler) orderedDictStart() {
	p.global("collections", "OrderedDict")
	p.w.WriteByte(opEmptyTuple)
	p.w.WriteByte(opReduce)
	p.w.WriteByte(opMark)
}

func (p *pickler) str(s string) error {
	if !utf8.ValidString(s) {
		return fmt.Errorf("string %q is not valid UTF-8", s)
	}
	p.w.WriteByte(opBinUnicode)
	p.w.Write(binary.LittleEndian.AppendUint32(nil, uint32(len(s))))
	p.w.WriteString(s)
	return nil
}

func (p *pickler) int(v int64) {
	switch {
	case v >= 0 && v < 1<<8:
		p.w.WriteByte(opBinInt1)
		p.w.WriteByte(byte(v))
	case v >= 0 && v < 1<<16:
		p.w.WriteByte(opBinInt2)
		p.w.Write(binary.LittleEndian.AppendUint16(nil, uint16(v)))
	case v >= math.MinInt32 && v <= math.MaxInt32:
		p.w.WriteByte(opBinInt)
		p.w.Write(binary.LittleEndian.AppendUint32(nil, uint32(int32(v))))
	default:
		// LONG1: the shortest little-endian two's complement form.
		b := binary.LittleEndian.AppendUint64(nil, uint64(v))
		for len(b) > 1 && (b[len(b)-1] == 0 && b[len(b)-2]&0x80 == 0 || b[len(b)-1] == 0xff && b[len(b)-2]&0x80 != 0) {
			b = b[:len(b)-1]
		}
		p.w.WriteByte(opLong1)
		p.w.WriteByte(byte(len(b)))
		p.w.Write(b)
	}
}

func (p *pickler) float(v float64) {
	p.w.WriteByte(opBinFloat)
	p.w.Write(binary.BigEndian.AppendUint64(nil, math.Float64bits(v)))
}

// intTuple writes a tuple of ints.
func (p *pickler) intTuple(vs []int64) {
	if len(vs) == 0 {
		p.w.WriteByte(opEmptyTuple)
		return
	}
	p.w.WriteByte(opMark)
	for _, v := range vs {
		p.int(v)
	}
	p.w.WriteByte(opTuple)
}

// tensor writes torch._utils._rebuild_tensor_v2(storage, 0, size, stride,
// False, OrderedDict()) with the storage as a persistent id
// ('storage', torch.<Type>Storage, key, 'cpu', numel).
func (p *pickler) tensor(t RawTensor) error {
	if err := t.Validate(); err != nil {
		return err
	}
	key := len(p.storages)
	id := storageID{n: len(t.Data), dtype: t.DType}
	if len(t.Data) > 0 {
		id.first = &t.Data[0]
		if k, ok := p.shared[id]; ok {
			key = k
		} else {
			p.shared[id] = key
			p.storages = append(p.storages, t)
		}
	} else {
		p.storages = append(p.storages, t)
	}
	p.global("torch._utils", "_rebuild_tensor_v2")
	p.w.WriteByte(opMark)
	// the persistent id
	p.w.WriteByte(opMark)
	p.str("storage")
	p.global("torch", dtypes[t.DType].storage)
	p.str(strconv.Itoa(key))
	p.str("cpu")
	p.int(int64(len(t.Data) / t.DType.Size()))
	p.w.WriteByte(opTuple)
	p.w.WriteByte(opBinPersID)
	p.int(0) // storage offset
	p.intTuple(t.Shape)
	p.intTuple(contiguousStrides(t.Shape))
	p.w.WriteByte(opNewFalse) // requires_grad
	p.global("collections", "OrderedDict")
	p.w.WriteByte(opEmptyTuple)
	p.w.WriteByte(opReduce) // backward_hooks
	p.w.WriteByte(opTuple)
	p.w.WriteByte(opReduce)
	return nil
}

// value writes any supported Go value; at names its place for errors.
func (p *pickler) value(v any, at string, depth int) error {
	if depth > maxConvertDepth {
		return fmt.Errorf("%s: nested too deeply", where(at))
	}
	switch v := v.(type) {
	case nil:
		p.w.WriteByte(opNone)
	case bool:
		if v {
			p.w.WriteByte(opNewTrue)
		} else {
			p.w.WriteByte(opNewFalse)
		}
	case int:
		p.int(int64(v))
	case int32:
		p.int(int64(v))
	case int64:
		p.int(v)
	case float64:
		p.float(v)
	case float32:
		p.float(float64(v))
	case string:
		if err := p.str(v); err != nil {
			return fmt.Errorf("%s: %v", where(at), err)
		}
	case RawTensor:
		if err := p.tensor(v); err != nil {
			return fmt.Errorf("%s: %v", where(at), err)
		}
	case *RawTensor:
		if v == nil {
			p.w.WriteByte(opNone)
		} else if err := p.tensor(*v); err != nil {
			return fmt.Errorf("%s: %v", where(at), err)
		}
	case []any:
		return p.list(len(v), func(i int) any { return v[i] }, at, depth)
	case []int64:
		return p.list(len(v), func(i int) any { return v[i] }, at, depth)
	case []float64:
		return p.list(len(v), func(i int) any { return v[i] }, at, depth)
	case []string:
		return p.list(len(v), func(i int) any { return v[i] }, at, depth)
	case []RawTensor:
		return p.list(len(v), func(i int) any { return v[i] }, at, depth)
	case Tuple:
		p.w.WriteByte(opMark)
		for i, it := range v {
			if err := p.value(it, fmt.Sprintf("%s[%d]", at, i), depth+1); err != nil {
				return err
			}
		}
		p.w.WriteByte(opTuple)
	case map[string]any:
		return p.dict(mapEntries(v), at, depth)
	case map[string]RawTensor:
		return p.dict(mapEntries(v), at, depth)
	case map[int64]any:
		return p.dict(mapEntries(v), at, depth)
	case map[any]any:
		entries := make([]entry, 0, len(v))
		for k, x := range v {
			switch kk := k.(type) {
			case string, int64, bool:
			case int:
				k = int64(kk)
			default:
				return fmt.Errorf("%s: dict key %v of type %T (want string, int or bool)", where(at), k, k)
			}
			entries = append(entries, entry{k, x})
		}
		slices.SortFunc(entries, func(a, b entry) int { return compareKeys(a.k, b.k) })
		return p.dict(entries, at, depth)
	default:
		return fmt.Errorf("%s: unsupported type %T", where(at), v)
	}
	return nil
}

func where(at string) string {
	if at == "" {
		return "top-level value"
	}
	return "value at " + at
}

func (p *pickler) list(n int, item func(int) any, at string, depth int) error {
	p.w.WriteByte(opEmptyList)
	if n == 0 {
		return nil
	}
	p.w.WriteByte(opMark)
	for i := range n {
		if err := p.value(item(i), fmt.Sprintf("%s[%d]", at, i), depth+1); err != nil {
			return err
		}
	}
	p.w.WriteByte(opAppends)
	return nil
}

type entry struct {
	k any
	v any
}

func mapEntries[K cmp.Ordered, V any](m map[K]V) []entry {
	keys := slices.Sorted(maps.Keys(m))
	out := make([]entry, len(keys))
	for i, k := range keys {
		out[i] = entry{k, m[k]}
	}
	return out
}

// compareKeys orders mixed dict keys: bools, then ints, then strings.
func compareKeys(a, b any) int {
	rank := func(k any) int {
		switch k.(type) {
		case bool:
			return 0
		case int64:
			return 1
		}
		return 2
	}
	if ra, rb := rank(a), rank(b); ra != rb {
		return ra - rb
	}
	switch a := a.(type) {
	case bool:
		if a == b.(bool) {
			return 0
		} else if !a {
			return -1
		}
		return 1
	case int64:
		return cmp.Compare(a, b.(int64))
	}
	return cmp.Compare(a.(string), b.(string))
}

func (p *pickler) dict(entries []entry, at string, depth int) error {
	p.w.WriteByte(opEmptyDict)
	if len(entries) == 0 {
		return nil
	}
	p.w.WriteByte(opMark)
	for _, e := range entries {
		var key string
		switch k := e.k.(type) {
		case string:
			key = strconv.Quote(k)
			if err := p.str(k); err != nil {
				return fmt.Errorf("%s: key: %v", where(at), err)
			}
		case int64:
			key = strconv.FormatInt(k, 10)
			p.int(k)
		case bool:
			key = strconv.FormatBool(k)
			p.value(k, at, depth)
		}
		if err := p.value(e.v, at+"["+key+"]", depth+1); err != nil {
			return err
		}
	}
	p.w.WriteByte(opSetItems)
	return nil
}

// writeZip writes the pickle and the storages as torch.save's zip archive,
// each record stored uncompressed and its data 64-byte aligned.
func (p *pickler) writeZip(path string) error {
	return atomicfile.WriteFile(path, func(w io.Writer) error {
		cw := &countingWriter{w: w}
		zw := zip.NewWriter(cw)
		add := func(name string, data []byte) error {
			return addAlignedRecord(zw, cw, ptArchiveName+"/"+name, data)
		}
		if err := add("data.pkl", p.w.Bytes()); err != nil {
			return err
		}
		if err := add("byteorder", []byte("little")); err != nil {
			return err
		}
		for i, t := range p.storages {
			if err := add("data/"+strconv.Itoa(i), t.Data); err != nil {
				return err
			}
		}
		if err := add("version", []byte("3\n")); err != nil {
			return err
		}
		return zw.Close()
	})
}

type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(b []byte) (int, error) {
	n, err := c.w.Write(b)
	c.n += int64(n)
	return n, err
}

// addAlignedRecord stores one record, padding the local header's extra
// field (an "FB" block, as torch's writer does) so that the data starts on a
// multiple of ptAlignment.
func addAlignedRecord(zw *zip.Writer, cw *countingWriter, name string, data []byte) error {
	if err := zw.Flush(); err != nil {
		return err
	}
	const localHeaderLen = 30
	start := cw.n + localHeaderLen + int64(len(name)) + 4
	pad := (ptAlignment - start%ptAlignment) % ptAlignment
	extra := make([]byte, 4+pad)
	extra[0], extra[1] = 'F', 'B'
	binary.LittleEndian.PutUint16(extra[2:], uint16(pad))
	for i := 4; i < len(extra); i++ {
		extra[i] = 'Z'
	}
	fh := &zip.FileHeader{
		Name:               name,
		Method:             zip.Store,
		CRC32:              crc32.ChecksumIEEE(data),
		CompressedSize64:   uint64(len(data)),
		UncompressedSize64: uint64(len(data)),
		Extra:              extra,
		ModifiedDate:       1<<5 | 1, // 1980-01-01, the zip epoch
	}
	rw, err := zw.CreateRaw(fh)
	if err != nil {
		return err
	}
	_, err = rw.Write(data)
	return err
}
