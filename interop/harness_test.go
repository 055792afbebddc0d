package interop

// The harness: building and running bin/goclip, running testdata/clipref.py, writing
// data folders, and comparing arrays.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"goclip/internal/testutil"
)

// tmpRoot holds what the package's tests share (the goclip binary, models made once);
// TestMain removes it.
var tmpRoot string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "goclip-interop-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	tmpRoot = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// Tolerances. fp32 outputs of goclip and transformers come from the same libtorch
// kernels in different orders: 1e-5 relative (max |goclip - reference| / max
// |reference|), as the issue asks.
const fp32Tol = 1e-5

var buildGoclip = sync.OnceValues(func() (string, error) {
	goTool := filepath.Join(runtime.GOROOT(), "bin", "go")
	if _, err := os.Stat(goTool); err != nil {
		if goTool, err = exec.LookPath("go"); err != nil {
			return "", fmt.Errorf("no go command to build goclip with: %w", err)
		}
	}
	bin := filepath.Join(tmpRoot, "goclip")
	cmd := exec.Command(goTool, "build", "-o", bin, "goclip/cmd/goclip")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build goclip/cmd/goclip: %v\n%s", err, out)
	}
	return bin, nil
})

// shared is something the package's tests make once, in a folder under tmpRoot.
type shared[T any] struct {
	sync.Mutex
	v            T
	done, failed bool
}

// get returns the value, making it with build(dir) on the first call (what is the
// message of later calls when that failed).
func (s *shared[T]) get(t *testing.T, what string, build func(dir string) T) T {
	t.Helper()
	s.Lock()
	defer s.Unlock()
	if s.done {
		return s.v
	}
	if s.failed {
		t.Fatalf("making %s failed in an earlier test", what)
	}
	s.failed = true // until build returns
	dir, err := os.MkdirTemp(tmpRoot, "shared-")
	if err != nil {
		t.Fatal(err)
	}
	s.v, s.done, s.failed = build(dir), true, false
	return s.v
}

// goclipBin builds bin/goclip (once per test binary) and returns its path.
func goclipBin(t *testing.T) string {
	t.Helper()
	bin, err := buildGoclip()
	if err != nil {
		t.Fatal(err)
	}
	return bin
}

// goclip runs the goclip binary with args and returns its stdout; an error fails the
// test with goclip's stderr.
func goclip(t *testing.T, args ...string) string {
	t.Helper()
	out, errOut, err := runCmd(goclipBin(t), "", args...)
	if err != nil {
		t.Fatalf("goclip %s: %v\nstderr:\n%s", strings.Join(args, " "), err, errOut)
	}
	return out
}

// runCmd runs name with args in dir ("" for the current folder), with a timeout of
// five minutes, and returns stdout and stderr.
func runCmd(name, dir string, args ...string) (string, string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	return out.String(), errOut.String(), err
}

// script is the absolute path of testdata/clipref.py.
func script(t *testing.T) string {
	t.Helper()
	p, err := filepath.Abs(filepath.Join("testdata", "clipref.py"))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// python runs testdata/clipref.py with args in the project's Python environment, from a
// temporary folder (the repository's torch/ must not shadow PyTorch), and returns its
// stdout. The modules named must import (else the test is skipped, or fails under CI).
func python(t *testing.T, modules []string, args ...string) string {
	t.Helper()
	py := testutil.PythonTorch(t, modules...)
	out, errOut, err := runCmd(py, t.TempDir(), append([]string{script(t)}, args...)...)
	if err != nil {
		t.Fatalf("clipref.py %s: %v\n%s", strings.Join(args, " "), err, lastLines(errOut, 40))
	}
	return out
}

var hfModules = []string{"transformers", "numpy", "PIL", "safetensors"}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// testdataPath is the absolute path of testdata/name.
func testdataPath(t *testing.T, name string) string {
	t.Helper()
	p, err := filepath.Abs(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// fixtureTokenizer is the fixture folder holding OpenAI's vocab.json and merges.txt.
func fixtureTokenizer(t *testing.T) string {
	t.Helper()
	return testutil.Fixtures(t, "clip-tiny-openai")
}

// makeModel writes a randomly initialised transformers CLIPModel for testdata/config
// with its CLIPProcessor (save_pretrained of both) into dir; binDir, when not "", gets
// the same weights as pytorch_model.bin. It returns the script's JSON report.
func makeModel(t *testing.T, config, dir, binDir string, seed int) map[string]any {
	t.Helper()
	args := []string{"make-model", "--config", testdataPath(t, config), "--tokenizer", fixtureTokenizer(t),
		"--seed", fmt.Sprint(seed), "--out", dir}
	if binDir != "" {
		args = append(args, "--bin-out", binDir)
	}
	var info map[string]any
	if err := json.Unmarshal([]byte(lastLine(python(t, hfModules, args...))), &info); err != nil {
		t.Fatal(err)
	}
	t.Logf("%s: %v", config, info)
	return info
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

// fixtureImages are the fixture's PNGs: RGB of several shapes, greyscale and RGBA, each
// resized and centre cropped by the preprocessing.
var fixtureImages = []string{"astronaut.png", "camera.png", "chelsea.png", "coffee.png", "logo.png",
	"motorcycle_left.png", "horse.png"}

// evalItem is one image of an evaluation data set and its captions.
type evalItem struct {
	Image    string   `json:"image"`
	Captions []string `json:"captions"`
}

// writeDataset writes a generic data set (captions.csv, images/) of the fixture images
// named, with the captions given, and the JSON list clipref.py's --eval reads; it
// returns the data folder and that file.
func writeDataset(t *testing.T, dir string, images []string, captions [][]string) (string, string) {
	t.Helper()
	fx := testutil.Fixtures(t, "images")
	if err := os.MkdirAll(filepath.Join(dir, "images"), 0o755); err != nil {
		t.Fatal(err)
	}
	var csv strings.Builder
	csv.WriteString("image,caption\n")
	var items []evalItem
	for i, name := range images {
		dst := filepath.Join(dir, "images", name)
		copyFile(t, dst, filepath.Join(fx, name))
		for _, c := range captions[i] {
			fmt.Fprintf(&csv, "%s,\"%s\"\n", name, strings.ReplaceAll(c, `"`, `""`))
		}
		items = append(items, evalItem{Image: dst, Captions: captions[i]})
	}
	writeFile(t, filepath.Join(dir, "captions.csv"), csv.String())
	spec, err := json.Marshal(items)
	if err != nil {
		t.Fatal(err)
	}
	specPath := filepath.Join(dir, "eval-spec.json")
	writeFile(t, specPath, string(spec))
	return dir, specPath
}

func copyFile(t *testing.T, dst, src string) {
	t.Helper()
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}

func writeFile(t *testing.T, path, s string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}

// readMatrix reads a float32 .npy of two dimensions.
func readMatrix(t *testing.T, path string) ([]float32, [2]int) {
	t.Helper()
	shape, v := testutil.ReadNpyFloat32(t, path)
	if len(shape) != 2 {
		t.Fatalf("%s: shape %v, want two dimensions", path, shape)
	}
	return v, [2]int{shape[0], shape[1]}
}

func f64(v []float32) []float64 {
	out := make([]float64, len(v))
	for i, x := range v {
		out[i] = float64(x)
	}
	return out
}

// relErr is testutil.RelErr of float32 slices.
func relErr(got, want []float32) float64 { return testutil.RelErr(f64(got), f64(want)) }

// checkClose fails the test when got differs from want by more than tol relative
// (testutil.RelErr) and logs the error met. It also checks that the comparison can
// fail: got with one value moved by 2*tol*max|want| must be rejected.
func checkClose(t *testing.T, what string, got, want []float32, tol float64) float64 {
	t.Helper()
	if len(got) != len(want) || len(want) == 0 {
		t.Errorf("%s: %d values, want %d", what, len(got), len(want))
		return math.Inf(1)
	}
	e := relErr(got, want)
	t.Logf("%s: relative error %.3g (tolerance %.0e)", what, e, tol)
	if e > tol {
		t.Errorf("%s: relative error %.3g > %.0e", what, e, tol)
	}
	var scale float64
	for _, w := range want {
		scale = math.Max(scale, math.Abs(float64(w)))
	}
	bad := append([]float32(nil), got...)
	bad[len(bad)/2] += float32(2 * tol * scale)
	if pe := relErr(bad, want); pe <= tol {
		t.Errorf("%s: an output off by 2x the tolerance passes (relative error %.3g)", what, pe)
	}
	return e
}

// checkScalar is checkClose for one number.
func checkScalar(t *testing.T, what string, got, want, tol float64) {
	t.Helper()
	checkClose(t, what, []float32{float32(got)}, []float32{float32(want)}, tol)
	if e := math.Abs(got-want) / math.Abs(want); e > tol { // in float64 too
		t.Errorf("%s: %.9g, want %.9g (relative error %.3g > %.0e)", what, got, want, e, tol)
	}
}

// evalResult is goclip eval --json's output, and clipref.py's.
type evalResult struct {
	Loss        float64            `json:"loss"`
	ImageToText map[string]float64 `json:"image_to_text"`
	TextToImage map[string]float64 `json:"text_to_image"`
	Images      int                `json:"images"`
	Captions    int                `json:"captions"`
}

// checkEval compares goclip eval's result with the reference: the loss within tol,
// recall, and the counts exactly.
func checkEval(t *testing.T, what string, got, want evalResult, tol float64) {
	t.Helper()
	checkScalar(t, what+" loss", got.Loss, want.Loss, tol)
	if got.Images != want.Images || got.Captions != want.Captions {
		t.Errorf("%s: %d images, %d captions; want %d, %d", what, got.Images, got.Captions, want.Images, want.Captions)
	}
	for _, k := range []string{"R@1", "R@5", "R@10"} {
		if got.ImageToText[k] != want.ImageToText[k] || got.TextToImage[k] != want.TextToImage[k] {
			t.Errorf("%s %s: image->text %v, text->image %v; want %v, %v", what, k,
				got.ImageToText[k], got.TextToImage[k], want.ImageToText[k], want.TextToImage[k])
		}
	}
}

// readEval reads a reference eval.json (one result per image processor backend).
func readEval(t *testing.T, path string) map[string]evalResult {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var ev map[string]evalResult
	if err := json.Unmarshal(raw, &ev); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return ev
}

// goclipEval runs goclip eval --json on data (split all) and parses its result.
func goclipEval(t *testing.T, args ...string) evalResult {
	t.Helper()
	out := goclip(t, append([]string{"eval", "--split", "all", "--json", "--device", "cpu", "--precision", "fp32"}, args...)...)
	var r evalResult
	if err := json.Unmarshal([]byte(lastLine(out)), &r); err != nil {
		t.Fatalf("goclip eval output %q: %v", out, err)
	}
	return r
}

// goclipEmbed runs goclip embed with args and reads the .npy it writes.
func goclipEmbed(t *testing.T, out string, args ...string) []float32 {
	t.Helper()
	goclip(t, append([]string{"embed", "--device", "cpu", "--precision", "fp32", "--out", out}, args...)...)
	v, _ := readMatrix(t, out)
	return v
}

// writeLines writes texts one per line.
func writeLines(t *testing.T, path string, texts []string) {
	t.Helper()
	writeFile(t, path, strings.Join(texts, "\n")+"\n")
}
