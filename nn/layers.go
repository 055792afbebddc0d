package nn

import (
	"fmt"

	"goclip/torch"
)

// Linear is y = x W^T + b.
type Linear struct {
	Weight *torch.Tensor // [out, in]
	Bias   *torch.Tensor // [out], or nil for no bias
}

// NewLinear is a Linear with weights from N(0, std²) and a zero bias (none when bias is
// false).
func NewLinear(in, out int64, bias bool, std float64, dev torch.Device) *Linear {
	l := &Linear{Weight: Normal([]int64{out, in}, std, dev)}
	if bias {
		l.Bias = Constant([]int64{out}, 0, dev)
	}
	return l
}

// Forward maps x [..., in] to [..., out].
func (l *Linear) Forward(x *torch.Tensor) *torch.Tensor {
	return torch.Linear(x, l.Weight, l.Bias) // [..., out]
}

// NamedParameters lists prefix.weight and, when present, prefix.bias.
func (l *Linear) NamedParameters(prefix string) []Named {
	ps := []Named{{Join(prefix, "weight"), l.Weight}}
	if l.Bias != nil {
		ps = append(ps, Named{Join(prefix, "bias"), l.Bias})
	}
	return ps
}

// Base is l itself: a Linear is its own base layer.
func (l *Linear) Base() *Linear { return l }

// Free releases the parameters.
func (l *Linear) Free() {
	l.Weight.Free()
	l.Bias.Free()
}

// LayerNorm normalises the last dimension and applies an elementwise affine map.
type LayerNorm struct {
	Weight *torch.Tensor // [D]
	Bias   *torch.Tensor // [D]
	Eps    float64
}

// NewLayerNorm is a LayerNorm over d features with weight 1 and bias 0.
func NewLayerNorm(d int64, eps float64, dev torch.Device) *LayerNorm {
	return &LayerNorm{Weight: Constant([]int64{d}, 1, dev), Bias: Constant([]int64{d}, 0, dev), Eps: eps}
}

// Forward normalises x [..., D].
func (n *LayerNorm) Forward(x *torch.Tensor) *torch.Tensor {
	return torch.LayerNorm(x, n.Weight.Shape(), n.Weight, n.Bias, n.Eps) // [..., D]
}

// NamedParameters lists prefix.weight and prefix.bias.
func (n *LayerNorm) NamedParameters(prefix string) []Named {
	return []Named{{Join(prefix, "weight"), n.Weight}, {Join(prefix, "bias"), n.Bias}}
}

// Free releases the parameters.
func (n *LayerNorm) Free() {
	n.Weight.Free()
	n.Bias.Free()
}

// Embedding is a lookup table of vectors.
type Embedding struct {
	Weight *torch.Tensor // [N, D]
}

// NewEmbedding is an Embedding of n vectors of size d drawn from N(0, std²).
func NewEmbedding(n, d int64, std float64, dev torch.Device) *Embedding {
	return &Embedding{Weight: Normal([]int64{n, d}, std, dev)}
}

// Forward looks up int64 indices [...] and returns [..., D].
func (e *Embedding) Forward(ids *torch.Tensor) *torch.Tensor {
	return torch.Embedding(e.Weight, ids) // [..., D]
}

// NamedParameters lists prefix.weight.
func (e *Embedding) NamedParameters(prefix string) []Named {
	return []Named{{Join(prefix, "weight"), e.Weight}}
}

// Free releases the parameters.
func (e *Embedding) Free() { e.Weight.Free() }

// Conv2d is a 2-D convolution without bias and without padding: the patch embedding of a
// vision transformer (kernel = stride = patch size).
type Conv2d struct {
	Weight *torch.Tensor // [Cout, Cin, K, K]
	Stride int64
}

// NewConv2d is a Conv2d with a k×k kernel drawn from N(0, std²).
func NewConv2d(in, out, k, stride int64, std float64, dev torch.Device) *Conv2d {
	return &Conv2d{Weight: Normal([]int64{out, in, k, k}, std, dev), Stride: stride}
}

// Forward maps x [B, Cin, H, W] to [B, Cout, (H-K)/S+1, (W-K)/S+1].
func (c *Conv2d) Forward(x *torch.Tensor) *torch.Tensor {
	return torch.Conv2d(x, c.Weight, nil, c.Stride, 0) // [B, Cout, H', W']
}

// NamedParameters lists prefix.weight.
func (c *Conv2d) NamedParameters(prefix string) []Named {
	return []Named{{Join(prefix, "weight"), c.Weight}}
}

// Free releases the parameters.
func (c *Conv2d) Free() { c.Weight.Free() }

// Activation is an elementwise nonlinearity.
type Activation func(x *torch.Tensor) *torch.Tensor

// ActivationNames are the values of Hugging Face's hidden_act that ActivationFor accepts.
var ActivationNames = []string{"quick_gelu", "gelu", "gelu_new", "gelu_pytorch_tanh"}

// ActivationFor maps a Hugging Face hidden_act name to its function: quick_gelu
// (x·σ(1.702x), OpenAI's CLIP), gelu (exact, erf), gelu_new and gelu_pytorch_tanh (the
// tanh approximation).
func ActivationFor(name string) (Activation, error) {
	switch name {
	case "quick_gelu":
		return (*torch.Tensor).QuickGelu, nil
	case "gelu":
		return (*torch.Tensor).Gelu, nil
	case "gelu_new", "gelu_pytorch_tanh":
		return (*torch.Tensor).GeluTanh, nil
	}
	return nil, fmt.Errorf("unknown activation %q (want one of %v)", name, ActivationNames)
}

// MLP is a transformer block's feed-forward network: fc2(act(fc1(x))).
type MLP struct {
	FC1 Projection // D -> I
	FC2 Projection // I -> D
	Act Activation
}

// NewMLP is an MLP of width d and hidden size i; fc1 and fc2 weights are drawn from
// N(0, fc1Std²) and N(0, fc2Std²), biases are zero.
func NewMLP(d, i int64, act Activation, fc1Std, fc2Std float64, dev torch.Device) *MLP {
	return &MLP{FC1: NewLinear(d, i, true, fc1Std, dev), FC2: NewLinear(i, d, true, fc2Std, dev), Act: act}
}

// Forward maps x [..., D] to [..., D].
func (m *MLP) Forward(x *torch.Tensor) *torch.Tensor {
	h := m.Act(m.FC1.Forward(x)) // [..., I]
	return m.FC2.Forward(h)      // [..., D]
}

// NamedParameters lists prefix.fc1.* and prefix.fc2.*.
func (m *MLP) NamedParameters(prefix string) []Named {
	return append(m.FC1.NamedParameters(Join(prefix, "fc1")), m.FC2.NamedParameters(Join(prefix, "fc2"))...)
}

// Slots lists the projection fields fc1 and fc2 under prefix.
func (m *MLP) Slots(prefix string) []Slot {
	return []Slot{{Join(prefix, "fc1"), &m.FC1}, {Join(prefix, "fc2"), &m.FC2}}
}

// SetTrain passes the mode to projections that have one.
func (m *MLP) SetTrain(train bool) { setTrain(train, m.FC1, m.FC2) }

// Free releases the parameters.
func (m *MLP) Free() {
	m.FC1.Free()
	m.FC2.Free()
}

// Attention is multi-head self-attention with separate query, key, value and output
// projections (Hugging Face's q_proj, k_proj, v_proj, out_proj).
//
// By default q, k and v come from one [3D, D] product: the three base weights (and
// biases) are concatenated at each forward, so the fused weight is always in step with
// the three parameters, which keep their own names and gradients. A LoRA projection's
// low-rank term (see [LowRank]) is added to its slice. Projections of any other type,
// or SeparateQKV, give three products instead.
type Attention struct {
	Q, K, V, Out Projection // D -> D each
	Heads        int64
	Causal       bool    // each position attends to itself and earlier positions only
	Dropout      float64 // on the attention probabilities, in training mode only
	SeparateQKV  bool    // three q, k, v products instead of one (the fused form's off switch)
	train        bool
}

// LowRank is implemented by projections that are a base *Linear (Base) plus a term of
// their own, such as a LoRA layer: Forward(x) = Base().Forward(x) + LowRankTerm(x).
// LowRankTerm returns nil when there is no term (a merged adapter). Attention fuses the
// base products of such projections and adds the terms per slice.
type LowRank interface {
	LowRankTerm(x *torch.Tensor) *torch.Tensor // [..., in] -> [..., out], or nil
}

// NewAttention is an Attention of width d with the given number of heads; q, k and v
// weights are drawn from N(0, inStd²), the output weights from N(0, outStd²), biases are
// zero.
func NewAttention(d, heads int64, causal bool, dropout, inStd, outStd float64, dev torch.Device) *Attention {
	return &Attention{
		Q:       NewLinear(d, d, true, inStd, dev),
		K:       NewLinear(d, d, true, inStd, dev),
		V:       NewLinear(d, d, true, inStd, dev),
		Out:     NewLinear(d, d, true, outStd, dev),
		Heads:   heads,
		Causal:  causal,
		Dropout: dropout,
	}
}

// Forward maps x [B, T, D] to [B, T, D]. mask (nil for none) is added to the attention
// scores, or, when bool, allows attention where true; it broadcasts to [B, H, T, T].
func (a *Attention) Forward(x, mask *torch.Tensor) *torch.Tensor {
	s := x.Shape()
	b, t, d := s[0], s[1], s[2]
	h := a.Heads
	q, k, v := a.qkv(x)                         // [B, T, D] each
	q = q.Reshape(b, t, h, d/h).Transpose(1, 2) // [B, H, T, Dh]
	k = k.Reshape(b, t, h, d/h).Transpose(1, 2) // [B, H, T, Dh]
	v = v.Reshape(b, t, h, d/h).Transpose(1, 2) // [B, H, T, Dh]
	p := 0.0
	if a.train {
		p = a.Dropout
	}
	y := torch.Attention(q, k, v, mask, a.Causal, p, true) // [B, H, T, Dh]
	y = y.Transpose(1, 2).Reshape(b, t, d)                 // [B, T, D]
	return a.Out.Forward(y)                                // [B, T, D]
}

// qkv is the three projections of x [B, T, D]: one product with the concatenated base
// weights when the projections allow it (see Attention), else three.
func (a *Attention) qkv(x *torch.Tensor) (q, k, v *torch.Tensor) {
	ps := []Projection{a.Q, a.K, a.V}
	if a.SeparateQKV || !fusable(ps) {
		return a.Q.Forward(x), a.K.Forward(x), a.V.Forward(x) // [B, T, D] each
	}
	ws := make([]*torch.Tensor, 3)
	var bs []*torch.Tensor
	for i, p := range ps {
		l := p.Base()
		ws[i] = l.Weight // [D, D]
		if l.Bias != nil {
			bs = append(bs, l.Bias) // [D]
		}
	}
	w := torch.Cat(ws, 0) // [3D, D]
	var bias *torch.Tensor
	if len(bs) == 3 {
		bias = torch.Cat(bs, 0) // [3D]
	}
	y := torch.Linear(x, w, bias) // [B, T, 3D]
	d := a.Q.Base().Weight.Size(0)
	out := make([]*torch.Tensor, 3)
	for i, p := range ps {
		out[i] = y.Narrow(-1, int64(i)*d, d) // [B, T, D]
		if lr, ok := p.(LowRank); ok {
			if u := lr.LowRankTerm(x); u != nil {
				out[i] = out[i].Add(u) // [B, T, D]
			}
		}
	}
	return out[0], out[1], out[2]
}

// fusable reports whether q, k and v can share one product: each is a *Linear or a
// LowRank projection over one, with equal output widths, and all or none have a bias.
func fusable(ps []Projection) bool {
	biases := 0
	for _, p := range ps {
		if _, plain := p.(*Linear); !plain {
			if _, ok := p.(LowRank); !ok {
				return false
			}
		}
		l := p.Base()
		if l == nil || l.Weight.Size(0) != ps[0].Base().Weight.Size(0) {
			return false
		}
		if l.Bias != nil {
			biases++
		}
	}
	return biases == 0 || biases == len(ps)
}

// NamedParameters lists prefix.{q,k,v,out}_proj.*.
func (a *Attention) NamedParameters(prefix string) []Named {
	var ps []Named
	for _, s := range a.Slots(prefix) {
		ps = append(ps, (*s.Ptr).NamedParameters(s.Name)...)
	}
	return ps
}

// Slots lists the projection fields q_proj, k_proj, v_proj and out_proj under prefix.
func (a *Attention) Slots(prefix string) []Slot {
	return []Slot{
		{Join(prefix, "q_proj"), &a.Q},
		{Join(prefix, "k_proj"), &a.K},
		{Join(prefix, "v_proj"), &a.V},
		{Join(prefix, "out_proj"), &a.Out},
	}
}

// SetTrain switches attention dropout on (train) or off, and passes the mode to
// projections that have one.
func (a *Attention) SetTrain(train bool) {
	a.train = train
	setTrain(train, a.Q, a.K, a.V, a.Out)
}

// Free releases the parameters.
func (a *Attention) Free() {
	for _, p := range []Projection{a.Q, a.K, a.V, a.Out} {
		p.Free()
	}
}

func setTrain(train bool, ps ...Projection) {
	for _, p := range ps {
		if t, ok := p.(Trainer); ok {
			t.SetTrain(train)
		}
	}
}
