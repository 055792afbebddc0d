package serialize

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func sameTensor(a, b RawTensor) bool {
	return a.DType == b.DType && slices.Equal(a.Shape, b.Shape) && bytes.Equal(a.Data, b.Data)
}

func checkTensors(t *testing.T, got, want map[string]RawTensor) {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("got %d tensors, want %d", len(got), len(want))
	}
	for k, w := range want {
		g, ok := got[k]
		if !ok {
			t.Errorf("tensor %q missing", k)
			continue
		}
		if !sameTensor(g, w) {
			t.Errorf("tensor %q: got %s%v % x, want %s%v % x", k, g.DType, g.Shape, g.Data, w.DType, w.Shape, w.Data)
		}
	}
}

func TestSafetensorsRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "model.safetensors")
	want := sampleTensors()
	meta := map[string]string{"format": "pt", "note": `quotes " and <html> & ünïcode`}
	if err := WriteSafetensors(path, want, meta); err != nil {
		t.Fatal(err)
	}
	got, gotMeta, err := ReadSafetensors(path)
	if err != nil {
		t.Fatal(err)
	}
	checkTensors(t, got, want)
	if len(gotMeta) != len(meta) || gotMeta["note"] != meta["note"] || gotMeta["format"] != "pt" {
		t.Errorf("metadata %v, want %v", gotMeta, meta)
	}

	infos, _, err := ReadSafetensorsHeader(path)
	if err != nil {
		t.Fatal(err)
	}
	// Every tensor's data is aligned to its element size, the header to 8.
	raw, _ := os.ReadFile(path)
	n := int64(binary.LittleEndian.Uint64(raw))
	if n%8 != 0 {
		t.Errorf("header length %d is not a multiple of 8", n)
	}
	for k, info := range infos {
		if (8+n+info.DataOffsets[0])%int64(info.DType.Size()) != 0 {
			t.Errorf("%s at %d is not aligned to %d", k, info.DataOffsets[0], info.DType.Size())
		}
	}

	// Without metadata there is no __metadata__ entry.
	if err := WriteSafetensors(path, want, nil); err != nil {
		t.Fatal(err)
	}
	if _, m, err := ReadSafetensors(path); err != nil || m != nil {
		t.Errorf("metadata %v, err %v; want none", m, err)
	}
}

// TestSafetensorsReferenceBytes checks the writer against the byte layouts
// that the reference implementation's own tests expect.
func TestSafetensorsReferenceBytes(t *testing.T) {
	f32s := func(vs ...float32) []byte {
		var b []byte
		for _, v := range vs {
			b = binary.LittleEndian.AppendUint32(b, math.Float32bits(v))
		}
		return b
	}
	data := f32s(0, 1, 2, 3, 4, 5)
	cases := []struct {
		name    string
		tensors map[string]RawTensor
		meta    map[string]string
		header  string
	}{
		{"no padding", map[string]RawTensor{"attn.0": {F32, []int64{1, 2, 3}, data}}, nil,
			`{"attn.0":{"dtype":"F32","shape":[1,2,3],"data_offsets":[0,24]}}`},
		{"padded", map[string]RawTensor{"attn0": {F32, []int64{1, 1, 2, 3}, data}}, nil,
			`{"attn0":{"dtype":"F32","shape":[1,1,2,3],"data_offsets":[0,24]}}       `},
		{"empty", map[string]RawTensor{}, nil, `{}      `},
		{"metadata", map[string]RawTensor{}, map[string]string{"framework": "pt"},
			`{"__metadata__":{"framework":"pt"}}     `},
	}
	for _, c := range cases {
		path := filepath.Join(t.TempDir(), "x.safetensors")
		if err := WriteSafetensors(path, c.tensors, c.meta); err != nil {
			t.Fatal(err)
		}
		got, _ := os.ReadFile(path)
		want := binary.LittleEndian.AppendUint64(nil, uint64(len(c.header)))
		want = append(want, c.header...)
		for _, tn := range c.tensors {
			want = append(want, tn.Data...)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s:\n got %q\nwant %q", c.name, got, want)
		}
	}
}

// TestSafetensorsOrder: mixed dtypes are laid out by decreasing element size
// (the reference's dtype order), then by name.
func TestSafetensorsOrder(t *testing.T) {
	path := filepath.Join(t.TempDir(), "x.safetensors")
	ts := map[string]RawTensor{
		"a_bool": {BOOL, []int64{3}, []byte{1, 0, 1}},
		"b_f32":  {F32, []int64{1}, make([]byte, 4)},
		"c_i64":  {I64, []int64{1}, make([]byte, 8)},
		"a_f32":  {F32, []int64{1}, make([]byte, 4)},
		"d_bf16": {BF16, []int64{1}, make([]byte, 2)},
		"e_f16":  {F16, []int64{1}, make([]byte, 2)},
	}
	if err := WriteSafetensors(path, ts, nil); err != nil {
		t.Fatal(err)
	}
	infos, _, err := ReadSafetensorsHeader(path)
	if err != nil {
		t.Fatal(err)
	}
	names := make([]string, 0, len(infos))
	for k := range infos {
		names = append(names, k)
	}
	slices.SortFunc(names, func(a, b string) int { return int(infos[a].DataOffsets[0] - infos[b].DataOffsets[0]) })
	want := []string{"c_i64", "a_f32", "b_f32", "d_bf16", "e_f16", "a_bool"}
	if !slices.Equal(names, want) {
		t.Errorf("layout order %v, want %v", names, want)
	}
}

func TestSafetensorsReadInto(t *testing.T) {
	path := filepath.Join(t.TempDir(), "x.safetensors")
	want := sampleTensors()
	if err := WriteSafetensors(path, want, nil); err != nil {
		t.Fatal(err)
	}
	f, err := OpenSafetensors(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if len(f.Names()) != len(want) {
		t.Fatalf("names %v", f.Names())
	}
	for _, name := range f.Names() {
		info, _ := f.Info(name)
		dst := make([]byte, info.DataOffsets[1]-info.DataOffsets[0])
		if err := f.ReadInto(name, dst); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(dst, want[name].Data) {
			t.Errorf("%s: bytes differ", name)
		}
	}
	if err := f.ReadInto("long", make([]byte, 3)); err == nil || !strings.Contains(err.Error(), `"long"`) {
		t.Errorf("short destination: %v", err)
	}
	if _, err := f.Tensor("nope"); err == nil || !strings.Contains(err.Error(), `"nope"`) {
		t.Errorf("missing tensor: %v", err)
	}
}

// buildFile assembles a safetensors file from a raw header and data.
func buildFile(header string, data []byte) []byte {
	b := binary.LittleEndian.AppendUint64(nil, uint64(len(header)))
	b = append(b, header...)
	return append(b, data...)
}

func TestSafetensorsCorrupt(t *testing.T) {
	good := `{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}}`
	cases := []struct {
		name string
		file []byte
		want []string // substrings of the error besides the path
	}{
		{"empty file", nil, []string{"too short"}},
		{"short length", []byte{1, 2, 3}, []string{"too short"}},
		{"huge header length", binary.LittleEndian.AppendUint64(nil, 1<<40), []string{"exceeds the limit"}},
		{"header past EOF", append(binary.LittleEndian.AppendUint64(nil, 500), `{}`...), []string{"header length 500", "past the end"}},
		{"not json", buildFile(`{"w":`, nil), []string{"invalid JSON"}},
		{"not an object", buildFile(`[1,2]   `, nil), []string{"'{'"}},
		{"unknown dtype", buildFile(`{"w":{"dtype":"F8_E4M3","shape":[2],"data_offsets":[0,2]}}`, make([]byte, 2)), []string{`"w"`, "unknown dtype", "F8_E4M3"}},
		{"offsets past EOF", buildFile(good, make([]byte, 8)), []string{`"b"`, "past the end"}},
		{"truncated data", buildFile(`{"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}`, make([]byte, 10)), []string{`"w"`, "past the end"}},
		{"trailing data", buildFile(good, make([]byte, 16)), []string{"holds 16 bytes"}},
		{"size mismatch", buildFile(`{"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}`, make([]byte, 8)), []string{`"w"`, "needs 12 bytes"}},
		{"overlap", buildFile(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}`, make([]byte, 8)), []string{`"b"`, "overlap", `"a"`}},
		{"gap", buildFile(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}}`, make([]byte, 12)), []string{`"b"`, "gap"}},
		{"not from zero", buildFile(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}`, make([]byte, 8)), []string{`"a"`, "start at 0"}},
		{"negative dim", buildFile(`{"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,0]}}`, nil), []string{`"a"`, "negative"}},
		{"overflow", buildFile(`{"a":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,0]}}`, nil), []string{`"a"`, "too many"}},
		{"missing field", buildFile(`{"a":{"dtype":"F32","shape":[1]}}`, make([]byte, 4)), []string{`"a"`, "data_offsets"}},
		{"bad offsets", buildFile(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[4,0]}}`, make([]byte, 4)), []string{`"a"`, "invalid data_offsets"}},
		{"three offsets", buildFile(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4,8]}}`, make([]byte, 4)), []string{`"a"`, "3 values"}},
		{"duplicate key", buildFile(`{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}`, make([]byte, 1)), []string{`"a"`, "twice"}},
		{"bad metadata", buildFile(`{"__metadata__":{"n":1}}`, nil), []string{"__metadata__"}},
		{"garbage after json", buildFile(`{} x`, nil), []string{"trailing garbage"}},
		{"not utf8", buildFile("{\"\xff\":1}", nil), []string{"UTF-8"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "bad.safetensors")
			if err := os.WriteFile(path, c.file, 0o644); err != nil {
				t.Fatal(err)
			}
			for _, read := range []func() error{
				func() error { _, _, err := ReadSafetensors(path); return err },
				func() error { _, _, err := ReadSafetensorsHeader(path); return err },
			} {
				err := read()
				if err == nil {
					t.Fatal("no error")
				}
				for _, w := range append([]string{path}, c.want...) {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q does not mention %q", err, w)
					}
				}
			}
		})
	}
}

func TestWriteSafetensorsRejects(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "x.safetensors")
	for name, ts := range map[string]map[string]RawTensor{
		"short data":    {"w": {F32, []int64{2}, make([]byte, 7)}},
		"unknown dtype": {"w": {"F8", []int64{2}, make([]byte, 2)}},
		"reserved name": {"__metadata__": {U8, []int64{1}, []byte{1}}},
	} {
		err := WriteSafetensors(path, ts, nil)
		if err == nil {
			t.Errorf("%s: no error", name)
			continue
		}
		for k := range ts {
			if !strings.Contains(err.Error(), k) || !strings.Contains(err.Error(), path) {
				t.Errorf("%s: error %q should name %q and the file", name, err, k)
			}
		}
	}
	// A failed write leaves nothing behind.
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("left files behind: %v", entries)
	}
}

func TestSafetensorsSharded(t *testing.T) {
	dir := t.TempDir()
	all := sampleTensors()
	shards := map[string]map[string]RawTensor{"model-00001-of-00002.safetensors": {}, "model-00002-of-00002.safetensors": {}}
	weightMap := map[string]string{}
	i := 0
	for k, v := range all {
		name := "model-00001-of-00002.safetensors"
		if i%2 == 1 {
			name = "model-00002-of-00002.safetensors"
		}
		shards[name][k] = v
		weightMap[k] = name
		i++
	}
	for name, ts := range shards {
		if err := WriteSafetensors(filepath.Join(dir, name), ts, map[string]string{"format": "pt"}); err != nil {
			t.Fatal(err)
		}
	}
	writeIndex := func(wm map[string]string) {
		b, _ := json.Marshal(map[string]any{"metadata": map[string]any{"total_size": 123}, "weight_map": wm})
		if err := os.WriteFile(filepath.Join(dir, SafetensorsIndexName), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	writeIndex(weightMap)
	ix, err := ReadSafetensorsIndex(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(ix.Shards()) != 2 || ix.Metadata["total_size"] != 123.0 {
		t.Errorf("index %+v", ix)
	}
	got, meta, err := ReadSafetensorsSharded(filepath.Join(dir, SafetensorsIndexName))
	if err != nil {
		t.Fatal(err)
	}
	checkTensors(t, got, all)
	if meta["format"] != "pt" {
		t.Errorf("metadata %v", meta)
	}

	// A key mapped to the wrong shard is reported by name.
	bad := map[string]string{}
	for k, v := range weightMap {
		bad[k] = v
	}
	bad["half"] = "model-00001-of-00002.safetensors"
	if weightMap["half"] == bad["half"] {
		bad["half"] = "model-00002-of-00002.safetensors"
	}
	writeIndex(bad)
	if _, _, err := ReadSafetensorsSharded(dir); err == nil || !strings.Contains(err.Error(), `"half"`) {
		t.Errorf("wrong shard: %v", err)
	}
	writeIndex(map[string]string{"x": "../evil.safetensors"})
	if _, err := ReadSafetensorsIndex(dir); err == nil || !strings.Contains(err.Error(), "evil") {
		t.Errorf("path escape: %v", err)
	}
}

// FuzzSafetensors feeds arbitrary files to the reader: it must return a
// value or an error, never panic. The seed corpus is in
// testdata/fuzz/FuzzSafetensors.
func FuzzSafetensors(f *testing.F) {
	f.Add(buildFile(`{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}`, make([]byte, 8)))
	f.Add(buildFile(`{"__metadata__":{"a":"b"},"x":{"dtype":"BOOL","shape":[],"data_offsets":[0,1]}}`, []byte{1}))
	f.Add(buildFile(`{"a":{"dtype":"I64","shape":[0,3],"data_offsets":[0,0]},"b":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}`, []byte{1}))
	f.Fuzz(func(t *testing.T, file []byte) {
		s, err := newSafetensorsFile("fuzz", bytes.NewReader(file), int64(len(file)))
		if err != nil {
			return
		}
		ts, _, err := s.readAll()
		if err != nil {
			t.Fatalf("header accepted but data unreadable: %v", err)
		}
		for k, v := range ts {
			if err := v.Validate(); err != nil {
				t.Fatalf("accepted invalid tensor %q: %v", k, err)
			}
		}
		// What was read writes back and reads again unchanged.
		if err := checkWritable("fuzz", ts); err != nil {
			t.Fatalf("rewrite: %v", err)
		}
		var buf bytes.Buffer
		if err := encodeSafetensors(&buf, ts, s.Metadata()); err != nil {
			t.Fatalf("rewrite: %v", err)
		}
		s2, err := newSafetensorsFile("rewritten", bytes.NewReader(buf.Bytes()), int64(buf.Len()))
		if err != nil {
			t.Fatalf("reread: %v", err)
		}
		again, _, err := s2.readAll()
		if err != nil {
			t.Fatalf("reread: %v", err)
		}
		checkTensors(t, again, ts)
	})
}
