// Package testutil holds what the tests of several packages share: the reference
// fixtures in ../shared/fixtures, the project's Python environment (build/venv: torch,
// transformers, peft, open_clip), .npy files and the relative error the parity tests
// compare with.
//
// It is imported only by _test.go files. It imports nothing of goclip, so that the tests
// of every package, torch and torch/serialize included, may use it.
//
// # Missing prerequisites
//
// A test whose fixtures or Python are absent is skipped with a message that says what is
// missing and how to get it (a user's machine), except under CI=true, where it fails:
// there everything must be installed.
package testutil

import (
	"errors"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// moduleRoot is the folder holding go.mod, found by walking up from the working
// directory (a package's folder under go test).
var moduleRoot = sync.OnceValues(func() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod in the working directory or above it")
		}
		dir = parent
	}
})

// Lookup returns the path of ../shared/fixtures/<rel...> beside the module root (or in
// the folder GOCLIP_FIXTURES names, e.g. a copy on a GPU machine) and whether it exists.
// Tests that can run without the fixture use it; others use Fixtures.
func Lookup(rel ...string) (string, bool) {
	p, err := lookup(rel)
	return p, err == nil
}

func lookup(rel []string) (string, error) {
	dir := os.Getenv("GOCLIP_FIXTURES")
	if dir == "" {
		root, err := moduleRoot()
		if err != nil {
			return "", err
		}
		dir = filepath.Join(root, "..", "shared", "fixtures")
	}
	p := filepath.Join(append([]string{dir}, rel...)...)
	_, err := os.Stat(p)
	return p, err
}

// Fixtures returns the path of ../shared/fixtures/<rel...> as Lookup finds it (the
// folder itself without rel). When it is absent the test is skipped, or fails under
// CI=true.
func Fixtures(t testing.TB, rel ...string) string {
	t.Helper()
	p, err := lookup(rel)
	if err != nil {
		missing(t, fmt.Sprintf("reference fixture %s absent: %v (the fixtures live in ../shared/fixtures beside the repository, or where GOCLIP_FIXTURES says)", p, err))
	}
	return p
}

// missing skips t with msg, or fails it under CI=true.
func missing(t testing.TB, msg string) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatal(msg + "; required under CI=true")
	}
	t.Skip(msg + "; skipping")
}

type pythonCheck struct {
	once sync.Once
	err  error
}

var (
	pythonMu     sync.Mutex
	pythonChecks = map[string]*pythonCheck{}
)

// pythonCheckOf is the check of key, made on first use (each check runs once per test
// binary, under its sync.Once).
func pythonCheckOf(key string) *pythonCheck {
	pythonMu.Lock()
	defer pythonMu.Unlock()
	c, ok := pythonChecks[key]
	if !ok {
		c = &pythonCheck{}
		pythonChecks[key] = c
	}
	return c
}

// PythonTorch returns the interpreter that the Python comparisons run: the project's
// environment, build/venv/bin/python under the module root (third_party/venv.sh makes it;
// `make venv`), unless GOCLIP_TORCH_PYTHON names another, e.g. the GPU machine's python.
// It checks, once per test binary, that the interpreter imports torch and the modules
// named (e.g. "numpy", "transformers"); when it cannot, the test is skipped, or fails
// under CI=true.
func PythonTorch(t testing.TB, modules ...string) string {
	t.Helper()
	py := os.Getenv("GOCLIP_TORCH_PYTHON")
	if py == "" {
		root, err := moduleRoot()
		if err != nil {
			missing(t, "no project Python environment: "+err.Error())
		}
		py = filepath.Join(root, "build", "venv", "bin", "python")
	}
	mods := append([]string{"torch"}, modules...)
	key := py + "\x00" + strings.Join(mods, ",")
	c := pythonCheckOf(key)
	c.once.Do(func() {
		c.err = runPython(py, "-c", "import "+strings.Join(mods, ", "))
	})
	if c.err != nil {
		missing(t, fmt.Sprintf("%s cannot import %s (make venv builds the project's environment, or set GOCLIP_TORCH_PYTHON): %v",
			py, strings.Join(mods, ", "), c.err))
	}
	return py
}

// RelErr is max |got - want| / max |want| (the reference's scale); max |got - want|
// when want is all zero. It is +Inf when the lengths differ or a value is NaN, so that
// no comparison passes by accident.
func RelErr(got, want []float64) float64 {
	if len(got) != len(want) {
		return math.Inf(1)
	}
	var num, den float64
	for i := range want {
		num = math.Max(num, math.Abs(got[i]-want[i]))
		den = math.Max(den, math.Abs(want[i]))
	}
	if math.IsNaN(num) {
		return math.Inf(1)
	}
	if den == 0 {
		return num
	}
	return num / den
}

// MaxAbsDiff is max |a - b| over two slices, +Inf when the lengths differ or a
// difference is NaN, so that no comparison passes by accident.
func MaxAbsDiff[T float32 | float64](a, b []T) float64 {
	if len(a) != len(b) {
		return math.Inf(1)
	}
	var m float64
	for i := range a {
		d := math.Abs(float64(a[i]) - float64(b[i]))
		if math.IsNaN(d) {
			return math.Inf(1)
		}
		m = math.Max(m, d)
	}
	return m
}

// WantErrNaming fails the test unless err is set and its message names every one of
// names (a file, a key, a flag: what a user needs to find the fault).
func WantErrNaming(t testing.TB, what string, err error, names ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("%s: no error", what)
	}
	for _, n := range names {
		if !strings.Contains(err.Error(), n) {
			t.Errorf("%s: error %q does not name %q", what, err, n)
		}
	}
}

// runPython runs py with args in the temporary folder (nothing in a package's folder may
// shadow a Python module); a failure is the error, with what the program printed.
func runPython(py string, args ...string) error {
	cmd := exec.Command(py, args...)
	cmd.Dir = os.TempDir()
	out, err := cmd.CombinedOutput()
	if err != nil {
		if out := strings.TrimSpace(string(out)); out != "" {
			return fmt.Errorf("%w: %s", err, out)
		}
	}
	return err
}

// MeasureAlloc runs f and returns its wall time and the bytes it allocated on the Go heap
// (after a collection, so that earlier garbage is not counted).
func MeasureAlloc(f func()) (time.Duration, uint64) {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	start := time.Now()
	f()
	elapsed := time.Since(start)
	runtime.ReadMemStats(&after)
	return elapsed, after.TotalAlloc - before.TotalAlloc
}
