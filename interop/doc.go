// Package interop holds goclip's interoperability tests: goclip's files and numbers
// checked against the real Python libraries that users hold them against, in the
// project's environment (build/venv: torch, transformers, peft, open_clip; see
// testutil.PythonTorch), on the CPU, with nothing downloaded.
//
//   - transformers: a randomly initialised CLIPModel written with save_pretrained (with
//     its CLIPProcessor) gives in `goclip embed` and `goclip eval`, and in the clip
//     package's forward pass, the embeddings, logits, loss and recall that transformers
//     computes with CLIPProcessor on the same images and captions;
//   - goclip's exported model/ folder and model.pt load in transformers
//     (CLIPModel.from_pretrained, CLIPProcessor.from_pretrained, torch.load and
//     load_state_dict(strict=True)) and give goclip's embeddings;
//   - peft: adapters made by get_peft_model and save_pretrained give in goclip what
//     PeftModel gives, goclip's adapters load in PeftModel.from_pretrained, and peft's
//     merge_and_unload equals `goclip convert --adapter --merge`;
//   - tokenizer and preprocessing: transformers' CLIPTokenizer and open_clip's
//     SimpleTokenizer give goclip's ids; CLIPImageProcessor (PIL and torchvision
//     backends) gives goclip's pixels.
//
// The package has no non-test code besides this file. The tests build bin/goclip into
// a temporary folder and run it, or call goclip's packages; the reference side is
// testdata/clipref.py. Each comparison states its tolerance, and checks that an output
// off by more than that would fail.
//
// A test whose Python environment or fixtures are missing is skipped with a message,
// and fails under CI=true (see package testutil).
package interop
