// Package nn holds goclip's neural-network modules, built on package torch: Linear,
// LayerNorm, Embedding, Conv2d (patch embedding), multi-head Attention and the MLP of a
// transformer block, plus the named parameter tree that checkpoints, optimizers, LoRA and
// `goclip info` walk.
//
// Modules are plain structs whose exported fields are their parameters and sub-modules;
// they can be built by the New* constructors (parameters drawn from N(0, std²)) or as
// struct literals from existing tensors (tests do, in float64).
//
// # Parameter Names
//
// Every module has NamedParameters(prefix), which lists its parameters as
// prefix + "." + name in a fixed order (the order of the fields), with the names Hugging
// Face's transformers uses (weight, bias, q_proj, ...). A model's list is therefore its
// state dict's key set, and [Count] sums it.
//
// # Projections and LoRA
//
// The linear layers of Attention (q_proj, k_proj, v_proj, out_proj) and of MLP (fc1, fc2)
// are fields of the interface type [Projection], which *Linear implements. A LoRA layer
// that implements Projection can replace one in place: a model lists its projection slots
// by full name as [Slot] values (see clip.Model.Projections), and `*slot.Ptr = lora`
// swaps the layer. Slots hold pointers to the fields, so a swap is seen by Forward,
// NamedParameters and Free at once.
//
// # Error Handling
//
// Forward methods panic with *torch.Error on a bad shape, as torch's operations do;
// callers run them inside torch.Try (the training step and CLI actions do).
//
// # Memory
//
// Parameters are long-lived: they are created Owned (no scope frees them) with
// requires_grad set, and a module's Free releases them (idempotent). Forward results and
// intermediates belong to the innermost open torch.Scope of the caller.
package nn

import "goclip/torch"

// Named is one parameter and its full name, e.g. "text_model.final_layer_norm.bias".
type Named struct {
	Name string
	T    *torch.Tensor
}

// Count sums the elements of params: all of them (total) and those that require grad
// (trainable). It is the one parameter count of goclip (`goclip info`, LoRA, logs).
func Count(params []Named) (total, trainable int64) {
	for _, p := range params {
		n := p.T.Numel()
		total += n
		if p.T.RequiresGrad() {
			trainable += n
		}
	}
	return total, trainable
}

// Join appends name to a dotted prefix ("" + "weight" is "weight").
func Join(prefix, name string) string {
	if prefix == "" {
		return name
	}
	return prefix + "." + name
}

// Normal is a new parameter of the given shape drawn from N(0, std²) (float32, Owned,
// requires_grad). std 0 gives zeros.
func Normal(shape []int64, std float64, dev torch.Device) *torch.Tensor {
	t := torch.Zeros(shape, torch.Float32, dev).Owned()
	if std > 0 {
		t.NormalInPlace(0, std)
	}
	return t.SetRequiresGrad(true)
}

// Constant is a new parameter filled with v (float32, Owned, requires_grad).
func Constant(shape []int64, v float64, dev torch.Device) *torch.Tensor {
	return torch.Full(shape, v, torch.Float32, dev).Owned().SetRequiresGrad(true)
}

// FreeAll frees every parameter of a list (idempotent, as Tensor.Free is).
func FreeAll(params []Named) {
	for _, p := range params {
		p.T.Free()
	}
}

// Projection is a linear map x -> y on the last dimension that can stand in a model's
// projection slot: *Linear, or a LoRA layer wrapping one.
type Projection interface {
	// Forward maps [..., in] to [..., out].
	Forward(x *torch.Tensor) *torch.Tensor
	// NamedParameters lists the parameters under prefix (the slot's full name); for a
	// *Linear, prefix.weight and prefix.bias.
	NamedParameters(prefix string) []Named
	// Base is the plain linear layer underneath (the layer itself for a *Linear).
	Base() *Linear
	// Free releases the parameters (idempotent).
	Free()
}

// Trainer is implemented by modules with a train/eval mode (dropout). Containers call it
// on their projections when they implement it, so a LoRA layer with dropout follows the
// model's mode.
type Trainer interface {
	SetTrain(train bool)
}

// Slot is one projection field of a model, named by its full Hugging Face module name
// ("vision_model.encoder.layers.0.self_attn.q_proj"). Ptr points at the field itself:
// read *Ptr to get the layer, assign *Ptr to replace it.
type Slot struct {
	Name string
	Ptr  *Projection
}
