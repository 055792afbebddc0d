package clip

import "fmt"

// ParamShape is one parameter of a CLIP model, by Hugging Face key, and its shape.
type ParamShape struct {
	Name  string
	Shape []int64
}

// Numel is the number of elements of the parameter.
func (p ParamShape) Numel() int64 {
	n := int64(1)
	for _, d := range p.Shape {
		n *= d
	}
	return n
}

// ParamShapes lists the parameters that New(cfg) creates, with their shapes, without
// allocating any tensor: the state dict's keys and shapes, which checkpoints must match.
// It lets `goclip info --config vit-l-14` count 428M parameters in microseconds, and
// a test holds it equal to New(cfg).NamedParameters().
func ParamShapes(cfg Config) []ParamShape {
	var ps []ParamShape
	add := func(name string, shape ...int64) { ps = append(ps, ParamShape{name, shape}) }
	layerNorm := func(prefix string, d int64) {
		add(prefix+".weight", d)
		add(prefix+".bias", d)
	}
	linear := func(prefix string, in, out int64) {
		add(prefix+".weight", out, in)
		add(prefix+".bias", out)
	}
	encoder := func(prefix string, layers, d, inner int64) {
		for i := int64(0); i < layers; i++ {
			l := fmt.Sprintf("%s.encoder.layers.%d", prefix, i)
			for _, proj := range []string{"k_proj", "v_proj", "q_proj", "out_proj"} {
				linear(l+".self_attn."+proj, d, d)
			}
			layerNorm(l+".layer_norm1", d)
			linear(l+".mlp.fc1", d, inner)
			linear(l+".mlp.fc2", inner, d)
			layerNorm(l+".layer_norm2", d)
		}
	}

	t := cfg.Text
	add("text_model.embeddings.token_embedding.weight", t.VocabSize, t.HiddenSize)
	add("text_model.embeddings.position_embedding.weight", t.MaxPositionEmbeddings, t.HiddenSize)
	encoder("text_model", t.NumHiddenLayers, t.HiddenSize, t.IntermediateSize)
	layerNorm("text_model.final_layer_norm", t.HiddenSize)

	v := cfg.Vision
	add("vision_model.embeddings.class_embedding", v.HiddenSize)
	add("vision_model.embeddings.patch_embedding.weight", v.HiddenSize, v.NumChannels, v.PatchSize, v.PatchSize)
	add("vision_model.embeddings.position_embedding.weight", v.NumPatches()+1, v.HiddenSize)
	layerNorm("vision_model.pre_layrnorm", v.HiddenSize)
	encoder("vision_model", v.NumHiddenLayers, v.HiddenSize, v.IntermediateSize)
	layerNorm("vision_model.post_layernorm", v.HiddenSize)

	add("visual_projection.weight", cfg.ProjectionDim, v.HiddenSize)
	add("text_projection.weight", cfg.ProjectionDim, t.HiddenSize)
	add("logit_scale")
	return ps
}

// ParamCount is the number of parameters of New(cfg), computed from the config alone.
func ParamCount(cfg Config) int64 {
	var n int64
	for _, p := range ParamShapes(cfg) {
		n += p.Numel()
	}
	return n
}
