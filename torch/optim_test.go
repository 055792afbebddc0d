package torch

import (
	"encoding/json"
	"math"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"goclip/internal/testutil"
)

// adamwReference is torch.optim.AdamW's update written out in float64 Go.
func adamwReference(p, m, v, g []float64, lr, b1, b2, eps, wd float64, step int) {
	bc1 := 1 - math.Pow(b1, float64(step))
	bc2 := 1 - math.Pow(b2, float64(step))
	for i := range p {
		p[i] *= 1 - lr*wd
		m[i] = b1*m[i] + (1-b1)*g[i]
		v[i] = b2*v[i] + (1-b2)*g[i]*g[i]
		p[i] -= lr / bc1 * m[i] / (math.Sqrt(v[i])/math.Sqrt(bc2) + eps)
	}
}

// gradsAt gives a deterministic gradient for step k.
func gradsAt(n, k int) []float64 { return seq(n, 1+0.1*float64(k), float64(k)) }

func TestAdamWMatchesReference(t *testing.T) {
	s := NewScope()
	defer s.Close()
	const n = 7
	p0 := seq(n, 1, 0.5)
	P := FromFloat64(p0, n).SetRequiresGrad(true)
	opt := NewAdamW([][]*Tensor{{P}}, []float64{0.1}, 0.9, 0.98, 1e-6)
	defer opt.Free()
	p, m, v := append([]float64(nil), p0...), make([]float64, n), make([]float64, n)
	for k := 1; k <= 5; k++ {
		g := gradsAt(n, k)
		P.SetGrad(FromFloat64(g, n))
		if err := opt.Update(1e-2, nil); err != nil {
			t.Fatal(err)
		}
		adamwReference(p, m, v, g, 1e-2, 0.9, 0.98, 1e-6, 0.1, k)
	}
	close64(t, "adamw params", P.Float64s(), p, 1e-12)
	close64(t, "adamw exp_avg", opt.Groups[0].ExpAvg[0].Float64s(), m, 1e-12)
	close64(t, "adamw exp_avg_sq", opt.Groups[0].ExpAvgSq[0].Float64s(), v, 1e-12)
	if opt.Steps() != 5 {
		t.Fatalf("step %d", opt.Steps())
	}
	// a parameter without gradient is left alone
	Q := FromFloat64([]float64{1, 2}, 2).SetRequiresGrad(true)
	opt2 := NewAdamW([][]*Tensor{{Q}}, []float64{0.1}, 0.9, 0.999, 1e-8)
	defer opt2.Free()
	if err := opt2.Update(1, nil); err != nil || !Q.Equal(FromFloat64([]float64{1, 2}, 2)) {
		t.Fatalf("parameter without grad changed (err %v)", err)
	}
}

func TestAdamWMatchesPythonTorch(t *testing.T) {
	py := testutil.PythonTorch(t)
	s := NewScope()
	defer s.Close()
	const n = 6
	p0 := seq(n, 1, 0.25)
	P := FromFloat32(float32s(p0), n).SetRequiresGrad(true)
	opt := NewAdamW([][]*Tensor{{P}}, []float64{0.05}, 0.9, 0.999, 1e-8)
	defer opt.Free()
	var grads [][]float64
	for k := 1; k <= 4; k++ {
		g := gradsAt(n, k)
		grads = append(grads, g)
		P.SetGrad(FromFloat32(float32s(g), n))
		if err := opt.Update(3e-3, nil); err != nil {
			t.Fatal(err)
		}
	}
	in, _ := json.Marshal(map[string]any{"p0": p0, "grads": grads})
	script := `
import json, sys, torch
d = json.loads(sys.stdin.read())
p = torch.nn.Parameter(torch.tensor(d["p0"], dtype=torch.float32))
opt = torch.optim.AdamW([p], lr=3e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.05)
for g in d["grads"]:
    p.grad = torch.tensor(g, dtype=torch.float32)
    opt.step()
print(json.dumps(p.detach().tolist()))
`
	cmd := exec.Command(py, "-c", script)
	cmd.Stdin = strings.NewReader(string(in))
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("python: %v\n%s", err, out)
	}
	var want []float64
	if err := json.Unmarshal(out, &want); err != nil {
		t.Fatalf("python output %q: %v", out, err)
	}
	close64(t, "adamw vs torch.optim.AdamW", P.Float64s(), want, 1e-6)
}

func float32s(v []float64) []float32 {
	o := make([]float32, len(v))
	for i := range v {
		o[i] = float32(v[i])
	}
	return o
}

func TestClipGradNormAndUnscale(t *testing.T) {
	s := NewScope()
	defer s.Close()
	a := FromFloat64([]float64{1, 2}, 2).SetRequiresGrad(true)
	b := FromFloat64([]float64{3, 4, 5}, 3).SetRequiresGrad(true)
	a.SetGrad(FromFloat64([]float64{3, 0}, 2))
	b.SetGrad(FromFloat64([]float64{0, 4, 0}, 3))
	norm := ClipGradNorm([]*Tensor{a, b}, 1.0).Item()
	if math.Abs(norm-5) > 1e-6 {
		t.Fatalf("total norm %v, want 5", norm)
	}
	coef := 1 / (5 + 1e-6)
	close64(t, "clipped a", a.Grad().Float64s(), []float64{3 * coef, 0}, 1e-6)
	close64(t, "clipped b", b.Grad().Float64s(), []float64{0, 4 * coef, 0}, 1e-6)

	if ClipGradNorm([]*Tensor{a, b}, 10).Item() > 1.0001 {
		t.Fatal("norm after clipping above max")
	}
	found := UnscaleGrads([]*Tensor{a, b}, Scalar(0.5)).Item()
	if found != 0 {
		t.Fatal("finite gradients reported as overflow")
	}
	close64(t, "unscaled a", a.Grad().Float64s(), []float64{1.5 * coef, 0}, 1e-6)
	b.SetGrad(FromFloat64([]float64{math.Inf(1), 0, 0}, 3))
	if UnscaleGrads([]*Tensor{a, b}, Scalar(1)).Item() != 1 {
		t.Fatal("an inf gradient was not reported")
	}
	b.SetGrad(FromFloat64([]float64{math.NaN(), 0, 0}, 3))
	if UnscaleGrads([]*Tensor{a, b}, Scalar(1)).Item() != 1 {
		t.Fatal("a NaN gradient was not reported")
	}
}

func TestSavedFilesOpenInPython(t *testing.T) {
	py := testutil.PythonTorch(t)
	s := NewScope()
	defer s.Close()
	dir := t.TempDir()
	ts := map[string]*Tensor{
		"w.f32":  FromFloat64(seq(6, 1, 0), 2, 3).To(Float32),
		"w.bf16": FromFloat64(seq(4, 1, 1), 4).To(BFloat16),
		"w.f16":  FromFloat64(seq(4, 1, 2), 2, 2).To(Float16),
		"ids":    FromInt64([]int64{1, -2, 3}, 3),
		"flag":   FromFloat64([]float64{1, 0}, 2).To(Bool),
		"t.view": FromFloat64(seq(6, 1, 3), 2, 3).T(), // non-contiguous
	}
	pt := filepath.Join(dir, "x.pt")
	if err := SavePT(pt, ts); err != nil {
		t.Fatal(err)
	}
	st := filepath.Join(dir, "x.safetensors")
	if err := SaveSafetensors(st, ts, map[string]string{"format": "pt"}); err != nil {
		t.Fatal(err)
	}
	script := `
import json, sys, torch
d = torch.load(sys.argv[1], weights_only=True)
print(json.dumps({k: [str(v.dtype), list(v.shape), v.double().flatten().tolist()] for k, v in d.items()}))
`
	out, err := exec.Command(py, "-c", script, pt).CombinedOutput()
	if err != nil {
		t.Fatalf("torch.load(weights_only=True) failed: %v\n%s", err, out)
	}
	var got map[string][]json.RawMessage
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	pyDType := map[DType]string{Float32: "torch.float32", BFloat16: "torch.bfloat16", Float16: "torch.float16", Int64: "torch.int64", Bool: "torch.bool", Float64: "torch.float64"}
	for k, v := range ts {
		var dt string
		var vals []float64
		json.Unmarshal(got[k][0], &dt)
		json.Unmarshal(got[k][2], &vals)
		if dt != pyDType[v.DType()] {
			t.Fatalf("%s: python dtype %s, goclip %v", k, dt, v.DType())
		}
		close64(t, k, vals, v.Float64s(), 0)
	}
	back, err := LoadTensors(st, CPU)
	if err != nil {
		t.Fatal(err)
	}
	defer FreeMap(back)
	back2, err := LoadTensors(pt, CPU)
	if err != nil {
		t.Fatal(err)
	}
	defer FreeMap(back2)
	for k, v := range ts {
		if !back[k].Equal(v) || !back2[k].Equal(v) {
			t.Fatalf("%s: file round trip differs", k)
		}
	}
}

// TestAdamWFoundInfSkips: an update with a non-zero foundInf (a NaN gradient, as a bad
// step has) leaves the parameter, the moments and the step counter as they were, so that
// the next update's bias correction is that of an optimizer that never saw the skipped
// step: bit-identical to it, and to the float64 reference within 1e-12.
func TestAdamWFoundInfSkips(t *testing.T) {
	s := NewScope()
	defer s.Close()
	const n = 5
	p0 := seq(n, 1, 0.5)
	P := FromFloat64(p0, n).SetRequiresGrad(true)
	R := FromFloat64(p0, n).SetRequiresGrad(true) // never sees the skipped step
	opt := NewAdamW([][]*Tensor{{P}}, []float64{0.1}, 0.9, 0.98, 1e-6)
	ref := NewAdamW([][]*Tensor{{R}}, []float64{0.1}, 0.9, 0.98, 1e-6)
	defer opt.Free()
	defer ref.Free()
	p, m, v := append([]float64(nil), p0...), make([]float64, n), make([]float64, n)
	k := 0
	for i := 1; i <= 5; i++ {
		if i == 3 {
			P.SetGrad(FromFloat64([]float64{math.NaN(), 1, 2, 3, 4}, n))
			if err := opt.Update(1e-2, Scalar(1)); err != nil {
				t.Fatal(err)
			}
			if !P.Equal(R) || opt.Steps() != 2 {
				t.Fatalf("a skipped update changed the parameter or the step counter (%d)", opt.Steps())
			}
			continue
		}
		k++
		g := gradsAt(n, k)
		P.SetGrad(FromFloat64(g, n))
		R.SetGrad(FromFloat64(g, n))
		if err := opt.Update(1e-2, Scalar(0)); err != nil {
			t.Fatal(err)
		}
		if err := ref.Update(1e-2, nil); err != nil {
			t.Fatal(err)
		}
		adamwReference(p, m, v, g, 1e-2, 0.9, 0.98, 1e-6, 0.1, k)
	}
	if !P.Equal(R) || !opt.Groups[0].ExpAvg[0].Equal(ref.Groups[0].ExpAvg[0]) || !opt.Groups[0].ExpAvgSq[0].Equal(ref.Groups[0].ExpAvgSq[0]) {
		t.Fatal("after a skipped update, the state differs from an optimizer that never saw it")
	}
	close64(t, "adamw params after a skip", P.Float64s(), p, 1e-12)
	if opt.Steps() != 4 {
		t.Fatalf("step counter %d after 4 applied updates and one skipped", opt.Steps())
	}
	if err := opt.LoadState(7, [][]*Tensor{{opt.Groups[0].ExpAvg[0]}}, [][]*Tensor{{opt.Groups[0].ExpAvgSq[0]}}); err != nil || opt.Steps() != 7 {
		t.Fatalf("LoadState: step %d, err %v", opt.Steps(), err)
	}
}
