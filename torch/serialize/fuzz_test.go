package serialize

import (
	"bytes"
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

// tensorBytes sums the bytes of the distinct tensors in a value ReadPTObject returned,
// each validated; shared containers are walked once.
func tensorBytes(t *testing.T, v any, seen map[any]bool) int64 {
	rv := reflect.ValueOf(v)
	switch rv.Kind() {
	case reflect.Map, reflect.Pointer:
		if seen[rv.UnsafePointer()] {
			return 0
		}
		seen[rv.UnsafePointer()] = true
	case reflect.Slice:
		if rv.Len() > 0 {
			key := [2]any{rv.Index(0).Addr().UnsafePointer(), rv.Len()}
			if seen[key] {
				return 0
			}
			seen[key] = true
		}
	}
	var n int64
	switch v := v.(type) {
	case RawTensor:
		if err := v.Validate(); err != nil {
			t.Fatalf("an invalid tensor came back: %v", err)
		}
		return int64(len(v.Data))
	case map[string]any:
		for _, x := range v {
			n += tensorBytes(t, x, seen)
		}
	case map[any]any:
		for _, x := range v {
			n += tensorBytes(t, x, seen)
		}
	case []any:
		for _, x := range v {
			n += tensorBytes(t, x, seen)
		}
	case Tuple:
		for _, x := range v {
			n += tensorBytes(t, x, seen)
		}
	case *Object:
		for _, x := range v.Args {
			n += tensorBytes(t, x, seen)
		}
		n += tensorBytes(t, v.State, seen)
	}
	return n
}

// FuzzReadPT feeds arbitrary files to the .pt reader (zip and legacy containers): it
// returns a value or an error, never panics, and what it returns holds valid tensors
// that add up to no more than the limits of the package doc allow. Seeds: files
// WritePT and WritePTObject write, a legacy file, and testdata/hostile (but its largest).
func FuzzReadPT(f *testing.F) {
	dir := f.TempDir()
	sd, obj := filepath.Join(dir, "sd.pt"), filepath.Join(dir, "obj.pt")
	if err := WritePT(sd, sampleTensors()); err != nil {
		f.Fatal(err)
	}
	if err := WritePTObject(obj, sampleObject()); err != nil {
		f.Fatal(err)
	}
	for _, p := range []string{sd, obj} {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add(legacyPT(tensorDictPickle([]string{"w"}, func(p *pickler, _ string) {
		legacyView(p, F32, 4, []int64{2, 2}, []int64{1, 2})
	}), 4, 4))
	hostile, err := filepath.Glob(filepath.Join(hostileDir, "*.pt"))
	if err != nil || len(hostile) == 0 {
		f.Fatalf("no seeds in %s: %v", hostileDir, err)
	}
	for _, p := range hostile {
		if filepath.Base(p) == "many_expands.pt" {
			continue // 16 MB a run: it would slow every mutation of it
		}
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, file []byte) {
		v, err := readPTFrom("fuzz.pt", bytes.NewReader(file), int64(len(file)))
		if err != nil {
			return
		}
		if n := tensorBytes(t, v, map[any]bool{}); n > maxExpansion*int64(len(file))+fileSlack {
			t.Fatalf("%d bytes of tensors from a %d-byte file", n, len(file))
		}
	})
}

// FuzzSafetensorsSharded: an index and two shards of arbitrary bytes read as a sharded
// checkpoint give valid tensors, each where the index says, or an error.
func FuzzSafetensorsSharded(f *testing.F) {
	a := buildFile(`{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}`, make([]byte, 8))
	b := buildFile(`{"__metadata__":{"format":"pt"},"b":{"dtype":"BF16","shape":[1,2],"data_offsets":[0,4]}}`, make([]byte, 4))
	f.Add([]byte(`{"metadata":{"total_size":12},"weight_map":{"w":"a.safetensors","b":"b.safetensors"}}`), a, b)
	f.Add([]byte(`{"weight_map":{"w":"a.safetensors","b":"a.safetensors"}}`), a, b)
	f.Add([]byte(`{"weight_map":{"w":"../a.safetensors"}}`), a, b)
	f.Add([]byte(`{"weight_map":{"w":"b.safetensors"}}`), b, b)
	f.Add([]byte(`{"weight_map":null}`), a, b)
	f.Fuzz(func(t *testing.T, index, shardA, shardB []byte) {
		dir := t.TempDir()
		os.WriteFile(filepath.Join(dir, SafetensorsIndexName), index, 0o644)
		os.WriteFile(filepath.Join(dir, "a.safetensors"), shardA, 0o644)
		os.WriteFile(filepath.Join(dir, "b.safetensors"), shardB, 0o644)
		ix, err := ReadSafetensorsIndex(dir)
		if err != nil {
			return
		}
		for name, shard := range ix.WeightMap {
			if filepath.Base(shard) != shard || shard == "." || shard == ".." {
				t.Fatalf("index accepted shard %q for %q", shard, name)
			}
		}
		ts, _, err := ReadSafetensorsSharded(dir)
		if err != nil {
			return
		}
		for name, tn := range ts {
			if err := tn.Validate(); err != nil {
				t.Fatalf("%s: %v", name, err)
			}
		}
		for name := range ix.WeightMap {
			if _, ok := ts[name]; !ok {
				t.Fatalf("%s is in the index but not read", name)
			}
		}
	})
}
