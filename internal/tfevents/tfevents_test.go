package tfevents

import (
	"encoding/json"
	"hash/crc32"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"goclip/internal/testutil"
)

// TestCRC32C checks the checksum against CRC-32C's published check value and the
// mask against its definition.
func TestCRC32C(t *testing.T) {
	if c := crc32.Checksum([]byte("123456789"), castagnoli); c != 0xe3069283 {
		t.Fatalf("CRC-32C(123456789) = %#x, want 0xe3069283", c)
	}
	c := crc32.Checksum([]byte("abc"), castagnoli)
	want := ((c >> 15) | (c << 17)) + 0xa282ead8
	if got := maskedCRC([]byte("abc")); got != want {
		t.Fatalf("masked CRC %#x, want %#x", got, want)
	}
}

// TestRoundTrip writes events, reads them back, and expects a flipped byte to be
// reported with the file's name.
func TestRoundTrip(t *testing.T) {
	dir := t.TempDir()
	now := time.Unix(1700000000, 250_000_000)
	w, err := Create(dir, now, []Event{{WallTime: 1.5, Step: 3, Scalars: []Scalar{{"a", 0.25}, {"b", -2}}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Add(Event{WallTime: WallTime(now.Add(time.Second)), Step: 7, Scalars: []Scalar{{"a", math.NaN()}}}); err != nil {
		t.Fatal(err)
	}
	evs, err := ReadFile(w.Path)
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != 3 || evs[0].FileVersion != FileVersion || evs[0].WallTime != 1700000000.25 {
		t.Fatalf("events %+v: want the file version first at 1700000000.25 and two summaries", evs)
	}
	if e := evs[1]; e.Step != 3 || e.WallTime != 1.5 || len(e.Scalars) != 2 || e.Scalars[0] != (Scalar{"a", 0.25}) || e.Scalars[1] != (Scalar{"b", -2}) {
		t.Fatalf("second event %+v", e)
	}
	if e := evs[2]; e.Step != 7 || len(e.Scalars) != 1 || !math.IsNaN(e.Scalars[0].Value) {
		t.Fatalf("third event %+v", e)
	}
	// A second Create in the folder replaces the first file.
	w2, err := Create(dir, now, nil)
	if err != nil {
		t.Fatal(err)
	}
	if files, _ := Files(dir); len(files) != 1 || files[0] != w2.Path {
		t.Fatalf("after a second Create the folder holds %v, want only %s", files, w2.Path)
	}
	data, err := os.ReadFile(w.Path)
	if err == nil {
		t.Fatalf("the first event file %s is still there", w.Path)
	}
	data, err = os.ReadFile(w2.Path)
	if err != nil {
		t.Fatal(err)
	}
	data[len(data)-6] ^= 1
	bad := filepath.Join(dir, "bad")
	if err := os.WriteFile(bad, data, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadFile(bad); err == nil || !strings.Contains(err.Error(), bad) || !strings.Contains(err.Error(), "CRC") {
		t.Fatalf("a flipped byte gave %v, want a CRC error naming %s", err, bad)
	}
}

// TestTensorBoardReads has TensorBoard's own reader (EventAccumulator, which checks
// both CRCs of every record) read a file of this package.
func TestTensorBoardReads(t *testing.T) {
	py := testutil.PythonTorch(t, "tensorboard")
	dir := t.TempDir()
	w, err := Create(dir, time.Now(), nil)
	if err != nil {
		t.Fatal(err)
	}
	want := map[int64]float64{1: 0.5, 2: 1e-7, 10: -3.25, 300000: 12345.678}
	for _, step := range []int64{1, 2, 10, 300000} {
		if err := w.Add(Event{WallTime: float64(1700000000 + step), Step: step, Scalars: []Scalar{{"x/y", want[step]}, {"n", math.NaN()}}}); err != nil {
			t.Fatal(err)
		}
	}
	script := `
import json, math, sys
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
ea = EventAccumulator(sys.argv[1], size_guidance={"scalars": 0})
ea.Reload()
print(json.dumps({tag: [[e.step, None if math.isnan(e.value) else e.value, e.wall_time] for e in ea.Scalars(tag)] for tag in ea.Tags()["scalars"]}))
`
	cmd := exec.Command(py, "-c", script, dir)
	cmd.Dir = os.TempDir()
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	var got map[string][][3]*float64
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if len(got) != 2 || len(got["x/y"]) != 4 || len(got["n"]) != 4 {
		t.Fatalf("TensorBoard read %s", out)
	}
	for i, r := range got["x/y"] {
		step := int64(*r[0])
		if float32(*r[1]) != float32(want[step]) || *r[2] != float64(1700000000+step) {
			t.Errorf("x/y #%d: step %d value %v wall %v, want value %v wall %d", i, step, *r[1], *r[2], want[step], 1700000000+step)
		}
		if n := got["n"][i]; n[1] != nil || int64(*n[0]) != step {
			t.Errorf("n #%d: %v, want NaN at step %d", i, n, step)
		}
	}
}
