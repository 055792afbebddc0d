package clip

// The architecture a Config describes: its parameters (names and shapes, as New creates
// them), their count, and the model FLOPs of a forward pass.

import (
	"fmt"
	"math/bits"
	"strconv"
)

// ParamShape is one parameter of a CLIP model, by Hugging Face key, and its shape.
type ParamShape struct {
	Name  string
	Shape []int64
}

// Numel is the number of elements of the parameter, for the shapes of a config that
// Validate accepts (whose sizes are bounded, so the product cannot overflow).
func (p ParamShape) Numel() int64 {
	n := int64(1)
	for _, d := range p.Shape {
		n *= d
	}
	return n
}

// paramSpec is one entry of a CLIP architecture's parameter list: a parameter, or, when
// layers > 0, the same parameter of each of an encoder's layers, named
// name + <layer index> + suffix. The list has a fixed length whatever the number of
// layers, so counting never allocates per layer.
type paramSpec struct {
	name, suffix string
	layers       int64
	shape        []int64
}

// paramSpecs is the one description of the parameters New(cfg) creates.
func paramSpecs(cfg Config) []paramSpec {
	var ps []paramSpec
	add := func(name string, shape ...int64) { ps = append(ps, paramSpec{name: name, shape: shape}) }
	encoder := func(prefix string, layers, d, inner int64) {
		l := prefix + ".encoder.layers."
		per := func(suffix string, shape ...int64) {
			ps = append(ps, paramSpec{name: l, suffix: suffix, layers: layers, shape: shape})
		}
		for _, proj := range []string{"k_proj", "v_proj", "q_proj", "out_proj"} {
			per(".self_attn."+proj+".weight", d, d)
			per(".self_attn."+proj+".bias", d)
		}
		per(".layer_norm1.weight", d)
		per(".layer_norm1.bias", d)
		per(".mlp.fc1.weight", inner, d)
		per(".mlp.fc1.bias", inner)
		per(".mlp.fc2.weight", d, inner)
		per(".mlp.fc2.bias", d)
		per(".layer_norm2.weight", d)
		per(".layer_norm2.bias", d)
	}

	t := cfg.Text
	add("text_model.embeddings.token_embedding.weight", t.VocabSize, t.HiddenSize)
	add("text_model.embeddings.position_embedding.weight", t.MaxPositionEmbeddings, t.HiddenSize)
	encoder("text_model", t.NumHiddenLayers, t.HiddenSize, t.IntermediateSize)
	add("text_model.final_layer_norm.weight", t.HiddenSize)
	add("text_model.final_layer_norm.bias", t.HiddenSize)

	v := cfg.Vision
	add("vision_model.embeddings.class_embedding", v.HiddenSize)
	add("vision_model.embeddings.patch_embedding.weight", v.HiddenSize, v.NumChannels, v.PatchSize, v.PatchSize)
	add("vision_model.embeddings.position_embedding.weight", v.NumPatches()+1, v.HiddenSize)
	add("vision_model.pre_layrnorm.weight", v.HiddenSize)
	add("vision_model.pre_layrnorm.bias", v.HiddenSize)
	encoder("vision_model", v.NumHiddenLayers, v.HiddenSize, v.IntermediateSize)
	add("vision_model.post_layernorm.weight", v.HiddenSize)
	add("vision_model.post_layernorm.bias", v.HiddenSize)

	add("visual_projection.weight", cfg.ProjectionDim, v.HiddenSize)
	add("text_projection.weight", cfg.ProjectionDim, t.HiddenSize)
	add("logit_scale")
	return ps
}

// ParamShapes lists the parameters that New(cfg) creates, with their shapes, without
// allocating any tensor: the state dict's keys and shapes, which checkpoints must match.
// It lets `goclip info --config vit-l-14` count 428M parameters in microseconds, and
// a test holds it equal to New(cfg).NamedParameters(). cfg must be one that Validate
// accepts (it bounds the number of layers, and so the length of the list).
func ParamShapes(cfg Config) []ParamShape {
	// An encoder's specs are consecutive and share their name; they expand layer by
	// layer, in New's order.
	var out []ParamShape
	specs := paramSpecs(cfg)
	for i := 0; i < len(specs); {
		s := specs[i]
		if s.layers == 0 {
			out = append(out, ParamShape{s.name, s.shape})
			i++
			continue
		}
		j := i
		for j < len(specs) && specs[j].layers > 0 && specs[j].name == s.name {
			j++
		}
		for l := int64(0); l < s.layers; l++ {
			for _, q := range specs[i:j] {
				out = append(out, ParamShape{q.name + strconv.FormatInt(l, 10) + q.suffix, q.shape})
			}
		}
		i = j
	}
	return out
}

// ParamCount is the number of parameters of New(cfg), computed from the config alone
// (with checked arithmetic, allocating nothing per layer); it fails as Validate fails.
func ParamCount(cfg Config) (int64, error) {
	if err := cfg.Validate(); err != nil {
		return 0, err
	}
	return countParams(cfg)
}

// countParams sums paramSpecs, failing on an overflow of int64 (or a negative size).
func countParams(cfg Config) (int64, error) {
	var total uint64
	for _, s := range paramSpecs(cfg) {
		n := uint64(max(s.layers, 1))
		for _, d := range s.shape {
			if d < 0 {
				return 0, fmt.Errorf("parameter %s%s has a negative size %v", s.name, s.suffix, s.shape)
			}
			hi, lo := bits.Mul64(n, uint64(d))
			if hi != 0 || lo > 1<<63-1 {
				return 0, fmt.Errorf("the parameter count overflows at %s%s %v", s.name, s.suffix, s.shape)
			}
			n = lo
		}
		sum, carry := bits.Add64(total, n, 0)
		if carry != 0 || sum > 1<<63-1 {
			return 0, fmt.Errorf("the parameter count overflows at %s%s", s.name, s.suffix)
		}
		total = sum
	}
	return int64(total), nil
}

// ImageFLOPs is the model FLOPs of one image's forward pass through the vision tower
// and visual_projection: 2 per multiply-add, matrix products only (no norms,
// activations or softmax), as torch.utils.flop_counter counts them:
//
//	2·Np·(C·p²)·Dv                          patch embedding, Np = (S/p)² patches
//	+ Lv·(2·N·(4·Dv² + 2·Dv·Iv) + 4·N²·Dv)  q/k/v/out, MLP, scores and values, N = Np+1
//	+ 2·Dv·P                                visual_projection of the class token
//
// ViT-B/16: 35.13 GFLOPs.
func (c Config) ImageFLOPs() float64 {
	v := c.Vision
	np, p := float64(v.NumPatches()), float64(v.PatchSize)
	d := float64(v.HiddenSize)
	return 2*np*float64(v.NumChannels)*p*p*d +
		float64(v.NumHiddenLayers)*layerFLOPs(np+1, d, float64(v.IntermediateSize)) +
		2*d*float64(c.ProjectionDim)
}

// TextFLOPs is the model FLOPs of one caption's forward pass at tokens positions
// (0: max_position_embeddings, the full context) through the text tower and
// text_projection, counted as ImageFLOPs counts:
//
//	Lt·(2·T·(4·Dt² + 2·Dt·It) + 4·T²·Dt) + 2·Dt·P
//
// The causal mask saves nothing here: the scores are computed in full. ViT-B/16's text
// tower at 77 positions: 5.96 GFLOPs.
func (c Config) TextFLOPs(tokens int64) float64 {
	t := c.Text
	if tokens <= 0 {
		tokens = t.MaxPositionEmbeddings
	}
	d := float64(t.HiddenSize)
	return float64(t.NumHiddenLayers)*layerFLOPs(float64(tokens), d, float64(t.IntermediateSize)) +
		2*d*float64(c.ProjectionDim)
}

// layerFLOPs is one pre-LN encoder layer over n tokens of width d with MLP width inner:
// the four [d, d] attention projections and the two MLP matrices (2·n·(4d² + 2d·inner)),
// and the scores QKᵀ and their product with V (2·n²·d each).
func layerFLOPs(n, d, inner float64) float64 {
	return 2*n*(4*d*d+2*d*inner) + 4*n*n*d
}
