package testutil

import (
	"math"
	"os"
	"testing"
)

func TestLookup(t *testing.T) {
	if p, ok := Lookup("no-such-fixture"); ok {
		t.Errorf("Lookup of a missing fixture: %s found", p)
	}
	if p := Fixtures(t); !isDir(p) {
		t.Errorf("Fixtures(t) = %s, not a folder", p)
	}
}

func TestFixturesSkipsWhenAbsent(t *testing.T) {
	if os.Getenv("CI") == "true" {
		t.Skip("under CI=true a missing fixture fails the test instead")
	}
	var skipped bool
	t.Run("missing", func(t *testing.T) {
		defer func() { skipped = t.Skipped() }()
		Fixtures(t, "no-such-fixture")
	})
	if !skipped {
		t.Error("Fixtures of a missing fixture did not skip")
	}
}

func TestRelErr(t *testing.T) {
	for _, c := range []struct {
		got, want []float64
		e         float64
	}{
		{[]float64{1, 2}, []float64{1, 2}, 0},
		{[]float64{1, 3}, []float64{1, 2}, 0.5},
		{[]float64{0.5, 0}, []float64{0, 0}, 0.5},
		{[]float64{1}, []float64{1, 2}, math.Inf(1)},
		{[]float64{math.NaN(), 2}, []float64{1, 2}, math.Inf(1)},
	} {
		if e := RelErr(c.got, c.want); e != c.e {
			t.Errorf("RelErr(%v, %v) = %g, want %g", c.got, c.want, e, c.e)
		}
	}
}

func isDir(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.IsDir()
}

func TestMaxAbsDiff(t *testing.T) {
	if d := MaxAbsDiff([]float32{1, -2, 3}, []float32{1.5, -2, 1}); d != 2 {
		t.Errorf("MaxAbsDiff = %g, want 2", d)
	}
	if d := MaxAbsDiff([]float64{1, 2}, []float64{1}); !math.IsInf(d, 1) {
		t.Errorf("different lengths: %g, want +Inf", d)
	}
	if d := MaxAbsDiff([]float64{1, math.NaN()}, []float64{1, 2}); !math.IsInf(d, 1) {
		t.Errorf("NaN: %g, want +Inf", d)
	}
}
