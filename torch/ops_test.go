package torch

import (
	"math"
	"runtime"
	"strings"
	"testing"
)

// Forward values of each op are checked against Go arithmetic on small inputs.

func close64(t *testing.T, name string, got, want []float64, tol float64) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d values, want %d", name, len(got), len(want))
	}
	for i := range got {
		if d := math.Abs(got[i] - want[i]); d > tol*math.Max(1, math.Abs(want[i])) || math.IsNaN(got[i]) {
			t.Fatalf("%s[%d] = %.9g, want %.9g (tol %g)", name, i, got[i], want[i], tol)
		}
	}
}

func seq(n int, scale, offset float64) []float64 {
	v := make([]float64, n)
	for i := range v {
		v[i] = math.Sin(float64(i)*1.3+offset) * scale
	}
	return v
}

func TestElementwiseAndBroadcast(t *testing.T) {
	s := NewScope()
	defer s.Close()
	a := seq(6, 2, 0.1)
	b := seq(3, 1, 0.7)
	A := FromFloat64(a, 2, 3)
	B := FromFloat64(b, 3)
	var add, mul, sub, div []float64
	for i := 0; i < 2; i++ {
		for j := 0; j < 3; j++ {
			x, y := a[i*3+j], b[j]
			add = append(add, x+y)
			mul = append(mul, x*y)
			sub = append(sub, x-y)
			div = append(div, x/y)
		}
	}
	close64(t, "add", A.Add(B).Float64s(), add, 1e-12)
	close64(t, "mul", A.Mul(B).Float64s(), mul, 1e-12)
	close64(t, "sub", A.Sub(B).Float64s(), sub, 1e-12)
	close64(t, "div", A.Div(B).Float64s(), div, 1e-12)

	var exp, quick, gelu, gtanh, clamp []float64
	for _, x := range a {
		exp = append(exp, math.Exp(x))
		quick = append(quick, x/(1+math.Exp(-1.702*x)))
		gelu = append(gelu, 0.5*x*(1+math.Erf(x/math.Sqrt2)))
		gtanh = append(gtanh, 0.5*x*(1+math.Tanh(math.Sqrt(2/math.Pi)*(x+0.044715*x*x*x))))
		clamp = append(clamp, math.Min(math.Max(x, -0.5), 0.5))
	}
	close64(t, "exp", A.Exp().Float64s(), exp, 1e-12)
	close64(t, "log", A.Exp().Log().Float64s(), a, 1e-12)
	close64(t, "quick_gelu", A.QuickGelu().Float64s(), quick, 1e-12)
	close64(t, "gelu", A.Gelu().Float64s(), gelu, 1e-12)
	close64(t, "gelu_tanh", A.GeluTanh().Float64s(), gtanh, 1e-12)
	close64(t, "clamp", A.Clamp(-0.5, 0.5).Float64s(), clamp, 0)
	close64(t, "mulscalar", A.MulScalar(3).Float64s(), func() []float64 {
		o := make([]float64, len(a))
		for i := range a {
			o[i] = 3 * a[i]
		}
		return o
	}(), 1e-12)
}

func TestMatmulLinearReductions(t *testing.T) {
	s := NewScope()
	defer s.Close()
	x := seq(2*3, 1, 0)
	w := seq(4*3, 1, 1)
	bias := seq(4, 1, 2)
	X, W, Bv := FromFloat64(x, 2, 3), FromFloat64(w, 4, 3), FromFloat64(bias, 4)
	var want []float64
	for i := 0; i < 2; i++ {
		for o := 0; o < 4; o++ {
			v := bias[o]
			for k := 0; k < 3; k++ {
				v += x[i*3+k] * w[o*3+k]
			}
			want = append(want, v)
		}
	}
	close64(t, "linear", Linear(X, W, Bv).Float64s(), want, 1e-12)
	close64(t, "matmul", X.Matmul(W.T()).Add(Bv).Float64s(), want, 1e-12)
	// sums and means over rows
	var rowSum, rowMax []float64
	for i := 0; i < 2; i++ {
		s, m := 0.0, math.Inf(-1)
		for k := 0; k < 3; k++ {
			s += x[i*3+k]
			m = math.Max(m, x[i*3+k])
		}
		rowSum = append(rowSum, s)
		rowMax = append(rowMax, m)
	}
	close64(t, "sum", X.Sum(false, 1).Float64s(), rowSum, 1e-12)
	close64(t, "mean", X.Mean(false, 1).Float64s(), []float64{rowSum[0] / 3, rowSum[1] / 3}, 1e-12)
	close64(t, "amax", X.Amax(false, 1).Float64s(), rowMax, 0)
	if got := X.Sum(false).Item(); math.Abs(got-(rowSum[0]+rowSum[1])) > 1e-12 {
		t.Fatalf("sum all = %v", got)
	}
	am := X.Argmax(1, false).Int64s()
	for i := 0; i < 2; i++ {
		if x[i*3+int(am[i])] != rowMax[i] {
			t.Fatalf("argmax row %d = %d", i, am[i])
		}
	}
	vals, idx := X.TopK(2, 1, true)
	if v := vals.Float64s(); v[0] != rowMax[0] || v[2] != rowMax[1] || idx.Int64s()[0] != am[0] {
		t.Fatalf("topk %v %v", v, idx.Int64s())
	}
	// norm and normalize
	n := X.Norm(2, false, 1).Float64s()
	for i := 0; i < 2; i++ {
		ss := 0.0
		for k := 0; k < 3; k++ {
			ss += x[i*3+k] * x[i*3+k]
		}
		close64(t, "norm", n[i:i+1], []float64{math.Sqrt(ss)}, 1e-12)
	}
	nz := X.Normalize(2, 1, 1e-12).Float64s()
	close64(t, "normalize", nz[:3], []float64{x[0] / n[0], x[1] / n[0], x[2] / n[0]}, 1e-12)
}

func TestSoftmaxCrossEntropyLayerNorm(t *testing.T) {
	s := NewScope()
	defer s.Close()
	z := seq(2*4, 2, 0.3)
	Z := FromFloat64(z, 2, 4)
	target := []int64{3, 1}
	var sm, lsm []float64
	ce := 0.0
	for i := 0; i < 2; i++ {
		m := math.Inf(-1)
		for k := 0; k < 4; k++ {
			m = math.Max(m, z[i*4+k])
		}
		den := 0.0
		for k := 0; k < 4; k++ {
			den += math.Exp(z[i*4+k] - m)
		}
		for k := 0; k < 4; k++ {
			sm = append(sm, math.Exp(z[i*4+k]-m)/den)
			lsm = append(lsm, z[i*4+k]-m-math.Log(den))
		}
		ce -= lsm[i*4+int(target[i])] / 2
	}
	close64(t, "softmax", Z.Softmax(1).Float64s(), sm, 1e-12)
	close64(t, "log_softmax", Z.LogSoftmax(1).Float64s(), lsm, 1e-12)
	close64(t, "cross_entropy", []float64{CrossEntropy(Z, FromInt64(target, 2)).Item()}, []float64{ce}, 1e-12)
	close64(t, "logsumexp", Z.LogSumExp(1, false).Float64s(), []float64{z[0] - lsm[0], z[4] - lsm[4]}, 1e-12)

	g := seq(4, 0.5, 3)
	b := seq(4, 0.5, 4)
	var ln []float64
	for i := 0; i < 2; i++ {
		mu, v := 0.0, 0.0
		for k := 0; k < 4; k++ {
			mu += z[i*4+k] / 4
		}
		for k := 0; k < 4; k++ {
			v += (z[i*4+k] - mu) * (z[i*4+k] - mu) / 4
		}
		for k := 0; k < 4; k++ {
			ln = append(ln, (z[i*4+k]-mu)/math.Sqrt(v+1e-5)*g[k]+b[k])
		}
	}
	close64(t, "layer_norm", LayerNorm(Z, []int64{4}, FromFloat64(g, 4), FromFloat64(b, 4), 1e-5).Float64s(), ln, 1e-12)
}

func TestIndexingAndShapes(t *testing.T) {
	s := NewScope()
	defer s.Close()
	v := []float64{0, 1, 2, 3, 4, 5}
	X := FromFloat64(v, 2, 3)
	close64(t, "transpose", X.T().Contiguous().Float64s(), []float64{0, 3, 1, 4, 2, 5}, 0)
	close64(t, "permute", X.Reshape(1, 2, 3).Permute(2, 0, 1).Reshape(-1).Float64s(), []float64{0, 3, 1, 4, 2, 5}, 0)
	close64(t, "narrow", X.Narrow(1, 1, 2).Float64s(), []float64{1, 2, 4, 5}, 0)
	close64(t, "select", X.Select(0, 1).Float64s(), []float64{3, 4, 5}, 0)
	close64(t, "index_select", X.IndexSelect(1, FromInt64([]int64{2, 0}, 2)).Float64s(), []float64{2, 0, 5, 3}, 0)
	close64(t, "gather", X.Gather(1, FromInt64([]int64{1, 0}, 2, 1)).Float64s(), []float64{1, 3}, 0)
	close64(t, "cat", Cat([]*Tensor{X, X.MulScalar(10)}, 0).Select(0, 2).Float64s(), []float64{0, 10, 20}, 0)
	if sh := Stack([]*Tensor{X, X}, 1).Shape(); len(sh) != 3 || sh[0] != 2 || sh[1] != 2 || sh[2] != 3 {
		t.Fatalf("stack shape %v", sh)
	}
	close64(t, "triu", Ones([]int64{3, 3}, Float64, CPU).Triu(1).Float64s(), []float64{0, 1, 1, 0, 0, 1, 0, 0, 0}, 0)
	mask := X.GtScalar(2.5)
	close64(t, "masked_fill", X.MaskedFill(mask, -1).Float64s(), []float64{0, 1, 2, -1, -1, -1}, 0)
	close64(t, "where", Where(mask, X, X.Neg()).Float64s(), []float64{0, -1, -2, 3, 4, 5}, 0)
	close64(t, "arange", Arange(0, 5, 2, Int64, CPU).Float64s(), []float64{0, 2, 4}, 0)
	close64(t, "embedding", Embedding(X, FromInt64([]int64{1, 1, 0}, 3)).Reshape(-1).Float64s(), []float64{3, 4, 5, 3, 4, 5, 0, 1, 2}, 0)
	close64(t, "expand", FromFloat64([]float64{1, 2}, 2, 1).Expand(2, 3).Reshape(-1).Float64s(), []float64{1, 1, 1, 2, 2, 2}, 0)
	if got := X.Unsqueeze(0).Shape(); len(got) != 3 || got[0] != 1 {
		t.Fatalf("unsqueeze %v", got)
	}
	if X.Reshape(3, 2).Numel() != 6 || X.Size(-1) != 3 || X.Dim() != 2 {
		t.Fatal("shape queries")
	}
}

func TestConv2dAgainstDirectSum(t *testing.T) {
	s := NewScope()
	defer s.Close()
	// x [1, 2, 4, 4], w [3, 2, 2, 2], stride 2 (a patch embedding)
	x := seq(32, 1, 0.2)
	w := seq(24, 1, 0.9)
	got := Conv2d(FromFloat64(x, 1, 2, 4, 4), FromFloat64(w, 3, 2, 2, 2), nil, 2, 0).Float64s()
	var want []float64
	for o := 0; o < 3; o++ {
		for i := 0; i < 2; i++ {
			for j := 0; j < 2; j++ {
				v := 0.0
				for c := 0; c < 2; c++ {
					for di := 0; di < 2; di++ {
						for dj := 0; dj < 2; dj++ {
							v += x[c*16+(2*i+di)*4+2*j+dj] * w[o*8+c*4+di*2+dj]
						}
					}
				}
				want = append(want, v)
			}
		}
	}
	close64(t, "conv2d", got, want, 1e-12)
}

func TestAttentionMatchesSpelledOut(t *testing.T) {
	s := NewScope()
	defer s.Close()
	const B, H, T, D = 1, 2, 3, 4
	q, k, v := seq(B*H*T*D, 1, 0), seq(B*H*T*D, 1, 1), seq(B*H*T*D, 1, 2)
	got := Attention(FromFloat64(q, B, H, T, D), FromFloat64(k, B, H, T, D), FromFloat64(v, B, H, T, D), nil, true, 0, true).Float64s()
	want := make([]float64, 0, len(q))
	for h := 0; h < H; h++ {
		base := h * T * D
		for i := 0; i < T; i++ {
			sc := make([]float64, T)
			m := math.Inf(-1)
			for j := 0; j <= i; j++ {
				for d := 0; d < D; d++ {
					sc[j] += q[base+i*D+d] * k[base+j*D+d] / math.Sqrt(D)
				}
				m = math.Max(m, sc[j])
			}
			den := 0.0
			for j := 0; j <= i; j++ {
				den += math.Exp(sc[j] - m)
			}
			for d := 0; d < D; d++ {
				o := 0.0
				for j := 0; j <= i; j++ {
					o += math.Exp(sc[j]-m) / den * v[base+j*D+d]
				}
				want = append(want, o)
			}
		}
	}
	close64(t, "attention(causal)", got, want, 1e-12)
	// the unfused path gives the same result
	got2 := Attention(FromFloat64(q, B, H, T, D), FromFloat64(k, B, H, T, D), FromFloat64(v, B, H, T, D), nil, true, 0, false).Float64s()
	close64(t, "attention(math)", got2, want, 1e-12)
}

func TestDropout(t *testing.T) {
	s := NewScope()
	defer s.Close()
	ManualSeed(1)
	x := Ones([]int64{10000}, Float32, CPU)
	y := x.Dropout(0.25, true).Float64s()
	zeros := 0
	for _, v := range y {
		switch {
		case v == 0:
			zeros++
		case math.Abs(v-1/0.75) > 1e-6:
			t.Fatalf("kept value %v, want %v", v, 1/0.75)
		}
	}
	if zeros < 2300 || zeros > 2700 {
		t.Fatalf("%d of 10000 dropped, want about 2500", zeros)
	}
	if !x.Dropout(0.25, false).Equal(x) {
		t.Fatal("dropout in eval mode changed values")
	}
}

func TestErrorsReachGo(t *testing.T) {
	s := NewScope()
	defer s.Close()
	a := Ones([]int64{2, 3}, Float32, CPU)
	err := Try(func() { a.Matmul(Ones([]int64{2, 3}, Float32, CPU)) })
	if err == nil || !strings.Contains(err.Error(), "matmul") || !strings.Contains(err.Error(), "2x3 and 2x3") {
		t.Fatalf("shape mismatch error = %v", err)
	}
	if strings.Contains(err.Error(), "Exception raised from") {
		t.Fatalf("error carries a C++ backtrace: %v", err)
	}
	err = Try(func() { Embedding(a, Ones([]int64{2}, Float32, CPU)) })
	if err == nil || !strings.Contains(err.Error(), "embedding") {
		t.Fatalf("bad dtype error = %v", err)
	}
	if !CUDAAvailable() {
		err = Try(func() { a.ToDevice(CUDA(0), false) })
		if err == nil {
			t.Fatal("moving to CUDA without CUDA did not fail")
		}
		if CheckDevice(CUDA(0)) == nil {
			t.Fatal("CheckDevice(cuda:0) passed without CUDA")
		}
	}
	a.Free()
	if err := Try(func() { a.Exp() }); err == nil || !strings.Contains(err.Error(), "freed") {
		t.Fatalf("use after free = %v", err)
	}
	if _, err := FromBytes(make([]byte, 5), Float32, []int64{2}, CPU); err == nil {
		t.Fatal("FromBytes accepted a wrong byte count")
	}
	// the process is still fine
	if got := Ones([]int64{1}, Float32, CPU).Item(); got != 1 {
		t.Fatal(got)
	}
}

func TestDTypesRoundTrip(t *testing.T) {
	s := NewScope()
	defer s.Close()
	for _, dt := range []DType{Float32, Float16, BFloat16, Float64, Int64, Int32, Uint8, Bool, Int8, Int16} {
		x := FromFloat64([]float64{0, 1, 0, 1, 1, 0}, 2, 3).To(dt)
		if x.DType() != dt {
			t.Fatalf("%v: dtype %v", dt, x.DType())
		}
		back, err := FromBytes(x.Bytes(), dt, x.Shape(), CPU)
		if err != nil {
			t.Fatal(err)
		}
		if !back.Equal(x) {
			t.Fatalf("%v: bytes round trip differs", dt)
		}
		r, err := FromRaw(x.Raw(), CPU)
		if err != nil || !r.Equal(x) {
			t.Fatalf("%v: raw round trip: %v", dt, err)
		}
		if p, err := ParseDType(dt.String()); err != nil || p != dt {
			t.Fatalf("ParseDType(%q) = %v, %v", dt.String(), p, err)
		}
	}
}

func TestRNGStateRestoresDraws(t *testing.T) {
	s := NewScope()
	defer s.Close()
	ManualSeed(7)
	st := RNGState(CPU)
	a := Randn([]int64{5}, Float32, CPU).Float32s()
	if err := SetRNGState(CPU, st); err != nil {
		t.Fatal(err)
	}
	b := Randn([]int64{5}, Float32, CPU).Float32s()
	for i := range a {
		if a[i] != b[i] {
			t.Fatalf("draw %d: %v then %v after restoring the state", i, a[i], b[i])
		}
	}
}

func TestAutocastAndNoGrad(t *testing.T) {
	s := NewScope()
	defer s.Close()
	w := Ones([]int64{4, 4}, Float32, CPU).SetRequiresGrad(true)
	x := Ones([]int64{2, 4}, Float32, CPU)
	Autocast(CPU, BFloat16, func() {
		if dt := x.Matmul(w).DType(); dt != BFloat16 {
			t.Fatalf("matmul under CPU autocast gave %v", dt)
		}
	})
	if dt := x.Matmul(w).DType(); dt != Float32 {
		t.Fatalf("matmul after autocast gave %v", dt)
	}
	NoGrad(func() {
		if x.Matmul(w).RequiresGrad() {
			t.Fatal("result requires grad under NoGrad")
		}
	})
	if !x.Matmul(w).RequiresGrad() {
		t.Fatal("grad mode not restored after NoGrad")
	}
	if err := Try(func() { Autocast(CPU, Float16, func() {}) }); err == nil {
		t.Fatal("CPU float16 autocast accepted")
	}
}

// TestSetThreadsEveryThread checks that SetThreads holds on an OS thread other than the
// caller's, one that already ran a parallel op before the call (OpenMP keeps the count
// per thread: without the shim's per-call sync that thread keeps its old count, and a
// comparison meant to run on one thread silently runs on several).
func TestSetThreadsEveryThread(t *testing.T) {
	prev := Threads()
	defer SetThreads(prev)
	if err := SetThreads(2); err != nil {
		t.Fatal(err)
	}
	work := make(chan func())
	done := make(chan int)
	go func() { // one goroutine on its own OS thread for the whole test
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		for f := range work {
			f()
			done <- Threads()
		}
	}()
	defer close(work)
	matmul := func() {
		WithScope(func() {
			a := Randn([]int64{128, 128}, Float32, CPU)
			a.Matmul(a)
		})
	}
	work <- matmul
	if n := <-done; n != 2 {
		t.Fatalf("other thread: %d threads, want 2", n)
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := SetThreads(1); err != nil {
		t.Fatal(err)
	}
	if n := Threads(); n != 1 {
		t.Fatalf("calling thread: %d threads after SetThreads(1)", n)
	}
	work <- matmul
	if n := <-done; n != 1 {
		t.Errorf("other thread: %d threads after SetThreads(1) on another thread, want 1", n)
	}
	if err := SetThreads(0); err == nil {
		t.Error("SetThreads(0): no error")
	}
}
