package serialize

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"goclip/internal/testutil"
)

// requireTorch skips the test under -short (except under CI=true), and when the
// interpreter of testutil.PythonTorch lacks torch or numpy (failing under CI=true).
func requireTorch(t *testing.T) {
	t.Helper()
	if testing.Short() && os.Getenv("CI") != "true" {
		t.Skip("-short: skipping Python interop")
	}
	testutil.PythonTorch(t, "numpy")
}

// runPython runs testdata/torch_interop.py with args in dir.
func runPython(t *testing.T, dir string, args ...string) {
	t.Helper()
	script, err := filepath.Abs("testdata/torch_interop.py")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(testutil.PythonTorch(t, "numpy"), append([]string{script}, args...)...)
	cmd.Dir = dir // not this folder: nothing here may shadow a Python module
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("python %v: %v\n%s", args, err, out)
	}
}

func readJSON(t *testing.T, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatal(err)
	}
}

// normalise round-trips a Go summary through JSON so it compares equal to
// one decoded from Python's output.
func normalise(t *testing.T, v any) any {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var out any
	json.Unmarshal(b, &out)
	return out
}

func compareSummaries(t *testing.T, what string, got, want any) {
	t.Helper()
	g, w := got.(map[string]any), want.(map[string]any)
	if reflect.DeepEqual(g, w) {
		return
	}
	if gd, ok := g["dict"].(map[string]any); ok {
		if wd, ok := w["dict"].(map[string]any); ok {
			for k, wv := range wd {
				if !reflect.DeepEqual(gd[k], wv) {
					t.Errorf("%s: key %s: got %v, want %v", what, k, gd[k], wv)
				}
			}
			for k := range gd {
				if _, ok := wd[k]; !ok {
					t.Errorf("%s: unexpected key %s", what, k)
				}
			}
			return
		}
	}
	t.Errorf("%s:\n got %v\nwant %v", what, g, w)
}

// TestPythonLoadsGoPT: files written by WritePT and WritePTObject load with
// torch.load(weights_only=True) and hold what Go wrote.
func TestPythonLoadsGoPT(t *testing.T) {
	requireTorch(t)
	dir := t.TempDir()
	sd := sampleTensors()
	sdPath := filepath.Join(dir, "model.pt")
	if err := WritePT(sdPath, sd); err != nil {
		t.Fatal(err)
	}
	// A checkpoint without floats loads with weights_only in torch 1.13 too.
	ckpt := sampleObject()
	delete(ckpt, "loss")
	ckpt["optimizer"].(map[string]any)["param_groups"] = []any{map[string]any{"lr_milli": int64(1), "betas_permille": Tuple{int64(900), int64(980)}, "params": []any{int64(0), int64(1)}}}
	ckptPath := filepath.Join(dir, "last.pt")
	if err := WritePTObject(ckptPath, ckpt); err != nil {
		t.Fatal(err)
	}
	// With floats: weights_only in torch 2.x only, so 1.13 loads it unsafely.
	full := sampleObject()
	fullPath := filepath.Join(dir, "full.pt")
	if err := WritePTObject(fullPath, full); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "out.json")
	runPython(t, dir, "load", out, sdPath, ckptPath)
	var res map[string]struct {
		Summary any    `json:"summary"`
		Type    string `json:"type"`
		Torch   string `json:"torch"`
	}
	readJSON(t, out, &res)
	if res[sdPath].Type != "OrderedDict" {
		t.Errorf("state dict loads as %s, want OrderedDict", res[sdPath].Type)
	}
	compareSummaries(t, "model.pt", res[sdPath].Summary, normalise(t, summary(sd)))
	compareSummaries(t, "last.pt", res[ckptPath].Summary, normalise(t, summary(ckpt)))

	// torch 1.13's weights_only unpickler has no float opcode; 2.x has.
	version := res[sdPath].Torch
	t.Logf("torch %s", version)
	if strings.HasPrefix(version, "1.") {
		runPython(t, dir, "load-unsafe", out, fullPath)
	} else {
		runPython(t, dir, "load", out, fullPath)
	}
	res = nil
	readJSON(t, out, &res)
	compareSummaries(t, "full.pt", res[fullPath].Summary, normalise(t, summary(full)))
}

// TestGoReadsPythonPT: files written by torch.save (zip and legacy formats,
// views that share storage, a checkpoint with every value type) read in Go
// with the values Python saved.
func TestGoReadsPythonPT(t *testing.T) {
	requireTorch(t)
	dir := t.TempDir()
	runPython(t, dir, "save", dir)
	var expected map[string]any
	readJSON(t, filepath.Join(dir, "expected.json"), &expected)
	for name, want := range expected {
		got, err := ReadPTObject(filepath.Join(dir, name))
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		compareSummaries(t, name, normalise(t, summary(got)), want)
	}
	if sd, err := ReadPT(filepath.Join(dir, "module.pt")); err != nil || len(sd) != 2 {
		t.Errorf("ReadPT(module.pt) = %d tensors, %v", len(sd), err)
	}
}

// TestSafetensorsSpecInterop: the safetensors package is not in Debian, so
// Python checks Go's files against the format spec by hand (layout, padding,
// alignment, values through torch.frombuffer), and Go reads a file that
// Python wrote by the spec.
func TestSafetensorsSpecInterop(t *testing.T) {
	requireTorch(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "go.safetensors")
	ts := sampleTensors()
	if err := WriteSafetensors(path, ts, map[string]string{"format": "pt"}); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "st.json")
	runPython(t, dir, "st-check", out, path)
	var res struct {
		Tensors  map[string]any    `json:"tensors"`
		Metadata map[string]string `json:"metadata"`
	}
	readJSON(t, out, &res)
	compareSummaries(t, "go.safetensors", map[string]any{"dict": normaliseKeys(res.Tensors)}, normalise(t, summary(ts)))
	if res.Metadata["format"] != "pt" {
		t.Errorf("metadata %v", res.Metadata)
	}

	runPython(t, dir, "st-write", dir)
	got, meta, err := ReadSafetensors(filepath.Join(dir, "py.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	var want map[string]any
	readJSON(t, filepath.Join(dir, "py.safetensors.json"), &want)
	compareSummaries(t, "py.safetensors", normalise(t, summary(got)), map[string]any{"dict": normaliseKeys(want)})
	if meta["format"] != "pt" {
		t.Errorf("metadata %v", meta)
	}
}

func normaliseKeys(m map[string]any) map[string]any {
	out := make(map[string]any, len(m))
	for k, v := range m {
		out["s:"+k] = v
	}
	return out
}

// TestWeightsOnlyAgreement: files that torch.save writes with globals in them
// (code that runs when loaded, plain classes, functools.partial, complex
// numbers; devices, dtypes, sets, Counters, Parameters, tensors with
// attributes) are refused or read by ReadPTObject exactly as
// torch.load(weights_only=True) refuses or reads them, except complex
// numbers, which torch allows and goclip does not model.
func TestWeightsOnlyAgreement(t *testing.T) {
	requireTorch(t)
	dir := t.TempDir()
	runPython(t, dir, "globals", dir)
	var torchErr map[string]string
	readJSON(t, filepath.Join(dir, "globals.json"), &torchErr)
	if len(torchErr) < 8 {
		t.Fatalf("python wrote %d files", len(torchErr))
	}
	for name, terr := range torchErr {
		_, err := ReadPTObject(filepath.Join(dir, name))
		t.Logf("%s: torch %q, goclip %v", name, terr, err)
		if name == "complex.pt" {
			if err == nil || !strings.Contains(err.Error(), "builtins.complex is refused") {
				t.Errorf("%s: %v, want builtins.complex refused", name, err)
			}
			continue
		}
		if (terr == "") != (err == nil) {
			t.Errorf("%s: torch.load(weights_only=True) says %q, ReadPTObject %v", name, terr, err)
		}
	}
	obj, err := ReadPTObject(filepath.Join(dir, "param.pt"))
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"p", "attr"} {
		if tn, ok := obj.(map[string]any)[k].(RawTensor); !ok || tn.DType != F32 || len(tn.Data) != 8 {
			t.Errorf("param.pt %s: %v", k, obj.(map[string]any)[k])
		}
	}
}
