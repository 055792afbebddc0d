package torch

import (
	"math"
	"testing"
)

// checkGrad compares the autograd gradient of a scalar function of x (float64) with
// central finite differences, element by element.
func checkGrad(t *testing.T, name string, x []float64, shape []int64, f func(x *Tensor) *Tensor) {
	t.Helper()
	s := NewScope()
	defer s.Close()
	X := FromFloat64(x, shape...).SetRequiresGrad(true)
	f(X).Backward()
	got := X.Grad().Float64s()
	const h = 1e-6
	for i := range x {
		var fp, fm float64
		NoGrad(func() {
			xp := append([]float64(nil), x...)
			xp[i] += h
			fp = f(FromFloat64(xp, shape...)).Item()
			xp[i] -= 2 * h
			fm = f(FromFloat64(xp, shape...)).Item()
		})
		want := (fp - fm) / (2 * h)
		if d := math.Abs(got[i] - want); d > 1e-6*math.Max(1, math.Abs(want)) {
			t.Fatalf("%s: d/dx[%d] = %.10g, finite differences %.10g", name, i, got[i], want)
		}
	}
}

func TestGradientsAgainstFiniteDifferences(t *testing.T) {
	w := FromFloat64(seq(12, 0.7, 5), 3, 4).Owned()
	g := FromFloat64(seq(4, 0.3, 1), 4).Owned()
	defer w.Free()
	defer g.Free()
	target := FromInt64([]int64{2, 0}, 2).Owned()
	defer target.Free()
	x := seq(8, 1.5, 0.4)
	// a weighted sum keeps gradients of shape-preserving ops informative
	wsum := func(y *Tensor) *Tensor {
		return y.Mul(FromFloat64(seq(int(y.Numel()), 1, 9), y.Shape()...)).Sum(false)
	}
	checkGrad(t, "layer_norm", x, []int64{2, 4}, func(x *Tensor) *Tensor { return wsum(LayerNorm(x, []int64{4}, g, nil, 1e-5)) })
	checkGrad(t, "quick_gelu", x, []int64{2, 4}, func(x *Tensor) *Tensor { return wsum(x.QuickGelu()) })
	checkGrad(t, "gelu", x, []int64{2, 4}, func(x *Tensor) *Tensor { return wsum(x.Gelu()) })
	checkGrad(t, "linear+cross_entropy", x, []int64{2, 4}, func(x *Tensor) *Tensor { return CrossEntropy(Linear(x, w, nil), target) })
	checkGrad(t, "normalize", x, []int64{2, 4}, func(x *Tensor) *Tensor { return wsum(x.Normalize(2, 1, 1e-12)) })
	checkGrad(t, "log_softmax", x, []int64{2, 4}, func(x *Tensor) *Tensor { return wsum(x.LogSoftmax(1)) })
	checkGrad(t, "exp/log/div", x, []int64{2, 4}, func(x *Tensor) *Tensor { return wsum(x.Exp().AddScalar(1).Log().Div(x.Square().AddScalar(2))) })
	checkGrad(t, "attention", seq(2*3*4, 1, 0.2), []int64{1, 2, 3, 4}, func(q *Tensor) *Tensor {
		return wsum(Attention(q, q.MulScalar(0.5), q.Sin(), nil, true, 0, true))
	})
	checkGrad(t, "conv2d", seq(2*4*4, 1, 0.3), []int64{1, 2, 4, 4}, func(x *Tensor) *Tensor {
		return wsum(Conv2d(x, FromFloat64(seq(3*2*2*2, 1, 2), 3, 2, 2, 2), nil, 2, 0))
	})
	checkGrad(t, "embedding", seq(12, 1, 0.1), []int64{4, 3}, func(wt *Tensor) *Tensor {
		return wsum(Embedding(wt, FromInt64([]int64{3, 1, 3}, 3)))
	})
	checkGrad(t, "index_select/narrow", x, []int64{2, 4}, func(x *Tensor) *Tensor {
		return wsum(x.IndexSelect(1, FromInt64([]int64{3, 0}, 2)).Mul(x.Narrow(1, 1, 2)))
	})
}

func TestDetachAndGradAccumulation(t *testing.T) {
	s := NewScope()
	defer s.Close()
	x := FromFloat32([]float32{1, 2, 3}, 3).SetRequiresGrad(true)
	x.Square().Sum(false).Backward()
	x.Square().Sum(false).Backward()
	if g := x.Grad().Float32s(); g[0] != 4 || g[2] != 12 {
		t.Fatalf("accumulated grad %v, want [4 8 12]", g)
	}
	x.ZeroGrad()
	if x.Grad() != nil {
		t.Fatal("ZeroGrad left a gradient")
	}
	d := x.Detach()
	if d.RequiresGrad() {
		t.Fatal("detached tensor requires grad")
	}
}
