package clip

import (
	"fmt"
	"math"

	"goclip/nn"
	"goclip/torch"
)

// Shapes in comments: B batch, T text positions, N image patches, D a tower's width,
// I its MLP width, C channels, S image size, G = S / patch, P projection_dim.

// EncoderLayer is one pre-LN transformer block (HF CLIPEncoderLayer):
// x + attn(ln1(x)), then h + mlp(ln2(h)).
type EncoderLayer struct {
	LayerNorm1 *nn.LayerNorm // layer_norm1
	SelfAttn   *nn.Attention // self_attn
	LayerNorm2 *nn.LayerNorm // layer_norm2
	MLP        *nn.MLP       // mlp
}

// Forward maps x [B, T, D] to [B, T, D]. Intermediate handles are freed on return.
func (l *EncoderLayer) Forward(x *torch.Tensor) *torch.Tensor {
	s := torch.NewScope()
	defer s.Close()
	h := x.Add(l.SelfAttn.Forward(l.LayerNorm1.Forward(x), nil)) // [B, T, D]
	y := h.Add(l.MLP.Forward(l.LayerNorm2.Forward(h)))           // [B, T, D]
	return s.Keep(y)
}

func (l *EncoderLayer) namedParameters(prefix string) []nn.Named {
	ps := l.LayerNorm1.NamedParameters(nn.Join(prefix, "layer_norm1"))
	ps = append(ps, l.SelfAttn.NamedParameters(nn.Join(prefix, "self_attn"))...)
	ps = append(ps, l.LayerNorm2.NamedParameters(nn.Join(prefix, "layer_norm2"))...)
	return append(ps, l.MLP.NamedParameters(nn.Join(prefix, "mlp"))...)
}

func (l *EncoderLayer) slots(prefix string) []nn.Slot {
	return append(l.SelfAttn.Slots(nn.Join(prefix, "self_attn")), l.MLP.Slots(nn.Join(prefix, "mlp"))...)
}

// Encoder is a stack of EncoderLayers (HF CLIPEncoder).
type Encoder struct {
	Layers []*EncoderLayer // layers.N
	// Checkpoint turns on gradient checkpointing: while autograd records, Forward keeps
	// only each layer's input and FinishBackward recomputes the layers (see
	// Model.FinishBackward).
	Checkpoint bool
	tapes      []*tape
}

// tape is what a checkpointed Forward keeps for the recomputation.
type tape struct {
	in     *torch.Tensor   // the encoder's input, with its autograd history [B, T, D]
	xs     []*torch.Tensor // each layer's input, outside autograd [B, T, D]
	rng    []*torch.Tensor // the device generator's state before each layer (dropout draws)
	out    *torch.Tensor   // the encoder's output, a leaf [B, T, D]: its gradient starts the replay
	dev    torch.Device
	castDT torch.DType // the forward's autocast, repeated in the replay
	castOn bool
}

// towerSpec is what building an encoder needs from a tower's config.
type towerSpec struct {
	width, mlp, heads, layers int64
	act                       string
	eps, dropout, factor      float64
	causal                    bool
}

// build appends the layers, initialised as transformers' CLIPPreTrainedModel._init_weights:
// q/k/v and fc2 weights N(0, (D^-0.5 (2L)^-0.5 f)²), out_proj N(0, (D^-0.5 f)²), fc1
// N(0, ((2D)^-0.5 f)²), biases 0, layer norms 1 and 0. Each layer is appended once
// complete, so Free after a failure releases what was built.
func (e *Encoder) build(t towerSpec, dev torch.Device) error {
	act, err := nn.ActivationFor(t.act)
	if err != nil {
		return err
	}
	d := float64(t.width)
	inStd := math.Pow(d, -0.5) * math.Pow(2*float64(t.layers), -0.5) * t.factor
	outStd := math.Pow(d, -0.5) * t.factor
	fcStd := math.Pow(2*d, -0.5) * t.factor
	for range t.layers {
		e.Layers = append(e.Layers, &EncoderLayer{
			LayerNorm1: nn.NewLayerNorm(t.width, t.eps, dev),
			SelfAttn:   nn.NewAttention(t.width, t.heads, t.causal, t.dropout, inStd, outStd, dev),
			LayerNorm2: nn.NewLayerNorm(t.width, t.eps, dev),
			MLP:        nn.NewMLP(t.width, t.mlp, act, fcStd, inStd, dev),
		})
	}
	return nil
}

// Forward maps x [B, T, D] to [B, T, D].
func (e *Encoder) Forward(x *torch.Tensor) *torch.Tensor {
	if e.Checkpoint && torch.GradEnabled() && (x.RequiresGrad() || e.trainable()) {
		return e.forwardCheckpointed(x)
	}
	for _, l := range e.Layers {
		x = l.Forward(x) // [B, T, D]
	}
	return x
}

// trainable reports whether any parameter of the layers requires grad (a locked tower's
// do not: it runs without a tape).
func (e *Encoder) trainable() bool {
	for _, l := range e.Layers {
		for _, p := range l.namedParameters("") {
			if p.T.RequiresGrad() {
				return true
			}
		}
	}
	return false
}

// forwardCheckpointed runs the layers outside autograd, keeping their inputs and the
// generator state before each, and returns the result as a new leaf that requires grad;
// finishBackward replays the layers from its gradient. The tape's tensors belong to the
// caller's scope, as a plain forward's graph does.
func (e *Encoder) forwardCheckpointed(x *torch.Tensor) *torch.Tensor {
	e.dropStale()
	tp := &tape{in: x, dev: x.Device()}
	tp.castDT, tp.castOn = torch.AutocastState(tp.dev)
	h := x.Detach() // [B, T, D]
	torch.NoGrad(func() {
		for _, l := range e.Layers {
			tp.xs = append(tp.xs, h)
			tp.rng = append(tp.rng, torch.RNGState(tp.dev))
			h = l.Forward(h) // [B, T, D]
		}
	})
	tp.out = h.SetRequiresGrad(true) // [B, T, D]
	e.tapes = append(e.tapes, tp)
	return tp.out
}

// dropStale forgets tapes whose tensors were freed without a backward pass (a forward
// whose loss was not back-propagated).
func (e *Encoder) dropStale() {
	kept := e.tapes[:0]
	for _, tp := range e.tapes {
		if !tp.out.Freed() {
			kept = append(kept, tp)
		}
	}
	e.tapes = kept
}

// finishBackward replays every pending tape, newest first, and forgets them.
func (e *Encoder) finishBackward() {
	e.dropStale()
	tapes := e.tapes
	e.tapes = nil
	for i := len(tapes) - 1; i >= 0; i-- {
		tapes[i].replay(e.Layers)
	}
}

// replay back-propagates the output's gradient through the layers, recomputing each
// one's forward with autograd (same input, same autocast, same generator state, so the
// same dropout draws), last layer first, and then into the encoder's input's history.
// The generator's state is restored afterwards, so later draws do not change either.
func (tp *tape) replay(layers []*EncoderLayer) {
	s := torch.NewScope()
	defer s.Close()
	g := tp.out.Grad() // [B, T, D]; nil when the loss did not reach this output
	if g == nil {
		return
	}
	saved := torch.RNGState(tp.dev)
	defer func() { torch.Must(torch.SetRNGState(tp.dev, saved)) }()
	needIn := tp.in.RequiresGrad()
	torch.WithGrad(func() {
		for i := len(layers) - 1; i >= 0; i-- {
			inner := torch.NewScope()
			wantGrad := i > 0 || needIn
			x := tp.xs[i].Detach().SetRequiresGrad(wantGrad) // [B, T, D]
			torch.Must(torch.SetRNGState(tp.dev, tp.rng[i]))
			var y *torch.Tensor
			if tp.castOn {
				torch.Autocast(tp.dev, tp.castDT, func() { y = layers[i].Forward(x) }) // [B, T, D]
			} else {
				y = layers[i].Forward(x) // [B, T, D]
			}
			if y.RequiresGrad() {
				y.BackwardWith(g, false)
			}
			if wantGrad {
				prev := g
				g = inner.Keep(x.Grad()) // [B, T, D]
				prev.Free()
			}
			inner.Close()
			if g == nil { // nothing upstream of this layer needs a gradient
				return
			}
		}
		if needIn {
			tp.in.BackwardWith(g, false)
		}
	})
}

func (e *Encoder) namedParameters(prefix string) []nn.Named {
	var ps []nn.Named
	for i, l := range e.Layers {
		ps = append(ps, l.namedParameters(fmt.Sprintf("%s.layers.%d", prefix, i))...)
	}
	return ps
}

func (e *Encoder) slots(prefix string) []nn.Slot {
	var ss []nn.Slot
	for i, l := range e.Layers {
		ss = append(ss, l.slots(fmt.Sprintf("%s.layers.%d", prefix, i))...)
	}
	return ss
}

func (e *Encoder) setTrain(train bool) {
	for _, l := range e.Layers {
		l.SelfAttn.SetTrain(train)
		l.MLP.SetTrain(train)
	}
}

func (e *Encoder) free() {
	for _, l := range e.Layers {
		l.LayerNorm1.Free()
		l.SelfAttn.Free()
		l.LayerNorm2.Free()
		l.MLP.Free()
	}
}

// VisionEmbeddings turns images into patch tokens with a class token in front
// (HF CLIPVisionEmbeddings).
type VisionEmbeddings struct {
	ClassEmbedding    *torch.Tensor // class_embedding [D]
	PatchEmbedding    *nn.Conv2d    // patch_embedding [D, C, patch, patch], stride patch
	PositionEmbedding *nn.Embedding // position_embedding [N+1, D]
}

// Forward maps pixels [B, C, S, S] to tokens [B, N+1, D].
func (e *VisionEmbeddings) Forward(pixels *torch.Tensor) *torch.Tensor {
	p := e.PatchEmbedding.Forward(pixels)            // [B, D, G, G]
	p = p.Flatten(2, 3).Transpose(1, 2)              // [B, N, D]
	cls := e.ClassEmbedding.Expand(p.Size(0), 1, -1) // [B, 1, D]
	x := torch.Cat([]*torch.Tensor{cls, p}, 1)       // [B, N+1, D]
	return x.Add(e.PositionEmbedding.Weight)         // [B, N+1, D]
}

// VisionTransformer is the image tower up to the pooled output (HF CLIPVisionTransformer,
// "vision_model").
type VisionTransformer struct {
	Embeddings    *VisionEmbeddings // embeddings
	PreLayrnorm   *nn.LayerNorm     // pre_layrnorm (HF's spelling)
	Encoder       *Encoder          // encoder
	PostLayernorm *nn.LayerNorm     // post_layernorm
}

// Forward maps pixels [B, C, S, S] to the pooled output [B, D]: post_layernorm of the
// class token.
func (v *VisionTransformer) Forward(pixels *torch.Tensor) *torch.Tensor {
	x := v.PreLayrnorm.Forward(v.Embeddings.Forward(pixels)) // [B, N+1, D]
	x = v.Encoder.Forward(x)                                 // [B, N+1, D]
	return v.PostLayernorm.Forward(x.Select(1, 0))           // [B, D]
}

func (v *VisionTransformer) namedParameters(prefix string) []nn.Named {
	e := v.Embeddings
	ps := []nn.Named{{Name: nn.Join(prefix, "embeddings.class_embedding"), T: e.ClassEmbedding}}
	ps = append(ps, e.PatchEmbedding.NamedParameters(nn.Join(prefix, "embeddings.patch_embedding"))...)
	ps = append(ps, e.PositionEmbedding.NamedParameters(nn.Join(prefix, "embeddings.position_embedding"))...)
	ps = append(ps, v.PreLayrnorm.NamedParameters(nn.Join(prefix, "pre_layrnorm"))...)
	ps = append(ps, v.Encoder.namedParameters(nn.Join(prefix, "encoder"))...)
	return append(ps, v.PostLayernorm.NamedParameters(nn.Join(prefix, "post_layernorm"))...)
}

// TextEmbeddings sums token and position embeddings (HF CLIPTextEmbeddings).
type TextEmbeddings struct {
	TokenEmbedding    *nn.Embedding // token_embedding [V, D]
	PositionEmbedding *nn.Embedding // position_embedding [Tmax, D]
}

// Forward maps ids [B, T] (int64, T <= max_position_embeddings) to [B, T, D].
func (e *TextEmbeddings) Forward(ids *torch.Tensor) *torch.Tensor {
	pos := e.PositionEmbedding.Weight.Narrow(0, 0, ids.Size(1)) // [T, D]
	return e.TokenEmbedding.Forward(ids).Add(pos)               // [B, T, D]
}

// TextTransformer is the causal text tower up to the pooled output (HF
// CLIPTextTransformer, "text_model").
type TextTransformer struct {
	Embeddings     *TextEmbeddings // embeddings
	Encoder        *Encoder        // encoder
	FinalLayerNorm *nn.LayerNorm   // final_layer_norm
	EOSTokenID     int64           // pooling rule: see the package doc
}

// Forward maps ids [B, T] (int64) to the pooled output [B, D]: final_layer_norm of the
// hidden state at the end token. (The layer norm is per position, so it is applied to
// the pooled rows only.)
func (t *TextTransformer) Forward(ids *torch.Tensor) *torch.Tensor {
	h := t.Encoder.Forward(t.Embeddings.Forward(ids)) // [B, T, D]
	s := h.Shape()
	b, n, d := s[0], s[1], s[2]
	var at *torch.Tensor
	if t.EOSTokenID == 2 {
		at = ids.Argmax(-1, false) // [B]
	} else {
		at = ids.EqScalar(float64(t.EOSTokenID)).To(torch.Int64).Argmax(-1, false) // [B] first match
	}
	rows := torch.Arange(0, float64(b*n), float64(n), torch.Int64, ids.Device()).Add(at) // [B]
	pooled := h.Reshape(b*n, d).IndexSelect(0, rows)                                     // [B, D]
	return t.FinalLayerNorm.Forward(pooled)                                              // [B, D]
}

// PoolPosition is the position whose hidden state Forward pools for one row of ids, by
// the same rule: argmax (the first maximum) when EOSTokenID is 2, else the first position
// equal to EOSTokenID (0 when there is none).
func (t *TextTransformer) PoolPosition(row []int64) int {
	at := 0
	for i, id := range row {
		if t.EOSTokenID == 2 {
			if id > row[at] {
				at = i
			}
		} else if id == t.EOSTokenID {
			return i
		}
	}
	return at
}

func (t *TextTransformer) namedParameters(prefix string) []nn.Named {
	ps := t.Embeddings.TokenEmbedding.NamedParameters(nn.Join(prefix, "embeddings.token_embedding"))
	ps = append(ps, t.Embeddings.PositionEmbedding.NamedParameters(nn.Join(prefix, "embeddings.position_embedding"))...)
	ps = append(ps, t.Encoder.namedParameters(nn.Join(prefix, "encoder"))...)
	return append(ps, t.FinalLayerNorm.NamedParameters(nn.Join(prefix, "final_layer_norm"))...)
}

// Speed holds the switches of the model's speed-ups. The zero value is the default:
// trimmed captions and fused q/k/v on (both exact to float rounding), gradient
// checkpointing off. The other values exist to compare against.
type Speed struct {
	// FullText makes TextIDs keep every context position (77) instead of cutting a batch
	// to its longest caption.
	FullText bool
	// SeparateQKV computes q, k and v by three products instead of one [3D, D] product
	// (nn.Attention).
	SeparateQKV bool
	// GradCheckpointing keeps only each encoder layer's input in a forward with autograd
	// and recomputes the layers in FinishBackward: less memory, one more forward.
	GradCheckpointing bool
}

// Model is CLIP (HF CLIPModel): both towers, their projections into the joint space and
// the learned temperature.
type Model struct {
	Config           Config
	VisionModel      *VisionTransformer // vision_model
	TextModel        *TextTransformer   // text_model
	VisualProjection nn.Projection      // visual_projection [P, Dv], no bias
	TextProjection   nn.Projection      // text_projection [P, Dt], no bias
	LogitScale       *torch.Tensor      // logit_scale [], the log of the logits' scale
	dev              torch.Device
	speed            Speed
}

// New builds a CLIP model on dev with CLIP's from-scratch initialisation (transformers'
// CLIPPreTrainedModel._init_weights): token, position and patch embeddings N(0, 0.02²)
// (initializer_range·factor for the vision ones, 0.02·factor for the text ones), class
// embedding N(0, D^-1·f²), encoders as Encoder.build, projections N(0, D^-1·f²), layer norms
// 1 and 0, logit_scale = logit_scale_init_value. Parameters are float32, Owned and
// require grad. The model starts in training mode.
func New(cfg Config, dev torch.Device) (m *Model, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	m = &Model{Config: cfg, dev: dev}
	defer func() {
		if r := recover(); r != nil {
			m.Free()
			m = nil
			if e, ok := r.(*torch.Error); ok {
				err = fmt.Errorf("building CLIP model on %s: %w", dev, e)
				return
			}
			panic(r)
		}
	}()
	if err := m.build(dev); err != nil {
		m.Free()
		return nil, err
	}
	m.SetTrain(true)
	return m, nil
}

func (m *Model) build(dev torch.Device) error {
	cfg := m.Config
	vc, tc := cfg.Vision, cfg.Text
	vf, tf := vc.InitializerFactor, tc.InitializerFactor

	m.VisionModel = &VisionTransformer{Embeddings: &VisionEmbeddings{
		ClassEmbedding:    nn.Normal([]int64{vc.HiddenSize}, math.Pow(float64(vc.HiddenSize), -0.5)*vf, dev),
		PatchEmbedding:    nn.NewConv2d(vc.NumChannels, vc.HiddenSize, vc.PatchSize, vc.PatchSize, vc.InitializerRange*vf, dev),
		PositionEmbedding: nn.NewEmbedding(vc.NumPatches()+1, vc.HiddenSize, vc.InitializerRange*vf, dev),
	}}
	m.VisionModel.PreLayrnorm = nn.NewLayerNorm(vc.HiddenSize, vc.LayerNormEps, dev)
	m.VisionModel.Encoder = &Encoder{}
	err := m.VisionModel.Encoder.build(towerSpec{vc.HiddenSize, vc.IntermediateSize, vc.NumAttentionHeads,
		vc.NumHiddenLayers, vc.HiddenAct, vc.LayerNormEps, vc.AttentionDropout, vf, false}, dev)
	if err != nil {
		return err
	}
	m.VisionModel.PostLayernorm = nn.NewLayerNorm(vc.HiddenSize, vc.LayerNormEps, dev)

	m.TextModel = &TextTransformer{EOSTokenID: tc.EOSTokenID, Embeddings: &TextEmbeddings{
		TokenEmbedding:    nn.NewEmbedding(tc.VocabSize, tc.HiddenSize, 0.02*tf, dev),
		PositionEmbedding: nn.NewEmbedding(tc.MaxPositionEmbeddings, tc.HiddenSize, 0.02*tf, dev),
	}}
	m.TextModel.Encoder = &Encoder{}
	err = m.TextModel.Encoder.build(towerSpec{tc.HiddenSize, tc.IntermediateSize, tc.NumAttentionHeads,
		tc.NumHiddenLayers, tc.HiddenAct, tc.LayerNormEps, tc.AttentionDropout, tf, true}, dev)
	if err != nil {
		return err
	}
	m.TextModel.FinalLayerNorm = nn.NewLayerNorm(tc.HiddenSize, tc.LayerNormEps, dev)

	f := cfg.InitializerFactor
	m.VisualProjection = nn.NewLinear(vc.HiddenSize, cfg.ProjectionDim, false, math.Pow(float64(vc.HiddenSize), -0.5)*f, dev)
	m.TextProjection = nn.NewLinear(tc.HiddenSize, cfg.ProjectionDim, false, math.Pow(float64(tc.HiddenSize), -0.5)*f, dev)
	m.LogitScale = nn.Constant([]int64{}, cfg.LogitScaleInitValue, dev)
	return nil
}

// SetSpeed selects the speed-ups (see Speed) for every later forward.
func (m *Model) SetSpeed(s Speed) {
	m.speed = s
	for _, e := range []*Encoder{m.VisionModel.Encoder, m.TextModel.Encoder} {
		e.Checkpoint = s.GradCheckpointing
		for _, l := range e.Layers {
			l.SelfAttn.SeparateQKV = s.SeparateQKV
		}
	}
}

// Speed is the model's speed-up selection (SetSpeed).
func (m *Model) Speed() Speed { return m.speed }

// FinishBackward completes a backward pass with gradient checkpointing: after
// loss.Backward() has reached the encoders' outputs, it recomputes their layers and
// back-propagates through them and into the embeddings. Without checkpointing, or when no
// checkpointed forward is pending, it does nothing. Call it after every backward of a
// training loss.
func (m *Model) FinishBackward() {
	m.VisionModel.Encoder.finishBackward()
	m.TextModel.Encoder.finishBackward()
}

// TextIDs cuts a batch of token ids [rows, T] (row-major, len(ids) = rows·T) to
// [rows, L], L one past the last position that the pooling rule reads in any row: with
// the causal mask, the positions after a row's pooled one cannot change its pooled
// output, so the text tower gives the same result (to float rounding) in fewer
// positions. It returns the ids cut, row-major (ids itself when nothing is cut, as with
// Speed.FullText, where L = T), and L; the caller makes the tensor
// (torch.FromInt64(cut, rows, L)). ids that do not make rows rows of equal length are an
// error.
func (m *Model) TextIDs(ids []int64, rows int) (cut []int64, length int, err error) {
	if rows <= 0 || len(ids)%rows != 0 {
		return nil, 0, fmt.Errorf("text ids: %d ids do not make %d rows of equal length", len(ids), rows)
	}
	t := len(ids) / rows
	l := t
	if !m.speed.FullText && t > 0 {
		l = 1
		for r := range rows {
			l = max(l, m.TextModel.PoolPosition(ids[r*t:(r+1)*t])+1)
		}
	}
	if l == t {
		return ids, t, nil
	}
	cut = make([]int64, 0, rows*l)
	for r := range rows {
		cut = append(cut, ids[r*t:r*t+l]...)
	}
	return cut, l, nil
}

// VisionPooled is the image tower's pooled output [B, Dv] for pixels [B, C, S, S].
func (m *Model) VisionPooled(pixels *torch.Tensor) *torch.Tensor {
	return m.VisionModel.Forward(pixels)
}

// TextPooled is the text tower's pooled output [B, Dt] for ids [B, T].
func (m *Model) TextPooled(ids *torch.Tensor) *torch.Tensor { return m.TextModel.Forward(ids) }

// EncodeImage is the projected, unnormalised image embedding [B, P] of pixels
// [B, C, S, S] (HF get_image_features).
func (m *Model) EncodeImage(pixels *torch.Tensor) *torch.Tensor {
	return m.VisualProjection.Forward(m.VisionPooled(pixels)) // [B, P]
}

// EncodeText is the projected, unnormalised text embedding [B, P] of int64 ids [B, T]
// (HF get_text_features).
func (m *Model) EncodeText(ids *torch.Tensor) *torch.Tensor {
	return m.TextProjection.Forward(m.TextPooled(ids)) // [B, P]
}

// Forward returns logits_per_image [B, B]: exp(logit_scale) times the cosine similarity
// of image i and text j (Logits). (logits_per_text is its transpose.)
func (m *Model) Forward(pixels, ids *torch.Tensor) *torch.Tensor {
	img := Normalized(m.EncodeImage(pixels)) // [B, P]
	txt := Normalized(m.EncodeText(ids))     // [B, P]
	return Logits(img, txt, m.LogitScale)    // [B, B]
}

// Normalized is embeddings x [N, P] in float32, each row scaled to unit length (L2,
// eps 1e-12), so that their dot products are cosine similarities.
func Normalized(x *torch.Tensor) *torch.Tensor {
	return x.To(torch.Float32).Normalize(2, -1, 1e-12) // [N, P]
}

// Logits are CLIP's logits [N, M] of normalised embeddings x [N, P] and y [M, P]
// (Normalized): exp(logitScale)·<x_i, y_j>, the cosine similarities times the learned
// temperature scale. With images x and texts y they are logits_per_image, the other way
// round logits_per_text. logitScale is a scalar tensor, the log of the scale (the
// model's LogitScale, CLIPModel's logit_scale). Every loss, the evaluation and
// zero-shot classification take their logits from here.
func Logits(x, y, logitScale *torch.Tensor) *torch.Tensor {
	return x.Matmul(y.T()).Mul(logitScale.To(torch.Float32).Exp()) // [N, M]
}

// ContrastiveLoss is CLIP's symmetric cross-entropy of logits_per_image [B, B] whose
// matching pairs lie on the diagonal: (CE(rows) + CE(columns)) / 2, a scalar.
func ContrastiveLoss(logitsPerImage *torch.Tensor) *torch.Tensor {
	b := logitsPerImage.Size(0)
	target := torch.Arange(0, float64(b), 1, torch.Int64, logitsPerImage.Device()) // [B]
	rows := torch.CrossEntropy(logitsPerImage, target)                             // []
	cols := torch.CrossEntropy(logitsPerImage.T(), target)                         // []
	return rows.Add(cols).MulScalar(0.5)                                           // []
}

// NamedParameters lists every parameter under its HF CLIPModel state-dict key, vision
// tower first, then the text tower, visual_projection, text_projection and logit_scale.
func (m *Model) NamedParameters() []nn.Named {
	ps := m.VisionModel.namedParameters("vision_model")
	ps = append(ps, m.TextModel.namedParameters("text_model")...)
	ps = append(ps, m.VisualProjection.NamedParameters("visual_projection")...)
	ps = append(ps, m.TextProjection.NamedParameters("text_projection")...)
	return append(ps, nn.Named{Name: "logit_scale", T: m.LogitScale})
}

// Projections lists every linear layer of the model as a slot, by its full HF module
// name, in NamedParameters order: per encoder layer self_attn.{q,k,v,out}_proj and
// mlp.{fc1,fc2} (vision tower, then text tower), then visual_projection and
// text_projection. Assigning *slot.Ptr replaces the layer (LoRA injection); Forward,
// NamedParameters, SetTrain and Free then use the replacement.
func (m *Model) Projections() []nn.Slot {
	ss := m.VisionModel.Encoder.slots("vision_model.encoder")
	ss = append(ss, m.TextModel.Encoder.slots("text_model.encoder")...)
	return append(ss, nn.Slot{Name: "visual_projection", Ptr: &m.VisualProjection},
		nn.Slot{Name: "text_projection", Ptr: &m.TextProjection})
}

// SetTrain selects training mode (attention dropout on, when configured) or evaluation
// mode, for every module and every projection that has a mode.
func (m *Model) SetTrain(train bool) {
	m.VisionModel.Encoder.setTrain(train)
	m.TextModel.Encoder.setTrain(train)
	for _, p := range []nn.Projection{m.VisualProjection, m.TextProjection} {
		if t, ok := p.(nn.Trainer); ok {
			t.SetTrain(train)
		}
	}
}

// Device is where the model's parameters were created.
func (m *Model) Device() torch.Device { return m.dev }

// Free releases every parameter. It is idempotent, and safe on a partly built model.
func (m *Model) Free() {
	if m == nil {
		return
	}
	if v := m.VisionModel; v != nil {
		if e := v.Embeddings; e != nil {
			e.ClassEmbedding.Free()
			freeIf(e.PatchEmbedding)
			freeIf(e.PositionEmbedding)
		}
		freeIf(v.PreLayrnorm)
		if v.Encoder != nil {
			v.Encoder.free()
		}
		freeIf(v.PostLayernorm)
	}
	if t := m.TextModel; t != nil {
		if e := t.Embeddings; e != nil {
			freeIf(e.TokenEmbedding)
			freeIf(e.PositionEmbedding)
		}
		if t.Encoder != nil {
			t.Encoder.free()
		}
		freeIf(t.FinalLayerNorm)
	}
	if m.VisualProjection != nil {
		m.VisualProjection.Free()
	}
	if m.TextProjection != nil {
		m.TextProjection.Free()
	}
	m.LogitScale.Free()
}

// freeIf frees a module that may be missing from a partly built model.
func freeIf[M interface {
	comparable
	Free()
}](mod M) {
	var zero M
	if mod != zero {
		mod.Free()
	}
}
