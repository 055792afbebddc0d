package train

import (
	"strings"

	"goclip/nn"
)

// noDecaySuffixes name the 2-D parameters that are embeddings, not weight matrices.
var noDecaySuffixes = []string{"position_embedding.weight", "token_embedding.weight", "class_embedding"}

// Decays reports whether weight decay applies to a parameter: to weight matrices
// (linear layers, the patch convolution, LoRA's A and B), not to biases, LayerNorm
// weights, embeddings (class, position, token) or logit_scale.
func Decays(p nn.Named) bool {
	if p.T.Dim() < 2 || p.Name == "logit_scale" || strings.HasSuffix(p.Name, ".bias") {
		return false
	}
	for _, s := range noDecaySuffixes {
		if strings.HasSuffix(p.Name, s) {
			return false
		}
	}
	return true
}

// ParamGroups splits the trainable parameters (those that require grad) into the group
// with weight decay and the group without, in list order.
func ParamGroups(params []nn.Named) (decay, noDecay []nn.Named) {
	for _, p := range params {
		if !p.T.RequiresGrad() {
			continue
		}
		if Decays(p) {
			decay = append(decay, p)
		} else {
			noDecay = append(noDecay, p)
		}
	}
	return decay, noDecay
}
