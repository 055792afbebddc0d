// Package lora is goclip's LoRA: low-rank adapters on the linear layers of a CLIP model
// (part 2 of the study fine-tunes openai/clip-vit-base-patch16 with r=64, alpha=128 on
// q_proj, k_proj and v_proj of both towers), with peft's semantics and file format.
//
// A [Linear] wraps a model's *nn.Linear and adds a low-rank update to its output:
//
//	y = base(x) + scaling * B(A(dropout(x)))      scaling = alpha / r (alpha / sqrt(r) with rsLoRA)
//
// with lora_A [r, in] drawn as peft draws it (Kaiming-uniform with a = sqrt(5), that is
// U(-1/sqrt(in), 1/sqrt(in))) and lora_B [out, r] zero, so that a freshly injected model
// computes exactly what the base model computes.
//
// [Inject] puts such a layer into every projection slot of a clip.Model whose Hugging
// Face module name the [Config] selects (target names matched as peft matches
// target_modules, optionally restricted to a tower and to layer indices), freezes every
// base parameter and returns an [Adapter]: the trainable tensors, merge and unmerge, the
// merged state dict, and peft's adapter files (Save, [Load]).
//
// # Parameter Names
//
// A LoRA layer in slot S lists S.weight and S.bias (the base layer's, unchanged), then
// S.lora_A.weight and S.lora_B.weight: peft's names without the "base_model.model."
// prefix and the adapter name. The adapter file (adapter_model.safetensors) uses peft's
// full names, "base_model.model." + S + ".lora_A.weight"; modules saved whole
// (modules_to_save: visual_projection, text_projection, logit_scale) are stored under
// "base_model.model." + their HF key, as peft's get_peft_model_state_dict writes them.
//
// # Counting
//
// [CountConfig] computes peft's numbers (all params, trainable params) from a clip.Config
// alone, without allocating; after Inject, nn.Count over the model's NamedParameters
// gives the same numbers ([Adapter.Counts]); [FormatCounts] prints peft's line
//
//	trainable params: 5,898,240 || all params: 155,518,977 || trainable%: 3.7926
//
// # Error Handling
//
// Outside the layer's tensor code (NewLinear and Linear's methods), every exported
// function that can fail returns an error instead of panicking: configuration,
// injection, merging, counting, fingerprints and files recover the tensor panics of
// their own work (a nil model, a freed tensor, a failed copy) into an error naming the
// module, parameter or key in hand. NewLinear and Linear's methods panic with
// *torch.Error on a bad shape, as nn's modules do; run them inside torch.Try.
//
// # Memory
//
// lora_A and lora_B are created Owned, beside the base weight (same device and dtype),
// and belong to the model from then on: Model.Free frees them through the slot.
// Adapter.Unload and Adapter.MergeAndUnload free them at once and put the base layers
// back. Forward results belong to the caller's innermost torch.Scope.
package lora
