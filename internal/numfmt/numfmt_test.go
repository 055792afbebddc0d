package numfmt

import (
	"math"
	"math/rand/v2"
	"os/exec"
	"strconv"
	"strings"
	"testing"

	"goclip/internal/testutil"
)

func TestThousands(t *testing.T) {
	for n, want := range map[int64]string{
		0: "0", 7: "7", 999: "999", 1000: "1,000", -1000: "-1,000", 100000: "100,000", -1234567: "-1,234,567",
		5898240: "5,898,240", 155518977: "155,518,977",
		math.MaxInt64: "9,223,372,036,854,775,807", math.MinInt64: "-9,223,372,036,854,775,808",
	} {
		if got := Thousands(n); got != want {
			t.Errorf("Thousands(%d) = %q, want %q", n, got, want)
		}
	}
}

// TestThousandsMatchesPython holds Thousands to Python's format(n, ",") over numbers of
// every length and sign.
func TestThousandsMatchesPython(t *testing.T) {
	py := testutil.PythonTorch(t)
	r := rand.New(rand.NewPCG(1, 2))
	var ns []string
	for digits := 1; digits <= 18; digits++ {
		for range 5 {
			n := r.Int64N(int64(math.Pow10(digits)))
			ns = append(ns, strconv.FormatInt(n, 10), strconv.FormatInt(-n, 10))
		}
	}
	cmd := exec.Command(py, append([]string{"-c", "import sys\nfor a in sys.argv[1:]: print(format(int(a), ','))"}, ns...)...)
	cmd.Dir = t.TempDir()
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("python: %v", err)
	}
	want := strings.Fields(string(out))
	if len(want) != len(ns) {
		t.Fatalf("python printed %d lines for %d numbers", len(want), len(ns))
	}
	for i, s := range ns {
		n, _ := strconv.ParseInt(s, 10, 64)
		if got := Thousands(n); got != want[i] {
			t.Errorf("Thousands(%d) = %q, Python %q", n, got, want[i])
		}
	}
}
