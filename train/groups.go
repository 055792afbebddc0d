package train

import (
	"fmt"
	"strings"

	"goclip/nn"
	"goclip/torch"
)

// noDecaySuffixes name the 2-D parameters that are embeddings, not weight matrices.
var noDecaySuffixes = []string{"position_embedding.weight", "token_embedding.weight", "class_embedding"}

// decays reports whether weight decay applies to the parameter name of dims
// dimensions: to weight matrices (linear layers, the patch convolution, LoRA's A and B),
// not to biases, LayerNorm weights, embeddings (class, position, token) or logit_scale.
func decays(name string, dims int) bool {
	if dims < 2 || name == "logit_scale" || strings.HasSuffix(name, ".bias") {
		return false
	}
	for _, s := range noDecaySuffixes {
		if strings.HasSuffix(name, s) {
			return false
		}
	}
	return true
}

// ParamGroups splits the trainable parameters (those that require grad) into the group
// with weight decay (weight matrices: linear layers, the patch convolution, LoRA's A and
// B) and the group without (biases, LayerNorm weights, embeddings, logit_scale), in list
// order. A parameter whose tensor is nil or freed is an error naming it.
func ParamGroups(params []nn.Named) (decay, noDecay []nn.Named, err error) {
	for _, p := range params {
		var grad bool
		var dims int
		if err := torch.Try(func() { grad, dims = p.T.RequiresGrad(), p.T.Dim() }); err != nil {
			return nil, nil, fmt.Errorf("train: parameter groups: %s: %w", p.Name, err)
		}
		if !grad {
			continue
		}
		if decays(p.Name, dims) {
			decay = append(decay, p)
		} else {
			noDecay = append(noDecay, p)
		}
	}
	return decay, noDecay, nil
}
