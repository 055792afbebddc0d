// Package clip is goclip's CLIP: the configuration (a Hugging Face config.json, and the
// named presets of the CLI), the vision and text transformers, the joint model with its
// contrastive loss, and state-dict access for checkpoints.
//
// The model is transformers' CLIPModel, written out: a ViT image tower (patch
// convolution, class token, position embedding, pre_layrnorm, pre-LN encoder,
// post_layernorm on the class token, visual_projection) and a causal text transformer
// (token and position embeddings, pre-LN encoder, final_layer_norm at the pooled
// position, text_projection). Its parameter names are exactly CLIPModel's state-dict keys,
// so HF checkpoints load and save with no mapping table; OpenAI's reference model gives
// the same outputs (see the parity tests against ../shared/fixtures/clip-tiny-openai).
//
// # Text Pooling
//
// The text embedding is read at the end token. Configs with eos_token_id 2 (OpenAI's
// legacy checkpoints) pool at argmax(input_ids), which is the end token 49407 because it
// is the largest id; other configs pool at the first position equal to eos_token_id.
//
// # Speed-ups
//
// [Speed] switches them (Model.SetSpeed). Model.TextIDs cuts a batch of ids to one past
// the last position the pooling rule reads; every caller that embeds text (training,
// evaluation, embed, bench) cuts its ids with it. nn.Attention fuses q, k and v
// into one product. Gradient checkpointing (off by default) runs the encoder layers
// without autograd in a forward that records, keeping each layer's input, the device
// generator's state and the autocast setting; after loss.Backward() has reached the
// encoder's output, Model.FinishBackward replays the layers one at a time with autograd,
// last first, and back-propagates into the embeddings. It is written in Go, not as a
// custom autograd function in the shim: libtorch has no C++ checkpoint API, and a
// replay driven from the training step needs no callback from C++ into Go; the price is
// that the step must call FinishBackward after each backward (train's step does).
//
// # Error Handling
//
// Config and state-dict functions return errors naming the offending field or key. The
// checkpoint, open_clip, hub and state-dict functions (loading, converting, saving)
// never panic: each recovers the tensor panics of its own work (a nil or freed tensor,
// a failed copy) into its error, which names the key in hand. The forward methods panic
// with *torch.Error on bad input shapes, as torch's operations do; run them inside
// torch.Try.
//
// # Memory
//
// A Model owns its parameters (created Owned, freed by Model.Free). Forward results
// belong to the caller's innermost torch.Scope; each encoder layer runs in its own scope,
// so intermediate handles are released as soon as the layer returns (under NoGrad their
// memory goes with them; under autograd, libtorch keeps what backward needs).
package clip
