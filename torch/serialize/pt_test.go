package serialize

import (
	"archive/zip"
	"bytes"
	"encoding/binary"
	"io"
	"math/big"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestPTRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "model.pt")
	want := sampleTensors()
	if err := WritePT(path, want); err != nil {
		t.Fatal(err)
	}
	got, err := ReadPT(path)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range want {
		if v.Shape == nil {
			v.Shape = []int64{}
			want[k] = v
		}
	}
	checkTensors(t, got, want)
}

// sampleObject is a resumable checkpoint in the shapes WritePTObject takes.
func sampleObject() map[string]any {
	ts := sampleTensors()
	return map[string]any{
		"model":     map[string]RawTensor{"w": ts["half"], "b": ts["brain"]},
		"optimizer": map[string]any{"state": map[int64]any{0: map[string]any{"step": int64(10), "exp_avg": ts["double"]}, 1: map[string]any{}}, "param_groups": []any{map[string]any{"lr": 1e-4, "betas": Tuple{0.9, 0.98}, "params": []any{int64(0), int64(1)}}}},
		"step":      int64(123456789012),
		"epoch":     int64(-3),
		"small":     int64(255),
		"medium":    int64(65535),
		"min":       int64(-1 << 63),
		"max":       int64(1<<63 - 1),
		"loss":      0.125,
		"name":      "run-é",
		"done":      false,
		"ok":        true,
		"nothing":   nil,
		"empty":     map[string]any{},
		"list":      []any{},
		"tuple":     Tuple{},
		"rng":       RawTensor{U8, []int64{5}, []byte{1, 2, 3, 4, 5}},
		"mixed":     map[any]any{"a": int64(1), int64(2): "b", true: nil},
	}
}

func TestPTObjectRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "last.pt")
	obj := sampleObject()
	if err := WritePTObject(path, obj); err != nil {
		t.Fatal(err)
	}
	got, err := ReadPTObject(path)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(summary(got), summary(obj)) {
		t.Errorf("round trip differs:\n got %v\nwant %v", summary(got), summary(obj))
	}
	// Types come back as documented.
	m := got.(map[string]any)
	if _, ok := m["optimizer"].(map[string]any)["state"].(map[any]any); !ok {
		t.Errorf("int-keyed dict came back as %T", m["optimizer"].(map[string]any)["state"])
	}
	if _, ok := m["model"].(map[string]any)["w"].(RawTensor); !ok {
		t.Errorf("tensor came back as %T", m["model"].(map[string]any)["w"])
	}
	// ReadPT unwraps the "model" entry of a checkpoint.
	sd, err := ReadPT(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(sd) != 2 || !sameTensor(sd["w"], sampleTensors()["half"]) {
		t.Errorf("ReadPT of a checkpoint: %v", sd)
	}
}

func TestPTObjectRejects(t *testing.T) {
	path := filepath.Join(t.TempDir(), "x.pt")
	cases := map[string]any{
		"unsupported type": map[string]any{"a": []any{struct{}{}}},
		"bad tensor":       map[string]any{"opt": map[string]any{"w": RawTensor{F32, []int64{3}, nil}}},
		"bad key":          map[any]any{1.5: 1},
	}
	for name, obj := range cases {
		err := WritePTObject(path, obj)
		if err == nil {
			t.Errorf("%s: no error", name)
			continue
		}
		if !strings.Contains(err.Error(), path) {
			t.Errorf("%s: error %q does not name the file", name, err)
		}
	}
	err := WritePTObject(path, cases["bad tensor"])
	if !strings.Contains(err.Error(), `["opt"]["w"]`) {
		t.Errorf("error %q does not say where", err)
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Errorf("a failed write left %s", path)
	}
}

// TestPTLayout checks the zip layout that torch's reader expects.
func TestPTLayout(t *testing.T) {
	path := filepath.Join(t.TempDir(), "model.pt")
	ts := sampleTensors()
	shared := ts["long"]
	ts["tied"] = shared // the same Data: one storage
	if err := WritePT(path, ts); err != nil {
		t.Fatal(err)
	}
	zr, err := zip.OpenReader(path)
	if err != nil {
		t.Fatal(err)
	}
	defer zr.Close()
	names := map[string]*zip.File{}
	for _, f := range zr.File {
		names[f.Name] = f
		if f.Method != zip.Store {
			t.Errorf("%s is compressed", f.Name)
		}
		off, err := f.DataOffset()
		if err != nil {
			t.Fatal(err)
		}
		if off%64 != 0 {
			t.Errorf("%s data at %d, not 64-byte aligned", f.Name, off)
		}
	}
	if zr.File[0].Name != "archive/data.pkl" {
		t.Errorf("first record %s", zr.File[0].Name)
	}
	read := func(name string) string {
		f := names[name]
		if f == nil {
			t.Fatalf("no record %s", name)
		}
		rc, _ := f.Open()
		defer rc.Close()
		b, err := io.ReadAll(rc) // checks the CRC
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		return string(b)
	}
	if v := read("archive/version"); v != "3\n" {
		t.Errorf("version %q", v)
	}
	if v := read("archive/byteorder"); v != "little" {
		t.Errorf("byteorder %q", v)
	}
	storages := 0
	for n := range names {
		if strings.HasPrefix(n, "archive/data/") {
			storages++
			read(n)
		}
	}
	if storages != len(ts)-1 {
		t.Errorf("%d storages for %d tensors, one tied", storages, len(ts))
	}
	got, err := ReadPT(path)
	if err != nil {
		t.Fatal(err)
	}
	checkTensors(t, map[string]RawTensor{"tied": got["tied"], "long": got["long"]}, map[string]RawTensor{"tied": shared, "long": shared})
}

func TestStridedCopy(t *testing.T) {
	// A 2x3 int8 matrix stored row-major, read transposed (3x2, strides 1,3).
	src := []byte{1, 2, 3, 4, 5, 6}
	dst := make([]byte, 6)
	stridedCopy(dst, src, []int64{3, 2}, []int64{1, 3}, 1)
	if !bytes.Equal(dst, []byte{1, 4, 2, 5, 3, 6}) {
		t.Errorf("transpose: %v", dst)
	}
	// Broadcast (stride 0) of 2-byte elements.
	dst = make([]byte, 8)
	stridedCopy(dst, []byte{7, 8, 9, 10}, []int64{2, 2}, []int64{0, 1}, 2)
	if !bytes.Equal(dst, []byte{7, 8, 9, 10, 7, 8, 9, 10}) {
		t.Errorf("broadcast: %v", dst)
	}
}

func TestReadPTErrors(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.pt")
	if err := WritePT(good, sampleTensors()); err != nil {
		t.Fatal(err)
	}
	raw, _ := os.ReadFile(good)
	cases := map[string]struct {
		file []byte
		want string
	}{
		"empty":      {nil, "too short"},
		"text":       {[]byte("hello world, not a checkpoint"), "neither a zip archive nor a legacy"},
		"truncated":  {raw[:len(raw)/2], "zip"},
		"plain zip":  {plainZip(t), "data.pkl"},
		"safetensor": {buildFile(`{}      `, nil), "neither a zip archive nor a legacy"},
	}
	for name, c := range cases {
		path := filepath.Join(dir, name+".pt")
		os.WriteFile(path, c.file, 0o644)
		_, err := ReadPTObject(path)
		if err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want one naming the file and %q", name, err, c.want)
		}
	}
	// A state dict with a non-tensor value is refused by ReadPT, by key.
	obj := filepath.Join(dir, "obj.pt")
	WritePTObject(obj, map[string]any{"w": sampleTensors()["half"], "epoch": int64(3)})
	if _, err := ReadPT(obj); err == nil || !strings.Contains(err.Error(), `"epoch"`) {
		t.Errorf("ReadPT of a mixed dict: %v", err)
	}
}

func plainZip(t *testing.T) []byte {
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	w, _ := zw.Create("readme.txt")
	w.Write([]byte("hi"))
	zw.Close()
	return buf.Bytes()
}

func TestDecodeLong(t *testing.T) {
	for _, c := range []struct {
		b    []byte
		want int64
	}{{nil, 0}, {[]byte{0xff}, -1}, {[]byte{0x80}, -128}, {[]byte{0x7f}, 127}, {[]byte{0, 0x80}, -32768}, {[]byte{0xff, 0x00}, 255}} {
		if got := decodeLong(c.b); got != c.want {
			t.Errorf("decodeLong(% x) = %v, want %d", c.b, got, c.want)
		}
	}
	huge := decodeLong([]byte{0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19})
	if b, ok := huge.(*big.Int); !ok || b.Cmp(legacyMagic) != 0 {
		t.Errorf("magic number decoded as %v", huge)
	}
	// The writer's LONG1 form reads back for values beyond int32.
	for _, v := range []int64{1 << 31, -1<<31 - 1, 1 << 40, -1 << 63, 1<<63 - 1, 0x80_0000_0000} {
		p := newPickler()
		p.int(v)
		b := p.w.Bytes()
		if b[0] != opLong1 {
			t.Fatalf("%d not written as LONG1", v)
		}
		if got := decodeLong(b[2:]); got != v {
			t.Errorf("LONG1 round trip of %d gave %v (% x)", v, got, b)
		}
	}
}

// FuzzUnpickle runs arbitrary pickles through the interpreter and the
// converter: errors are fine, panics are not.
func FuzzUnpickle(f *testing.F) {
	p := newPickler()
	p.w.Write([]byte{opProto, 2})
	p.value(sampleObject(), "", 0)
	p.w.WriteByte(opStop)
	f.Add(p.w.Bytes())
	f.Add([]byte("\x80\x02]q\x00h\x00a.")) // a list that holds itself
	f.Add([]byte("\x80\x02(K\x01K\x02t\x85."))
	f.Fuzz(func(t *testing.T, b []byte) {
		u := newUnpickler(bytes.NewReader(b), int64(len(b)), func(pid any) (any, error) {
			tp, ok := pid.(Tuple)
			if !ok || len(tp) != 5 {
				return nil, io.ErrUnexpectedEOF
			}
			return storageFromPID(tp)
		})
		obj, err := u.load()
		if err != nil {
			return
		}
		src := &storageSource{cache: map[string][]byte{}, load: func(s *storageRef) ([]byte, error) {
			if s.numel > 1<<16 {
				return nil, io.ErrUnexpectedEOF
			}
			return make([]byte, s.numel*int64(s.dtype.Size())), nil
		}}
		convert(obj, src, int64(len(b)))
	})
}

// TestLegacyViews reads a hand-made legacy stream whose tensor uses a
// storage view, the one part of the legacy format torch 1.13 cannot write.
func TestLegacyViews(t *testing.T) {
	p := newPickler()
	pk := func(build func()) {
		p.w.Write([]byte{opProto, 2})
		build()
		p.w.WriteByte(opStop)
	}
	pk(func() { p.w.Write([]byte{opLong1, 10, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19}) })
	pk(func() { p.int(1001) })
	pk(func() { p.value(map[string]any{"little_endian": true}, "", 0) })
	pk(func() {
		p.global("torch._utils", "_rebuild_tensor_v2")
		p.w.WriteByte(opMark)
		p.w.WriteByte(opMark)
		p.str("storage")
		p.global("torch", "ShortStorage")
		p.str("root")
		p.str("cpu")
		p.int(6)
		p.value(Tuple{"view", int64(2), int64(3)}, "", 0)
		p.w.WriteByte(opTuple)
		p.w.WriteByte(opBinPersID)
		p.int(1)               // offset inside the view
		p.intTuple([]int64{2}) // size
		p.intTuple([]int64{1}) // stride
		p.w.WriteByte(opNewFalse)
		p.w.WriteByte(opTuple)
		p.w.WriteByte(opReduce)
	})
	pk(func() { p.value([]any{"root"}, "", 0) })
	file := append([]byte(nil), p.w.Bytes()...)
	file = binary.LittleEndian.AppendUint64(file, 6)
	for i := range 6 {
		file = binary.LittleEndian.AppendUint16(file, uint16(100+i))
	}
	path := filepath.Join(t.TempDir(), "legacy.pt")
	os.WriteFile(path, file, 0o644)
	got, err := ReadPTObject(path)
	if err != nil {
		t.Fatal(err)
	}
	want := RawTensor{I16, []int64{2}, []byte{103, 0, 104, 0}}
	if tn, ok := got.(RawTensor); !ok || !sameTensor(tn, want) {
		t.Errorf("got %v, want %v", got, want)
	}
}
