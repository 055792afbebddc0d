package testutil

import (
	"os"
	"strings"
	"testing"

	"codeberg.org/sbinet/npyio"
)

// ReadNpy reads a .npy file: its shape, and its values as []float32 (dtype <f4),
// []float64 (<f8) or []int64 (<i8). Any other dtype, Fortran order, or an unreadable
// file fails the test.
func ReadNpy(t testing.TB, path string) (shape []int, data any) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r, err := npyio.NewReader(f)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	if r.Header.Descr.Fortran {
		t.Fatalf("%s: Fortran order (values are read in C order: save np.ascontiguousarray)", path)
	}
	read := func(v any) {
		if err := r.Read(v); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
	}
	switch typ := strings.Trim(r.Header.Descr.Type, "'"); typ {
	case "<f4":
		var v []float32
		read(&v)
		data = v
	case "<f8":
		var v []float64
		read(&v)
		data = v
	case "<i8":
		var v []int64
		read(&v)
		data = v
	default:
		t.Fatalf("%s: dtype %s, want <f4, <f8 or <i8", path, typ)
	}
	return r.Header.Descr.Shape, data
}

// ReadNpyFloat32 reads a .npy file of dtype <f4: its shape and values. Another dtype
// fails the test.
func ReadNpyFloat32(t testing.TB, path string) ([]int, []float32) {
	t.Helper()
	return readTyped[float32](t, path, "<f4")
}

// ReadNpyInt64 reads a .npy file of dtype <i8: its shape and values. Another dtype
// fails the test.
func ReadNpyInt64(t testing.TB, path string) ([]int, []int64) {
	t.Helper()
	return readTyped[int64](t, path, "<i8")
}

func readTyped[T any](t testing.TB, path, dtype string) ([]int, []T) {
	t.Helper()
	shape, data := ReadNpy(t, path)
	v, ok := data.([]T)
	if !ok {
		t.Fatalf("%s: dtype is not %s (values %T)", path, dtype, data)
	}
	return shape, v
}
