package main

// goclip bench: timed training steps (or embedding passes) on random inputs already on
// the device, for bench/run.sh and for GPU sizing. No data loading, no files written.

import (
	"encoding/json"
	"fmt"

	"github.com/urfave/cli/v2"

	"goclip/clip"
	"goclip/lora"
	"goclip/torch"
	"goclip/train"
)

// The flags of goclip bench.
var (
	benchBatchSizeFlag = batchSizeFlag(32, "image-text pairs per step")
	benchStepsFlag     = &cli.IntFlag{Name: "steps", Value: 10, EnvVars: []string{"GOCLIP_BENCH_STEPS"}, Usage: "timed steps", Category: catCompute}
	benchWarmupFlag    = &cli.IntFlag{Name: "warmup", Value: 2, EnvVars: []string{"GOCLIP_BENCH_WARMUP"}, Usage: "untimed steps first", Category: catCompute}
	benchModeFlag      = &cli.StringFlag{Name: "mode", Value: train.BenchTrain, EnvVars: []string{"GOCLIP_BENCH_MODE"}, Usage: "train (full training steps) or embed (no-grad image and text embeddings)", Category: catCompute}
	captionLengthFlag  = &cli.IntFlag{Name: "caption-length", EnvVars: []string{"GOCLIP_BENCH_CAPTION_LENGTH"}, Usage: "tokens per caption, start and end included (0: random ids at every context position)", Category: catCompute}
	benchJSONFlag      = &cli.BoolFlag{Name: "json", EnvVars: []string{"GOCLIP_BENCH_JSON"}, Usage: "print the result as one JSON object", Category: catOutput}
)

var benchCommand = &cli.Command{
	Name:      "bench",
	Usage:     "time training steps (or embedding passes) on random inputs",
	ArgsUsage: " ",
	Description: `Times CLIP training steps on random inputs that are already on the device: no
data loading, no files. A step is what goclip train does per batch: forward of both
towers, the symmetric contrastive loss, backward, gradient clipping (max norm 1), AdamW
(weight decay on matrices only) and the logit-scale clamp. With --lora-r only the LoRA
matrices are trained, as in goclip finetune.

--mode embed instead times the projected embeddings of a batch of images and of a
batch of texts separately, without gradients, in evaluation mode.

Inputs: pixels from N(0, 1) of shape [B, channels, image_size, image_size]; token ids
uniform in [0, vocab_size) of shape [B, max_position_embeddings], or with
--caption-length N captions of N tokens (start, N-2 random ids, end) padded to the
context, which --trim-text (the default) cuts to N positions as training does.

Output (--json prints it as one JSON object):
   step_ms          median milliseconds per step (train) or per image+text batch (embed)
   images_per_s     batch_size / median step time
   peak_memory_mb   the CUDA caching allocator's peak over the timed steps (cuda), or the
                    process's peak resident set, VmHWM (cpu); memory_kind says which;
                    null when the statistic could not be read (memory_error says why,
                    and the timings stand)
   mfu              model FLOPs utilisation on a known GPU (H100, H200, A100), else null:
                    model FLOPs per step / step time / the GPU's dense bf16 peak

Model FLOPs (2 per multiply-add, matrix products only), per image-text pair, forward:
   vision: 2·Np·(C·p²)·Dv                     patch embedding, Np = (S/p)² patches
         + Lv·(2·N·(4·Dv² + 2·Dv·Iv) + 4·N²·Dv) q/k/v/out, MLP, scores and values, N = Np+1
         + 2·Dv·P                              visual_projection
   text:   Lt·(2·T·(4·Dt² + 2·Dt·It) + 4·T²·Dt) + 2·Dt·P    T = max_position_embeddings
                                               (--caption-length when trimmed)
(ViT-B/16: 35.13 GFLOPs image + 5.96 GFLOPs text.) A training step counts 3x forward
(backward = 2x forward); a LoRA step 2x (no weight gradients of the frozen base), the
LoRA matrices' own FLOPs not counted. The peak is dense bf16 whatever --precision is.

Examples:
   goclip bench --config tiny --batch-size 32 --steps 20 --threads 2 --json
   goclip bench --config vit-b-16 --batch-size 256 --steps 20 --precision bf16 --device cuda
   goclip bench --model openai/clip-vit-base-patch16 --lora-r 64 --lora-alpha 128 --batch-size 256 --steps 20
   goclip bench --config bench/configs/vit-b-16.json --mode embed --batch-size 32 --steps 5`,
	Flags: append([]cli.Flag{
		modelFlag, revisionFlag, configFlag, loraRFlag, loraAlphaFlag, loraTargetsFlag,
		benchBatchSizeFlag, benchStepsFlag, benchWarmupFlag, benchModeFlag, captionLengthFlag,
		seedFlag, gradCheckpointingFlag, bf16BaseFlag, benchJSONFlag,
	}, computeFlags()...),
	Action: torchAction(runBench),
}

func runBench(c *cli.Context) error {
	if c.NArg() > 0 {
		return fmt.Errorf("bench takes no arguments (got %q)", c.Args().Slice())
	}
	opts := train.BenchOptions{Mode: benchModeFlag.Get(c), BatchSize: benchBatchSizeFlag.Get(c), Steps: benchStepsFlag.Get(c),
		Warmup: benchWarmupFlag.Get(c), CaptionLength: captionLengthFlag.Get(c)}
	if err := opts.Validate(); err != nil {
		return err
	}
	dev, err := setupCompute(c)
	if err != nil {
		return err
	}
	if opts.Precision, err = precisionOf(c, dev); err != nil {
		return err
	}
	torch.ManualSeed(seedFlag.Get(c))
	cfg, src, err := modelArchitecture(c)
	if err != nil {
		return err
	}
	var m *clip.Model
	if src != nil {
		m, err = src.Load(cfg, dev, torch.Float32)
	} else {
		m, err = clip.New(cfg, dev)
	}
	if err != nil {
		return err
	}
	defer m.Free()
	m.SetSpeed(speedOf(c))
	if opts.LoRA = loraRFlag.Get(c) != 0 || c.IsSet(loraTargetsFlag.Name); opts.LoRA {
		lc, err := loraConfig(c, loraRFlag.Get(c))
		if err != nil {
			return err
		}
		a, err := lora.Inject(m, lc)
		if err != nil {
			return err
		}
		opts.Trainable = a.Trainable()
		if opts.Precision == clip.BF16 && bf16BaseFlag.Get(c) { // as finetune's steps run
			lb, err := lora.KeepBaseIn(m, torch.BFloat16)
			if err != nil {
				return err
			}
			defer lb.Free()
		}
	}
	res, err := train.Bench(m, opts)
	if err != nil {
		return err
	}
	if res.MemoryError != "" {
		fmt.Fprintf(c.App.ErrWriter, "goclip bench: peak memory unavailable: %s\n", res.MemoryError)
	}
	if benchJSONFlag.Get(c) {
		return json.NewEncoder(c.App.Writer).Encode(res)
	}
	_, err = fmt.Fprintln(c.App.Writer, res)
	return err
}
