package serialize

import (
	"archive/zip"
	"bytes"
	"encoding/binary"
	"hash/crc32"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"goclip/internal/testutil"
)

// Tiny crafted files that once crashed or exhausted the reader. Each must
// end in a clear error (or, for shared tuples, a correct result) in well
// under a second, allocating little.

// pickleBytes is a protocol-2 pickle of what build writes.
func pickleBytes(build func(p *pickler)) []byte {
	p := newPickler()
	p.w.Write([]byte{opProto, 2})
	build(p)
	p.w.WriteByte(opStop)
	return bytes.Clone(p.w.Bytes())
}

// writeView writes _rebuild_tensor_v2(storage, offset, size, stride, False,
// OrderedDict()) with the zip format's persistent id ('storage', type, key,
// 'cpu', numel).
func writeView(p *pickler, key string, d DType, numel, offset int64, size, stride []int64) {
	p.global("torch._utils", "_rebuild_tensor_v2")
	p.w.WriteByte(opMark)
	p.w.WriteByte(opMark)
	p.str("storage")
	p.global("torch", dtypes[d].storage)
	p.str(key)
	p.str("cpu")
	p.int(numel)
	p.w.WriteByte(opTuple)
	p.w.WriteByte(opBinPersID)
	p.int(offset)
	p.intTuple(size)
	p.intTuple(stride)
	p.w.WriteByte(opNewFalse)
	p.global("collections", "OrderedDict")
	p.w.WriteByte(opEmptyTuple)
	p.w.WriteByte(opReduce)
	p.w.WriteByte(opTuple)
	p.w.WriteByte(opReduce)
}

// zipRecord is one record of a crafted archive; declared, when not 0, is
// the size the directory claims (as zip64 when it needs to) instead of the
// real one.
type zipRecord struct {
	name     string
	data     []byte
	declared uint64
}

// ptZip is a torch.save archive of the pickle and records (under archive/).
func ptZip(t *testing.T, pkl []byte, records ...zipRecord) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	all := append([]zipRecord{{name: "data.pkl", data: pkl}, {name: "byteorder", data: []byte("little")}}, records...)
	for _, r := range all {
		size := uint64(len(r.data))
		if r.declared != 0 {
			size = r.declared
		}
		w, err := zw.CreateRaw(&zip.FileHeader{Name: "archive/" + r.name, Method: zip.Store, CRC32: crc32.ChecksumIEEE(r.data), CompressedSize64: size, UncompressedSize64: size})
		if err != nil {
			t.Fatal(err)
		}
		w.Write(r.data)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// tensorDictOps writes {name: view} for one view per name.
func tensorDictOps(p *pickler, names []string, view func(p *pickler, name string)) {
	p.w.WriteByte(opEmptyDict)
	p.w.WriteByte(opMark)
	for _, n := range names {
		p.str(n)
		view(p, n)
	}
	p.w.WriteByte(opSetItems)
}

// tensorDictPickle is the pickle of tensorDictOps.
func tensorDictPickle(names []string, view func(p *pickler, name string)) []byte {
	return pickleBytes(func(p *pickler) { tensorDictOps(p, names, view) })
}

// legacyPT is a legacy-format file of obj's pickle and one storage "0" of
// numel elements of es bytes each.
func legacyPT(obj []byte, numel int64, es int) []byte {
	p := newPickler()
	pk := func(build func()) {
		p.w.Write([]byte{opProto, 2})
		build()
		p.w.WriteByte(opStop)
	}
	pk(func() { p.w.Write([]byte{opLong1, 10, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19}) })
	pk(func() { p.int(1001) })
	pk(func() { p.value(map[string]any{"little_endian": true}, "", 0) })
	p.w.Write(obj)
	pk(func() { p.value([]any{"0"}, "", 0) })
	file := bytes.Clone(p.w.Bytes())
	file = binary.LittleEndian.AppendUint64(file, uint64(numel))
	return append(file, make([]byte, numel*int64(es))...)
}

// legacyView is writeView with the legacy 6-tuple persistent id (no view).
func legacyView(p *pickler, d DType, numel int64, size, stride []int64) {
	p.global("torch._utils", "_rebuild_tensor_v2")
	p.w.WriteByte(opMark)
	p.w.WriteByte(opMark)
	p.str("storage")
	p.global("torch", dtypes[d].storage)
	p.str("0")
	p.str("cpu")
	p.int(numel)
	p.w.WriteByte(opNone)
	p.w.WriteByte(opTuple)
	p.w.WriteByte(opBinPersID)
	p.int(0)
	p.intTuple(size)
	p.intTuple(stride)
	p.w.WriteByte(opNewFalse)
	p.global("collections", "OrderedDict")
	p.w.WriteByte(opEmptyTuple)
	p.w.WriteByte(opReduce)
	p.w.WriteByte(opTuple)
	p.w.WriteByte(opReduce)
}

// hostileFiles are the crafted files and a part of the error each must give.
func hostileFiles(t *testing.T) map[string]struct {
	file []byte
	want string
} {
	one := func(d DType, numel, offset int64, size, stride []int64) []byte {
		return tensorDictPickle([]string{"w"}, func(p *pickler, _ string) { writeView(p, "0", d, numel, offset, size, stride) })
	}
	four := zipRecord{name: "data/0", data: make([]byte, 8)}
	files := map[string]struct {
		file []byte
		want string
	}{
		// torch.zeros(1).expand(2**20, 2**20): 4 TB as a contiguous copy.
		"stride0_expand": {ptZip(t, one(F32, 1, 0, []int64{1 << 20, 1 << 20}, []int64{0, 0}), four), `tensor ["w"]: F32[1048576 1048576] with strides [0 0] would take 4398046511104 bytes`},
		// numel 2^62 of 8-byte elements: numel*size wraps around int64.
		"size_overflow": {ptZip(t, one(F64, 1, 0, []int64{1 << 31, 1 << 31}, []int64{0, 0}), four), `tensor ["w"]: shape [2147483648 2147483648] of F64 is too large`},
		// an offset near 2^63: offset+span wraps around int64.
		"offset_overflow": {ptZip(t, one(U8, 8, 1<<63-1, []int64{2}, []int64{1}), four), `tensor ["w"]: offset 9223372036854775807 with size [2] and strides [1] overflows`},
		// a zip64 record that claims 1 TiB in a file of a few hundred bytes.
		"zip64_size": {ptZip(t, one(U8, 1<<40, 0, []int64{1 << 40}, []int64{1}), zipRecord{name: "data/0", data: make([]byte, 16), declared: 1 << 40}), "record archive/data/0 declares 1099511627776 bytes at offset"},
		// a stored record that claims 100 MB.
		"record_past_end": {ptZip(t, one(U8, 100<<20, 0, []int64{100 << 20}, []int64{1}), zipRecord{name: "data/0", data: make([]byte, 16), declared: 100 << 20}), "past the end of the file"},
		// 300 views of one 4-byte storage, 1 MiB each: 300 MiB from a few kB.
		"many_expands": {ptZip(t, tensorDictPickle(func() []string {
			var n []string
			for i := range 300 {
				n = append(n, "w"+strconv.Itoa(i))
			}
			return n
		}(), func(p *pickler, _ string) { writeView(p, "0", F32, 1, 0, []int64{1 << 18}, []int64{0}) }), four), "the file's tensors would add up to more than"},
		// the legacy container goes through the same checks.
		"legacy_expand": {legacyPT(tensorDictPickle([]string{"w"}, func(p *pickler, _ string) {
			legacyView(p, F32, 1, []int64{1 << 20, 1 << 20}, []int64{0, 0})
		}), 1, 4), `tensor ["w"]: F32[1048576 1048576] with strides [0 0] would take`},
		// a legacy storage whose element count times its size wraps around.
		"legacy_storage_overflow": {legacyPT(tensorDictPickle([]string{"w"}, func(p *pickler, _ string) {
			legacyView(p, F64, 1<<59, []int64{1}, []int64{1})
		}), 1<<59, 0), "storage 0 runs past the end of the file"},
		// os.system("...") beside a state dict, as pickle writes it on Linux.
		"posix_system": {ptZip(t, pickleBytes(func(p *pickler) {
			p.w.WriteByte(opEmptyDict)
			p.w.WriteByte(opMark)
			p.str("state_dict")
			tensorDictOps(p, []string{"w"}, func(p *pickler, _ string) { writeView(p, "0", F32, 2, 0, []int64{2}, []int64{1}) })
			p.str("x")
			p.global("posix", "system")
			p.str("echo pwned")
			p.w.WriteByte(opTuple1)
			p.w.WriteByte(opReduce)
			p.w.WriteByte(opSetItems)
		}), four), "global posix.system is refused"},
		// the same through STACK_GLOBAL (protocol 4).
		"stack_global": {ptZip(t, pickleBytes(func(p *pickler) {
			p.str("builtins")
			p.str("eval")
			p.w.WriteByte(opStackGlobal)
			p.str("1")
			p.w.WriteByte(opTuple1)
			p.w.WriteByte(opReduce)
		}), four), "global builtins.eval is refused"},
		// an allowed global that is a class, not a function, called.
		"call_a_class": {ptZip(t, pickleBytes(func(p *pickler) {
			p.global("torch", "Tensor")
			p.w.WriteByte(opEmptyTuple)
			p.w.WriteByte(opReduce)
		}), four), "cannot call torch.Tensor"},
		// _codecs.encode of one 100 kB string, 100,000 times through the
		// memo: 10 GB copied by a 800 kB file.
		"quadratic_copies": {ptZip(t, pickleBytes(func(p *pickler) {
			p.w.WriteByte(opEmptyList)
			p.global("_codecs", "encode")
			p.w.Write([]byte{opBinPut, 0})
			p.w.WriteByte(opPop)
			p.str(strings.Repeat("a", 100_000))
			p.w.Write([]byte{opBinPut, 1})
			p.w.WriteByte(opPop)
			for range 100_000 {
				p.w.Write([]byte{opBinGet, 0, opBinGet, 1, opTuple1, opReduce, opPop})
			}
		}), four), "the pickle copies more than"},
	}
	return files
}

// sharedTuples is {"x": t} where t = (t', t') nested depth times: 2^depth
// leaves in 2*depth bytes.
func sharedTuples(depth int) []byte {
	return pickleBytes(func(p *pickler) {
		p.w.WriteByte(opEmptyDict)
		p.str("x")
		p.int(7)
		for range depth {
			p.w.Write([]byte{opDup, opTuple2})
		}
		p.w.WriteByte(opSetItem)
	})
}

const (
	hostileTime  = time.Second
	hostileBytes = 32 << 20
)

// hostileDir holds the crafted files (but the largest), for the CLI's tests
// and as seeds of FuzzReadPT. GOCLIP_WRITE_HOSTILE=1 rewrites them.
const hostileDir = "testdata/hostile"

// TestHostileCorpus: the files in testdata/hostile are the ones
// hostileFiles makes.
func TestHostileCorpus(t *testing.T) {
	files := map[string][]byte{"shared_tuples": ptZip(t, sharedTuples(60))}
	for name, c := range hostileFiles(t) {
		if len(c.file) <= 64<<10 {
			files[name] = c.file
		}
	}
	for name, file := range files {
		path := filepath.Join(hostileDir, name+".pt")
		if os.Getenv("GOCLIP_WRITE_HOSTILE") == "1" {
			if err := os.MkdirAll(hostileDir, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, file, 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		b, err := os.ReadFile(path)
		if err != nil || !bytes.Equal(b, file) {
			t.Errorf("%s is not what hostileFiles makes (%v): rerun with GOCLIP_WRITE_HOSTILE=1", path, err)
		}
	}
}

func TestHostilePT(t *testing.T) {
	dir := t.TempDir()
	for name, c := range hostileFiles(t) {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(dir, name+".pt")
			if err := os.WriteFile(path, c.file, 0o644); err != nil {
				t.Fatal(err)
			}
			var err error
			elapsed, alloc := testutil.MeasureAlloc(func() { _, err = ReadPTObject(path) })
			t.Logf("%d bytes: %v in %v, %d bytes allocated", len(c.file), err, elapsed, alloc)
			if err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %v, want one naming %s and saying %q", err, path, c.want)
			}
			if err != nil && strings.Contains(err.Error(), "\n") {
				t.Errorf("error is not one line: %q", err)
			}
			if elapsed > hostileTime || alloc > hostileBytes+uint64(len(c.file)) {
				t.Errorf("took %v and allocated %d bytes", elapsed, alloc)
			}
		})
	}
}

// TestSharedTuples: 2^60 leaves described by 120 bytes read as the shared
// structure the pickle describes, fast.
func TestSharedTuples(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tuples.pt")
	os.WriteFile(path, ptZip(t, sharedTuples(60)), 0o644)
	var obj any
	var err error
	elapsed, alloc := testutil.MeasureAlloc(func() { obj, err = ReadPTObject(path) })
	if err != nil {
		t.Fatal(err)
	}
	if elapsed > hostileTime || alloc > hostileBytes {
		t.Errorf("took %v and allocated %d bytes", elapsed, alloc)
	}
	v := obj.(map[string]any)["x"]
	for i := range 60 {
		tp, ok := v.(Tuple)
		if !ok || len(tp) != 2 {
			t.Fatalf("level %d: %T, not a pair", i, v)
		}
		if i < 59 {
			a, ok1 := tp[0].(Tuple)
			b, ok2 := tp[1].(Tuple)
			if !ok1 || !ok2 || len(a) == 0 || &a[0] != &b[0] {
				t.Fatalf("level %d: not one shared tuple twice", i)
			}
		} else if tp[0] != int64(7) || tp[1] != int64(7) {
			t.Errorf("leaves %v", tp)
		}
		v = tp[0]
	}
	// Read as a state dict, it is an error naming the key.
	if _, err := ReadPT(path); err == nil || !strings.Contains(err.Error(), `key "x" holds a tuple`) {
		t.Errorf("ReadPT: %v", err)
	}
}

// TestViewsWithinBounds: real views (a stride-0 expand of a row, HF's
// position_ids [1, N] over arange(N), a transpose, an offset slice) still
// read as their values.
func TestViewsWithinBounds(t *testing.T) {
	f32 := func(vs ...float32) []byte {
		var b []byte
		for _, v := range vs {
			b = binary.LittleEndian.AppendUint32(b, math.Float32bits(v))
		}
		return b
	}
	storage := f32(0, 1, 2, 3, 4, 5)
	pkl := tensorDictPickle([]string{"expand", "position_ids", "transpose", "slice", "big_expand"}, func(p *pickler, name string) {
		switch name {
		case "expand": // [[0,1,2]] * 4
			writeView(p, "0", F32, 6, 0, []int64{4, 3}, []int64{0, 1})
		case "position_ids":
			writeView(p, "0", F32, 6, 0, []int64{1, 6}, []int64{0, 1})
		case "transpose": // [[0,1,2],[3,4,5]]^T
			writeView(p, "0", F32, 6, 0, []int64{3, 2}, []int64{1, 3})
		case "slice":
			writeView(p, "0", F32, 6, 4, []int64{2}, []int64{1})
		case "big_expand": // 1000 copies of element 5: within the slack
			writeView(p, "0", F32, 6, 5, []int64{1000}, []int64{0})
		}
	})
	path := filepath.Join(t.TempDir(), "views.pt")
	os.WriteFile(path, ptZip(t, pkl, zipRecord{name: "data/0", data: storage}), 0o644)
	got, err := ReadPT(path)
	if err != nil {
		t.Fatal(err)
	}
	fives := make([]float32, 1000)
	for i := range fives {
		fives[i] = 5
	}
	want := map[string]RawTensor{
		"expand":       {F32, []int64{4, 3}, f32(0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1, 2)},
		"position_ids": {F32, []int64{1, 6}, storage},
		"transpose":    {F32, []int64{3, 2}, f32(0, 3, 1, 4, 2, 5)},
		"slice":        {F32, []int64{2}, f32(4, 5)},
		"big_expand":   {F32, []int64{1000}, f32(fives...)},
	}
	checkTensors(t, got, want)
}
