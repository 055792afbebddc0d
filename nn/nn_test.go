package nn

import (
	"math"
	"math/rand/v2"
	"testing"

	"goclip/torch"
)

// Reference computations in plain Go, float64, row-major.

func randSlice(r *rand.Rand, n int) []float64 {
	v := make([]float64, n)
	for i := range v {
		v[i] = r.NormFloat64()
	}
	return v
}

// goLinear is x [n, in] W^T [in, out] + b.
func goLinear(x []float64, n, in, out int, w, b []float64) []float64 {
	y := make([]float64, n*out)
	for i := range n {
		for o := range out {
			s := 0.0
			if b != nil {
				s = b[o]
			}
			for k := range in {
				s += x[i*in+k] * w[o*in+k]
			}
			y[i*out+o] = s
		}
	}
	return y
}

func goLayerNorm(x []float64, n, d int, w, b []float64, eps float64) []float64 {
	y := make([]float64, len(x))
	for i := range n {
		row := x[i*d : (i+1)*d]
		mean, v := 0.0, 0.0
		for _, a := range row {
			mean += a
		}
		mean /= float64(d)
		for _, a := range row {
			v += (a - mean) * (a - mean)
		}
		v /= float64(d)
		for j, a := range row {
			y[i*d+j] = (a-mean)/math.Sqrt(v+eps)*w[j] + b[j]
		}
	}
	return y
}

func goQuickGelu(x float64) float64 { return x / (1 + math.Exp(-1.702*x)) }
func goGelu(x float64) float64      { return 0.5 * x * (1 + math.Erf(x/math.Sqrt2)) }
func goGeluTanh(x float64) float64 {
	return 0.5 * x * (1 + math.Tanh(math.Sqrt(2/math.Pi)*(x+0.044715*x*x*x)))
}

// goAttention is multi-head self-attention on x [B, T, D] with projections p (weight,
// bias pairs for q, k, v, out).
func goAttention(x []float64, b, t, d, h int, p [4][2][]float64, causal bool) []float64 {
	q := goLinear(x, b*t, d, d, p[0][0], p[0][1])
	k := goLinear(x, b*t, d, d, p[1][0], p[1][1])
	v := goLinear(x, b*t, d, d, p[2][0], p[2][1])
	dh := d / h
	y := make([]float64, b*t*d)
	for bi := range b {
		for hi := range h {
			for i := range t {
				scores := make([]float64, t)
				mx := math.Inf(-1)
				for j := range t {
					if causal && j > i {
						scores[j] = math.Inf(-1)
						continue
					}
					s := 0.0
					for c := range dh {
						s += q[(bi*t+i)*d+hi*dh+c] * k[(bi*t+j)*d+hi*dh+c]
					}
					scores[j] = s / math.Sqrt(float64(dh))
					mx = math.Max(mx, scores[j])
				}
				z := 0.0
				for j := range scores {
					scores[j] = math.Exp(scores[j] - mx)
					z += scores[j]
				}
				for c := range dh {
					s := 0.0
					for j := range t {
						s += scores[j] / z * v[(bi*t+j)*d+hi*dh+c]
					}
					y[(bi*t+i)*d+hi*dh+c] = s
				}
			}
		}
	}
	return goLinear(y, b*t, d, d, p[3][0], p[3][1])
}

func maxRelErr(t *testing.T, name string, got, want []float64) float64 {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d values, want %d", name, len(got), len(want))
	}
	var num, den float64
	for i := range got {
		num = math.Max(num, math.Abs(got[i]-want[i]))
		den = math.Max(den, math.Abs(want[i]))
	}
	return num / den
}

func f64(v []float64, shape ...int64) *torch.Tensor { return torch.FromFloat64(v, shape...) }

func TestLinearLayerNormEmbeddingForward(t *testing.T) {
	s := torch.NewScope()
	defer s.Close()
	r := rand.New(rand.NewPCG(1, 2))
	x, w, b := randSlice(r, 3*5), randSlice(r, 4*5), randSlice(r, 4)
	l := &Linear{Weight: f64(w, 4, 5), Bias: f64(b, 4)}
	if e := maxRelErr(t, "linear", l.Forward(f64(x, 3, 5)).Float64s(), goLinear(x, 3, 5, 4, w, b)); e > 1e-12 {
		t.Errorf("Linear: rel err %g", e)
	}
	nb := &Linear{Weight: f64(w, 4, 5)}
	if e := maxRelErr(t, "linear", nb.Forward(f64(x, 3, 5)).Float64s(), goLinear(x, 3, 5, 4, w, nil)); e > 1e-12 {
		t.Errorf("Linear without bias: rel err %g", e)
	}
	if len(nb.NamedParameters("p")) != 1 || l.NamedParameters("p")[1].Name != "p.bias" {
		t.Errorf("Linear names %v", l.NamedParameters("p"))
	}

	lw, lb := randSlice(r, 5), randSlice(r, 5)
	ln := &LayerNorm{Weight: f64(lw, 5), Bias: f64(lb, 5), Eps: 1e-5}
	if e := maxRelErr(t, "ln", ln.Forward(f64(x, 3, 5)).Float64s(), goLayerNorm(x, 3, 5, lw, lb, 1e-5)); e > 1e-12 {
		t.Errorf("LayerNorm: rel err %g", e)
	}

	table := randSlice(r, 6*3)
	emb := &Embedding{Weight: f64(table, 6, 3)}
	ids := []int64{5, 0, 2, 2}
	got := emb.Forward(torch.FromInt64(ids, 2, 2)).Float64s()
	var want []float64
	for _, id := range ids {
		want = append(want, table[id*3:id*3+3]...)
	}
	if e := maxRelErr(t, "embedding", got, want); e != 0 {
		t.Errorf("Embedding: rel err %g", e)
	}
}

func TestConv2dForward(t *testing.T) {
	s := torch.NewScope()
	defer s.Close()
	r := rand.New(rand.NewPCG(3, 4))
	const b, c, size, out, k = 2, 3, 4, 5, 2 // 2x2 patches of a 4x4 image
	x, w := randSlice(r, b*c*size*size), randSlice(r, out*c*k*k)
	conv := &Conv2d{Weight: f64(w, out, c, k, k), Stride: k}
	got := conv.Forward(f64(x, b, c, size, size)).Float64s() // [B, out, 2, 2]
	g := size / k
	want := make([]float64, b*out*g*g)
	for bi := range b {
		for o := range out {
			for py := range g {
				for px := range g {
					sum := 0.0
					for ci := range c {
						for dy := range k {
							for dx := range k {
								sum += x[((bi*c+ci)*size+py*k+dy)*size+px*k+dx] * w[((o*c+ci)*k+dy)*k+dx]
							}
						}
					}
					want[((bi*out+o)*g+py)*g+px] = sum
				}
			}
		}
	}
	if e := maxRelErr(t, "conv", got, want); e > 1e-12 {
		t.Errorf("Conv2d: rel err %g", e)
	}
}

func TestActivations(t *testing.T) {
	s := torch.NewScope()
	defer s.Close()
	xs := []float64{-4, -1.5, -0.3, 0, 0.2, 1, 3.7}
	refs := map[string]func(float64) float64{
		"quick_gelu": goQuickGelu, "gelu": goGelu, "gelu_new": goGeluTanh, "gelu_pytorch_tanh": goGeluTanh,
	}
	for _, name := range ActivationNames {
		act, err := ActivationFor(name)
		if err != nil {
			t.Fatal(err)
		}
		got := act(f64(xs)).Float64s()
		for i, x := range xs {
			if math.Abs(got[i]-refs[name](x)) > 1e-12 {
				t.Errorf("%s(%g) = %g, want %g", name, x, got[i], refs[name](x))
			}
		}
	}
	if _, err := ActivationFor("relu"); err == nil {
		t.Error("unknown activation accepted")
	}
}

// attnParams returns random projection parameters for width d.
func attnParams(r *rand.Rand, d int) [4][2][]float64 {
	var p [4][2][]float64
	for i := range p {
		p[i] = [2][]float64{randSlice(r, d*d), randSlice(r, d)}
		for j := range p[i][0] {
			p[i][0][j] /= math.Sqrt(float64(d))
		}
	}
	return p
}

func attnFrom(p [4][2]*torch.Tensor, heads int64, causal bool) *Attention {
	lin := func(i int) *Linear { return &Linear{Weight: p[i][0], Bias: p[i][1]} }
	return &Attention{Q: lin(0), K: lin(1), V: lin(2), Out: lin(3), Heads: heads, Causal: causal}
}

func TestAttentionForward(t *testing.T) {
	s := torch.NewScope()
	defer s.Close()
	r := rand.New(rand.NewPCG(5, 6))
	const b, tt, d, h = 2, 5, 8, 2
	x := randSlice(r, b*tt*d)
	p := attnParams(r, d)
	var pt [4][2]*torch.Tensor
	for i := range p {
		pt[i] = [2]*torch.Tensor{f64(p[i][0], d, d), f64(p[i][1], d)}
	}
	for _, causal := range []bool{false, true} {
		a := attnFrom(pt, h, causal)
		got := a.Forward(f64(x, b, tt, d), nil).Float64s()
		if e := maxRelErr(t, "attention", got, goAttention(x, b, tt, d, h, p, causal)); e > 1e-12 {
			t.Errorf("Attention causal=%v: rel err %g", causal, e)
		}
	}
	a := attnFrom(pt, h, false)
	names := a.NamedParameters("self_attn")
	want := []string{"q_proj.weight", "q_proj.bias", "k_proj.weight", "k_proj.bias", "v_proj.weight", "v_proj.bias", "out_proj.weight", "out_proj.bias"}
	for i, n := range names {
		if n.Name != "self_attn."+want[i] {
			t.Errorf("name %d: %s, want self_attn.%s", i, n.Name, want[i])
		}
	}
}

func TestMLPForward(t *testing.T) {
	s := torch.NewScope()
	defer s.Close()
	r := rand.New(rand.NewPCG(7, 8))
	const n, d, i = 3, 4, 6
	x, w1, b1, w2, b2 := randSlice(r, n*d), randSlice(r, i*d), randSlice(r, i), randSlice(r, d*i), randSlice(r, d)
	act, _ := ActivationFor("quick_gelu")
	m := &MLP{FC1: &Linear{f64(w1, i, d), f64(b1, i)}, FC2: &Linear{f64(w2, d, i), f64(b2, d)}, Act: act}
	h := goLinear(x, n, d, i, w1, b1)
	for j := range h {
		h[j] = goQuickGelu(h[j])
	}
	if e := maxRelErr(t, "mlp", m.Forward(f64(x, n, d)).Float64s(), goLinear(h, n, i, d, w2, b2)); e > 1e-12 {
		t.Errorf("MLP: rel err %g", e)
	}
	ps := m.NamedParameters("mlp")
	if len(ps) != 4 || ps[0].Name != "mlp.fc1.weight" || ps[3].Name != "mlp.fc2.bias" {
		t.Errorf("MLP names %v", ps)
	}
}

// gradCheck compares autograd's gradient of loss(tensors) with central differences, for
// every element of every input (float64).
func gradCheck(t *testing.T, name string, inputs map[string][]float64, shapes map[string][]int64,
	loss func(ts map[string]*torch.Tensor) *torch.Tensor) {
	t.Helper()
	build := func(grad bool) map[string]*torch.Tensor {
		ts := map[string]*torch.Tensor{}
		for k, v := range inputs {
			ts[k] = f64(v, shapes[k]...).SetRequiresGrad(grad)
		}
		return ts
	}
	s := torch.NewScope()
	defer s.Close()
	ts := build(true)
	loss(ts).Backward()
	eval := func() float64 {
		inner := torch.NewScope()
		defer inner.Close()
		var v float64
		torch.NoGrad(func() { v = loss(build(false)).Item() })
		return v
	}
	const eps = 1e-6
	for k, v := range inputs {
		g := ts[k].Grad()
		if g == nil {
			t.Errorf("%s: no gradient for %s", name, k)
			continue
		}
		auto := g.Float64s()
		num := make([]float64, len(v))
		for i := range v {
			orig := v[i]
			v[i] = orig + eps
			up := eval()
			v[i] = orig - eps
			down := eval()
			v[i] = orig
			num[i] = (up - down) / (2 * eps)
		}
		// max |auto - num| / max(max |num|, 1): the absolute error where the gradient is
		// zero (k_proj's bias: softmax ignores a shift shared by a row's scores).
		var diff, scale float64 = 0, 1
		for i := range num {
			diff = math.Max(diff, math.Abs(auto[i]-num[i]))
			scale = math.Max(scale, math.Abs(num[i]))
		}
		e := diff / scale
		t.Logf("%s d/d%s: err %.2g", name, k, e)
		if e > 1e-6 {
			t.Errorf("%s: gradient of %s differs from finite differences: rel err %g", name, k, e)
		}
	}
}

func TestAttentionGradient(t *testing.T) {
	r := rand.New(rand.NewPCG(9, 10))
	const b, tt, d, h = 2, 3, 4, 2
	p := attnParams(r, d)
	inputs := map[string][]float64{"x": randSlice(r, b*tt*d), "w": randSlice(r, b*tt*d)}
	shapes := map[string][]int64{"x": {b, tt, d}, "w": {b, tt, d}}
	names := []string{"q", "k", "v", "o"}
	for i, n := range names {
		inputs[n+".weight"], inputs[n+".bias"] = p[i][0], p[i][1]
		shapes[n+".weight"], shapes[n+".bias"] = []int64{d, d}, []int64{d}
	}
	for _, causal := range []bool{false, true} {
		gradCheck(t, "attention", inputs, shapes, func(ts map[string]*torch.Tensor) *torch.Tensor {
			var pt [4][2]*torch.Tensor
			for i, n := range names {
				pt[i] = [2]*torch.Tensor{ts[n+".weight"], ts[n+".bias"]}
			}
			y := attnFrom(pt, h, causal).Forward(ts["x"], nil) // [B, T, D]
			return y.Mul(ts["w"]).Sum(false)                   // []
		})
	}
}

func TestMLPGradient(t *testing.T) {
	r := rand.New(rand.NewPCG(11, 12))
	const n, d, i = 3, 4, 5
	inputs := map[string][]float64{
		"x": randSlice(r, n*d), "w": randSlice(r, n*d),
		"fc1.weight": randSlice(r, i*d), "fc1.bias": randSlice(r, i), "fc2.weight": randSlice(r, d*i), "fc2.bias": randSlice(r, d),
	}
	shapes := map[string][]int64{"x": {n, d}, "w": {n, d}, "fc1.weight": {i, d}, "fc1.bias": {i}, "fc2.weight": {d, i}, "fc2.bias": {d}}
	for _, name := range ActivationNames {
		act, _ := ActivationFor(name)
		gradCheck(t, "mlp "+name, inputs, shapes, func(ts map[string]*torch.Tensor) *torch.Tensor {
			m := &MLP{FC1: &Linear{ts["fc1.weight"], ts["fc1.bias"]}, FC2: &Linear{ts["fc2.weight"], ts["fc2.bias"]}, Act: act}
			return m.Forward(ts["x"]).Mul(ts["w"]).Sum(false) // []
		})
	}
}

func sampleStats(v []float64) (mean, std float64) {
	for _, x := range v {
		mean += x
	}
	mean /= float64(len(v))
	for _, x := range v {
		std += (x - mean) * (x - mean)
	}
	return mean, math.Sqrt(std / float64(len(v)))
}

func TestInitStatistics(t *testing.T) {
	torch.ManualSeed(42)
	base := torch.Live()
	s := torch.NewScope()
	a := NewAttention(512, 8, false, 0, 0.03, 0.05, torch.CPU)
	m := NewMLP(512, 1024, nil, 0.04, 0.02, torch.CPU)
	e := NewEmbedding(1000, 256, 0.02, torch.CPU)
	c := NewConv2d(3, 256, 16, 16, 0.02, torch.CPU)
	ln := NewLayerNorm(512, 1e-5, torch.CPU)
	check := func(name string, p *torch.Tensor, std float64) {
		t.Helper()
		mean, got := sampleStats(p.Float64s())
		n := float64(p.Numel())
		if math.Abs(got/std-1) > 0.02 || math.Abs(mean) > 5*std/math.Sqrt(n) {
			t.Errorf("%s: mean %.3g std %.4g, want 0 and %.4g", name, mean, got, std)
		}
		if !p.RequiresGrad() || p.DType() != torch.Float32 {
			t.Errorf("%s: requires_grad %v dtype %v", name, p.RequiresGrad(), p.DType())
		}
	}
	check("q", a.Q.Base().Weight, 0.03)
	check("k", a.K.Base().Weight, 0.03)
	check("out", a.Out.Base().Weight, 0.05)
	check("fc1", m.FC1.Base().Weight, 0.04)
	check("fc2", m.FC2.Base().Weight, 0.02)
	check("embedding", e.Weight, 0.02)
	check("conv", c.Weight, 0.02)
	for _, p := range append(a.NamedParameters("a"), m.NamedParameters("m")...) {
		if p.T.Dim() == 1 {
			if mx := p.T.Abs().Amax(false).Item(); mx != 0 {
				t.Errorf("%s: bias not zero (max |b| %g)", p.Name, mx)
			}
		}
	}
	if ln.Weight.Amin(false).Item() != 1 || ln.Weight.Amax(false).Item() != 1 || ln.Bias.Abs().Amax(false).Item() != 0 {
		t.Error("LayerNorm not initialised to 1 and 0")
	}
	ps := append(a.NamedParameters("a"), m.NamedParameters("m")...)
	ps = append(ps, e.NamedParameters("e")...)
	ps = append(ps, c.NamedParameters("c")...)
	ps = append(ps, ln.NamedParameters("ln")...)
	total, trainable := Count(ps)
	want := int64(4*(512*512+512) + 2*512*1024 + 1024 + 512 + 1000*256 + 256*3*16*16 + 2*512)
	if total != want || trainable != want {
		t.Errorf("Count = %d, %d; want %d", total, trainable, want)
	}
	e.Weight.SetRequiresGrad(false)
	if _, tr := Count(ps); tr != want-1000*256 {
		t.Errorf("trainable after freezing the embedding: %d, want %d", tr, want-1000*256)
	}
	a.Free()
	a.Free()
	m.Free()
	e.Free()
	c.Free()
	ln.Free()
	s.Close()
	if d := torch.Live() - base; d != 0 {
		t.Errorf("%d tensors leaked", d)
	}
}

func TestAttentionDropoutMode(t *testing.T) {
	s := torch.NewScope()
	defer s.Close()
	a := NewAttention(16, 2, false, 0.5, 0.3, 0.3, torch.CPU)
	defer a.Free()
	x := torch.Randn([]int64{2, 6, 16}, torch.Float32, torch.CPU)
	a.SetTrain(false)
	if !a.Forward(x, nil).Equal(a.Forward(x, nil)) {
		t.Error("eval mode is not deterministic")
	}
	a.SetTrain(true)
	if a.Forward(x, nil).Equal(a.Forward(x, nil)) {
		t.Error("train mode with dropout 0.5 gave identical outputs twice")
	}
}

// modal is a Projection with a mode, to check that containers pass SetTrain on.
type modal struct {
	*Linear
	train bool
}

func (m *modal) SetTrain(train bool) { m.train = train }

func TestSlotsReplace(t *testing.T) {
	s := torch.NewScope()
	defer s.Close()
	a := NewAttention(8, 2, true, 0, 0.1, 0.1, torch.CPU)
	m := NewMLP(8, 16, (*torch.Tensor).QuickGelu, 0.1, 0.1, torch.CPU)
	defer a.Free()
	defer m.Free()
	slots := append(a.Slots("attn"), m.Slots("mlp")...)
	want := []string{"attn.q_proj", "attn.k_proj", "attn.v_proj", "attn.out_proj", "mlp.fc1", "mlp.fc2"}
	for i, sl := range slots {
		if sl.Name != want[i] {
			t.Errorf("slot %d: %s, want %s", i, sl.Name, want[i])
		}
	}
	v := &modal{Linear: (*slots[2].Ptr).Base()}
	*slots[2].Ptr = v
	if a.V != Projection(v) {
		t.Error("assigning through the slot did not replace the field")
	}
	a.SetTrain(true)
	if !v.train {
		t.Error("SetTrain not passed to the projection")
	}
	if got := a.NamedParameters("attn")[4].Name; got != "attn.v_proj.weight" {
		t.Errorf("name after replacement %s", got)
	}
}

// lowRankProj is a Projection with a term of its own (nn.LowRank), as a LoRA layer is.
type lowRankProj struct {
	*Linear
	U *torch.Tensor // [out, in]
}

func (p *lowRankProj) LowRankTerm(x *torch.Tensor) *torch.Tensor { return torch.Linear(x, p.U, nil) }
func (p *lowRankProj) Forward(x *torch.Tensor) *torch.Tensor {
	return p.Linear.Forward(x).Add(p.LowRankTerm(x))
}

// TestAttentionFusedQKV checks that one [3D, D] product gives the three products'
// output and gradients (x and every parameter) within fp32 rounding (1e-6 of each
// tensor's largest value), causal or not, with plain projections and with a LowRank one
// whose term is added to its slice; and that a projection of another type falls back to
// three products (the result is still the separate form's). k_proj.bias's gradient is
// zero in exact arithmetic (a constant added to every key leaves the softmax unchanged),
// so its difference is measured against the largest gradient instead.
func TestAttentionFusedQKV(t *testing.T) {
	base := torch.Live()
	s := torch.NewScope()
	const b, tt, d, h = 3, 7, 16, 4
	torch.ManualSeed(3)
	for _, c := range []struct {
		name   string
		causal bool
		wrap   func(a *Attention)
	}{
		{"plain", false, func(*Attention) {}},
		{"plain causal", true, func(*Attention) {}},
		{"low-rank k", true, func(a *Attention) {
			a.K = &lowRankProj{Linear: a.K.Base(), U: Normal([]int64{d, d}, 0.2, torch.CPU)}
		}},
		{"other type v", false, func(a *Attention) { a.V = &modal{Linear: a.V.Base()} }},
	} {
		a := NewAttention(d, h, c.causal, 0, 0.3, 0.3, torch.CPU)
		c.wrap(a)
		params := a.NamedParameters("attn")
		if lr, ok := a.K.(*lowRankProj); ok {
			params = append(params, Named{"attn.k_proj.u", lr.U})
		}
		x := torch.Randn([]int64{b, tt, d}, torch.Float32, torch.CPU).SetRequiresGrad(true)
		w := torch.Randn([]int64{b, tt, d}, torch.Float32, torch.CPU)
		run := func(separate bool) [][]float64 {
			a.SeparateQKV = separate
			y := a.Forward(x, nil) // [B, T, D]
			y.Mul(w).Sum(false).Backward()
			out := [][]float64{y.Float64s(), x.Grad().Float64s()}
			x.ZeroGrad()
			for _, p := range params {
				out = append(out, p.T.Grad().Float64s())
				p.T.ZeroGrad()
			}
			return out
		}
		want, got := run(true), run(false)
		largest := 0.0
		for _, v := range want[1:] {
			for _, g := range v {
				largest = max(largest, math.Abs(g))
			}
		}
		for i := range want {
			e := maxRelErr(t, c.name, got[i], want[i])
			if i >= 2 && params[i-2].Name == "attn.k_proj.bias" {
				e = maxRelErr(t, c.name, got[i], want[i]) * maxAbs(want[i]) / largest
			}
			if e > 1e-6 {
				t.Errorf("%s: tensor %d (output, x grad, then %d parameters' grads) rel err %.3g > 1e-6", c.name, i, len(params), e)
			}
		}
		if fusable([]Projection{a.Q, a.K, a.V}) == (c.name == "other type v") {
			t.Errorf("%s: fusable %v", c.name, !(c.name == "other type v"))
		}
		a.Free()
		for _, p := range params {
			p.T.Free()
		}
	}
	s.Close()
	if n := torch.Live() - base; n != 0 {
		t.Errorf("%d tensors leaked", n)
	}
}

func maxAbs(v []float64) float64 {
	m := 0.0
	for _, x := range v {
		m = max(m, math.Abs(x))
	}
	return m
}
