package train

import (
	"testing"
)

func TestWeightDecayGroups(t *testing.T) {
	f := synthData(t, 120, "base")
	m := newModel(t, microConfig(t, f.tok), 1)
	decay, noDecay, err := ParamGroups(m.NamedParameters())
	if err != nil {
		t.Fatal(err)
	}
	in := func(list []string, name string) bool {
		for _, n := range list {
			if n == name {
				return true
			}
		}
		return false
	}
	var d, nd []string
	for _, p := range decay {
		d = append(d, p.Name)
	}
	for _, p := range noDecay {
		nd = append(nd, p.Name)
	}
	for _, name := range []string{
		"vision_model.encoder.layers.0.self_attn.q_proj.weight", "text_model.encoder.layers.0.mlp.fc1.weight",
		"visual_projection.weight", "text_projection.weight", "vision_model.embeddings.patch_embedding.weight",
	} {
		if !in(d, name) {
			t.Errorf("%s should decay", name)
		}
	}
	for _, name := range []string{
		"logit_scale", "vision_model.embeddings.class_embedding", "vision_model.embeddings.position_embedding.weight",
		"text_model.embeddings.token_embedding.weight", "text_model.embeddings.position_embedding.weight",
		"vision_model.pre_layrnorm.weight", "vision_model.encoder.layers.0.layer_norm1.weight",
		"text_model.final_layer_norm.weight", "text_model.encoder.layers.0.self_attn.q_proj.bias",
		"vision_model.post_layernorm.bias",
	} {
		if !in(nd, name) {
			t.Errorf("%s should not decay", name)
		}
	}
	if len(d)+len(nd) != len(m.NamedParameters()) {
		t.Errorf("groups hold %d+%d parameters, the model %d", len(d), len(nd), len(m.NamedParameters()))
	}
	// The optimizer gets the decay only on the first group.
	tr, err := newTrainer(Job{Model: m}, Options{WeightDecay: 0.2})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.free()
	if tr.opt.Groups[0].WeightDecay != 0.2 || tr.opt.Groups[1].WeightDecay != 0 || len(tr.opt.Groups[0].Params) != len(d) {
		t.Fatalf("optimizer groups: decay %g/%g, %d params", tr.opt.Groups[0].WeightDecay, tr.opt.Groups[1].WeightDecay, len(tr.opt.Groups[0].Params))
	}
}
