package main

// Flags shared by several commands, and the helpers that turn them into settings. Every
// command takes its common flags from here, so that --device, --threads, --precision,
// --batch-size, --workers, --seed and the --lora-* flags mean the same thing, with the
// same defaults and GOCLIP_* environment variables, everywhere.
//
// How flags are named and read: each flag is one package-level variable (these, or a
// command's own beside its command), put in the commands' Flags and read through that
// variable, typed by its kind: seedFlag.Get(c) is a uint64, c.IsSet(seedFlag.Name)
// whether it was given. A flag whose default differs between commands is one
// constructor with each command's flag a variable of its own (--batch-size, --lora-r),
// or one variable that commands copy with their default (intDefault: --epochs). No flag
// is read by a string literal (c.Int("steps") is 0 for a misspelt name, silently);
// TestFlagsReadByVariable holds the files to that.

import (
	"errors"
	"fmt"
	"runtime"
	"strings"

	"github.com/urfave/cli/v2"

	"goclip/clip"
	"goclip/lora"
	"goclip/torch"
	"goclip/train"
)

// Categories group flags in --help.
const (
	catCompute = "COMPUTE"
	catModel   = "MODEL"
	catLoRA    = "LORA"
	catOutput  = "OUTPUT"
)

var (
	deviceFlag = &cli.StringFlag{
		Name:     "device",
		Usage:    "where tensors live: cpu, cuda or cuda:N (default: cuda when available, else cpu)",
		EnvVars:  []string{"GOCLIP_DEVICE"},
		Category: catCompute,
	}
	threadsFlag = &cli.IntFlag{
		Name:     "threads",
		Usage:    "intra-op CPU threads for libtorch",
		Value:    runtime.NumCPU(),
		EnvVars:  []string{"GOCLIP_THREADS"},
		Category: catCompute,
	}
	precisionFlag = &cli.StringFlag{
		Name:     "precision",
		Usage:    "fp32, or bf16/fp16 autocast (mixed precision; weights stay float32); default bf16 on CUDA, fp32 on the CPU",
		EnvVars:  []string{"GOCLIP_PRECISION"},
		Category: catCompute,
	}
	workersFlag = &cli.IntFlag{
		Name:     "workers",
		Usage:    "goroutines that decode and preprocess images",
		Value:    runtime.NumCPU(),
		EnvVars:  []string{"GOCLIP_WORKERS"},
		Category: catCompute,
	}
	seedFlag = &cli.Uint64Flag{
		Name:     "seed",
		Usage:    "random seed (initialisation, shuffling, augmentation)",
		Value:    0,
		EnvVars:  []string{"GOCLIP_SEED"},
		Category: catCompute,
	}
	modelFlag = &cli.PathFlag{
		Name: "model",
		Usage: "a Hugging Face CLIP folder (config.json + model.safetensors, sharded " +
			"model.safetensors.index.json or pytorch_model.bin), a goclip run folder, or a Hugging Face " +
			"model id (openai/clip-vit-base-patch16) in the local Hub cache ($HF_HUB_CACHE, $HF_HOME/hub, " +
			"~/.cache/huggingface/hub; nothing is downloaded)",
		EnvVars:  []string{"GOCLIP_MODEL"},
		Category: catModel,
	}
)

// The architecture and LoRA flags of info, bench, train and finetune.
var (
	configFlag = &cli.StringFlag{
		Name: "config",
		Usage: "an architecture: a preset (" + strings.Join(clip.PresetNames(), ", ") +
			") or the path of an HF config.json",
		EnvVars:  []string{"GOCLIP_CONFIG"},
		Category: catModel,
	}
	// loraRFlag is --lora-r of info and bench, where 0 (the default) means no LoRA;
	// finetuneLoRARFlag is finetune's, 64 unless given.
	loraRFlag         = loraRankFlag(0, "LoRA rank (0: no LoRA)")
	finetuneLoRARFlag = loraRankFlag(64, "LoRA rank")
	loraAlphaFlag     = &cli.Float64Flag{
		Name:     "lora-alpha",
		Usage:    "LoRA alpha (the update is scaled by alpha/r; it does not change the counts)",
		Value:    128,
		EnvVars:  []string{"GOCLIP_LORA_ALPHA"},
		Category: catLoRA,
	}
	loraDropoutFlag = &cli.Float64Flag{
		Name:     "lora-dropout",
		Usage:    "dropout on the adapters' input, in training",
		EnvVars:  []string{"GOCLIP_LORA_DROPOUT"},
		Category: catLoRA,
	}
	loraTargetsFlag = &cli.StringFlag{
		Name:     "lora-targets",
		Usage:    "linear layers to adapt, in peft's forms: module names, comma-separated, each matching the modules it names or ends (q_proj, k_proj, v_proj, out_proj, fc1, fc2, visual_projection, text_projection); all-linear for all of them; or a regular expression the whole module name must match ('.*vision_model.*\\.(q_proj|v_proj)')",
		Value:    "q_proj,k_proj,v_proj",
		EnvVars:  []string{"GOCLIP_LORA_TARGETS"},
		Category: catLoRA,
	}
)

// loraRankFlag is --lora-r with a command's own default.
func loraRankFlag(def int, usage string) *cli.IntFlag {
	return &cli.IntFlag{
		Name:     "lora-r",
		Usage:    usage,
		Value:    def,
		EnvVars:  []string{"GOCLIP_LORA_R"},
		Category: catLoRA,
	}
}

// intDefault is f with the command's own default v: the same flag (name, environment
// variable, usage), read through f.
func intDefault(f *cli.IntFlag, v int) *cli.IntFlag {
	g := *f
	g.Value = v
	return &g
}

// float64Default is intDefault for a float flag.
func float64Default(f *cli.Float64Flag, v float64) *cli.Float64Flag {
	g := *f
	g.Value = v
	return &g
}

// batchSizeFlag is --batch-size with a command's own default.
func batchSizeFlag(def int, usage string) *cli.IntFlag {
	return &cli.IntFlag{
		Name:     "batch-size",
		Usage:    usage,
		Value:    def,
		EnvVars:  []string{"GOCLIP_BATCH_SIZE"},
		Category: catCompute,
	}
}

// The speed-up switches (clip.Speed): on by default where exact, off to compare.
var (
	trimTextFlag = &cli.BoolFlag{
		Name:     "trim-text",
		Usage:    "run the text tower at each batch's longest caption instead of the full context (exact; =false to compare)",
		Value:    true,
		EnvVars:  []string{"GOCLIP_TRIM_TEXT"},
		Category: catCompute,
	}
	fusedQKVFlag = &cli.BoolFlag{
		Name:     "fused-qkv",
		Usage:    "one [3D, D] product for attention's q, k and v instead of three (exact; =false to compare)",
		Value:    true,
		EnvVars:  []string{"GOCLIP_FUSED_QKV"},
		Category: catCompute,
	}
	gradCheckpointingFlag = &cli.BoolFlag{
		Name:     "grad-checkpointing",
		Usage:    "recompute the encoder layers in backward instead of keeping their activations (less memory, more time)",
		EnvVars:  []string{"GOCLIP_GRAD_CHECKPOINTING"},
		Category: catCompute,
	}
)

// computeFlags are the flags every command that runs a model takes.
func computeFlags() []cli.Flag {
	return []cli.Flag{deviceFlag, threadsFlag, precisionFlag, trimTextFlag, fusedQKVFlag}
}

// speedOf reads the speed-up switches; --grad-checkpointing counts only for the
// commands that take it (training and bench).
func speedOf(c *cli.Context) clip.Speed {
	return clip.Speed{
		FullText:          !trimTextFlag.Get(c),
		SeparateQKV:       !fusedQKVFlag.Get(c),
		GradCheckpointing: gradCheckpointingFlag.Get(c),
	}
}

// setupCompute applies --threads and returns the device of --device, checked to exist.
func setupCompute(c *cli.Context) (torch.Device, error) {
	if n := threadsFlag.Get(c); n > 0 {
		if err := torch.SetThreads(n); err != nil {
			return torch.Device{}, fmt.Errorf("--threads %d: %w", n, err)
		}
	} else if c.IsSet(threadsFlag.Name) {
		return torch.Device{}, fmt.Errorf("--threads must be at least 1, got %d", n)
	}
	return parseDevice(deviceFlag.Get(c))
}

// parseDevice reads a --device value; empty means the default device.
func parseDevice(s string) (torch.Device, error) {
	if strings.TrimSpace(s) == "" {
		return torch.DefaultDevice(), nil
	}
	dev, err := torch.ParseDevice(s)
	if err != nil {
		return torch.Device{}, fmt.Errorf("--device: %w", err)
	}
	if err := torch.CheckDevice(dev); err != nil {
		return torch.Device{}, fmt.Errorf("--device: %w", err)
	}
	return dev, nil
}

// precisionOf reads --precision; unset, it is the device's default (bf16 on CUDA, fp32
// on the CPU).
func precisionOf(c *cli.Context, dev torch.Device) (clip.Precision, error) {
	p, err := clip.ParsePrecision(precisionFlag.Get(c), dev)
	if err != nil {
		return "", fmt.Errorf("--precision: %w", err)
	}
	if p == clip.BF16 && dev.Type == torch.CPUDevice {
		fmt.Fprintln(c.App.ErrWriter, "warning: --precision bf16 on the CPU is emulated and several times slower than fp32 (use fp32 on the CPU)")
	}
	return p, nil
}

// parseDType reads a --dtype value for files (torch.ParseDType's names): float32 (also
// when empty), float16 or bfloat16.
func parseDType(s string) (torch.DType, error) {
	name := strings.TrimSpace(s)
	if name == "" {
		return torch.Float32, nil
	}
	d, err := torch.ParseDType(name)
	if err != nil || (d != torch.Float32 && d != torch.Float16 && d != torch.BFloat16) {
		return 0, fmt.Errorf("--dtype %q: want float32, float16 or bfloat16", s)
	}
	return d, nil
}

// torchAction wraps a command action so that a tensor operation's panic (a *torch.Error,
// see package torch) comes back as the action's error instead of killing the process.
func torchAction(f cli.ActionFunc) cli.ActionFunc {
	return func(c *cli.Context) error {
		var err error
		if terr := torch.Try(func() { err = f(c) }); terr != nil {
			return terr
		}
		return err
	}
}

// splitList splits a comma-separated flag value, dropping empty items and spaces.
func splitList(s string) []string {
	var out []string
	for _, part := range strings.Split(s, ",") {
		if part = strings.TrimSpace(part); part != "" {
			out = append(out, part)
		}
	}
	return out
}

// regexMeta are the characters that make a --lora-targets value a regular expression
// ("." alone does not: self_attn.q_proj is a module path).
const regexMeta = `*+?[](){}|^$\`

// loraTargets reads --lora-targets in peft's forms: "all-linear" (every linear layer),
// a regular expression that the whole module name must match (peft's target_modules
// given as a string, e.g. '.*vision_model.*\.(q_proj|v_proj)'), or a comma-separated
// list of module names, each matching the modules whose name is it or ends with
// "." + it.
func loraTargets(s string) (targets []string, regex string) {
	s = strings.TrimSpace(s)
	switch {
	case s == lora.AllLinear:
		return []string{lora.AllLinear}, ""
	case strings.ContainsAny(s, regexMeta):
		return nil, s
	}
	return splitList(s), ""
}

// loraConfig is the LoRA config of the command's --lora-* flags with rank r, its towers
// those of --lora-towers less the ones --lock-image and --lock-text lock.
func loraConfig(c *cli.Context, r int) (lora.Config, error) {
	targets, regex := loraTargets(loraTargetsFlag.Get(c))
	towers, err := loraTowers(c)
	return lora.Config{R: r, Alpha: loraAlphaFlag.Get(c), Dropout: loraDropoutFlag.Get(c),
		Targets: targets, TargetRegex: regex, Towers: towers}, err
}

// Tower locks and LoRA's towers (train.Lock; lora.Config.Towers).
var (
	lockImageFlag = &cli.BoolFlag{Name: "lock-image", Usage: "freeze the image tower (vision_model, visual_projection) as LiT does: no gradients, no optimizer state, evaluation mode; with LoRA, no adapters in it",
		EnvVars: []string{"GOCLIP_LOCK_IMAGE"}, Category: catTrain}
	lockTextFlag = &cli.BoolFlag{Name: "lock-text", Usage: "freeze the text tower (text_model, text_projection), as --lock-image does the image tower",
		EnvVars: []string{"GOCLIP_LOCK_TEXT"}, Category: catTrain}
	lockUnlockedFlag = &cli.IntFlag{Name: "lock-image-unlocked-layers", Usage: "with --lock-image, the image tower's last `N` encoder layers (and post_layernorm, visual_projection) still train (open_clip's --lock-image-unlocked-groups)",
		EnvVars: []string{"GOCLIP_LOCK_IMAGE_UNLOCKED_LAYERS"}, Category: catTrain}
	loraTowersFlag = &cli.StringFlag{Name: "lora-towers", Usage: "the towers that get LoRA adapters: vision, text, or vision,text (both)", Value: "vision,text",
		EnvVars: []string{"GOCLIP_LORA_TOWERS"}, Category: catLoRA}
)

// lockOf is the command's tower lock.
func lockOf(c *cli.Context) train.Lock {
	return train.Lock{Image: lockImageFlag.Get(c), Text: lockTextFlag.Get(c), ImageUnlockedLayers: lockUnlockedFlag.Get(c)}
}

// loraTowers are the towers LoRA goes into: --lora-towers, less the locked ones.
func loraTowers(c *cli.Context) ([]string, error) {
	given := splitList(loraTowersFlag.Get(c))
	if len(given) == 0 {
		given = []string{lora.TowerVision, lora.TowerText}
	}
	for _, t := range given {
		if t != lora.TowerVision && t != lora.TowerText {
			return nil, fmt.Errorf("--lora-towers %s: unknown tower %q (want vision, text or vision,text)", loraTowersFlag.Get(c), t)
		}
	}
	l := lockOf(c)
	if l.ImageUnlockedLayers > 0 {
		return nil, fmt.Errorf("--lock-image-unlocked-layers %d applies to full training; with LoRA choose the adapted layers with --lora-targets", l.ImageUnlockedLayers)
	}
	var towers []string
	for _, t := range given {
		if (t == lora.TowerVision && l.Image) || (t == lora.TowerText && l.Text) {
			if c.IsSet(loraTowersFlag.Name) {
				return nil, fmt.Errorf("--lora-towers %s includes the %s tower that --lock-%s locks", loraTowersFlag.Get(c), t, map[string]string{lora.TowerVision: "image", lora.TowerText: "text"}[t])
			}
			continue
		}
		towers = append(towers, t)
	}
	if len(towers) == 0 {
		return nil, errors.New("--lock-image and --lock-text leave no tower for LoRA adapters")
	}
	return towers, nil
}
