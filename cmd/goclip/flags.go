package main

// Flags shared by several commands, and the helpers that turn them into settings. Every
// command takes its common flags from here, so that --device, --threads, --precision,
// --batch-size, --workers and --seed mean the same thing, with the same defaults and
// GOCLIP_* environment variables, everywhere.

import (
	"fmt"
	"runtime"
	"strings"

	"github.com/urfave/cli/v2"

	"goclip/torch"
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
		Usage:    "fp32, or bf16/fp16 autocast (mixed precision; weights stay float32)",
		Value:    "fp32",
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
			"model.safetensors.index.json or pytorch_model.bin) or a goclip run folder",
		EnvVars:  []string{"GOCLIP_MODEL"},
		Category: catModel,
	}
)

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

// computeFlags are the flags every command that runs a model takes.
func computeFlags() []cli.Flag {
	return []cli.Flag{deviceFlag, threadsFlag, precisionFlag}
}

// setupCompute applies --threads and returns the device of --device, checked to exist.
func setupCompute(c *cli.Context) (torch.Device, error) {
	if n := c.Int(threadsFlag.Name); n > 0 {
		if err := torch.SetThreads(n); err != nil {
			return torch.Device{}, fmt.Errorf("--threads %d: %w", n, err)
		}
	} else if c.IsSet(threadsFlag.Name) {
		return torch.Device{}, fmt.Errorf("--threads must be at least 1, got %d", n)
	}
	return parseDevice(c.String(deviceFlag.Name))
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

// precision is a parsed --precision: full float32, or autocast to a half type.
type precision struct {
	name     string
	autocast bool
	dtype    torch.DType // the autocast dtype when autocast
}

// parsePrecision reads a --precision value.
func parsePrecision(s string) (precision, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "fp32", "float32", "":
		return precision{name: "fp32", dtype: torch.Float32}, nil
	case "bf16", "bfloat16":
		return precision{name: "bf16", autocast: true, dtype: torch.BFloat16}, nil
	case "fp16", "float16":
		return precision{name: "fp16", autocast: true, dtype: torch.Float16}, nil
	}
	return precision{}, fmt.Errorf("--precision %q: want fp32, bf16 or fp16", s)
}

// run runs f on dev, under autocast when p asks for it.
func (p precision) run(dev torch.Device, f func()) {
	if p.autocast {
		torch.Autocast(dev, p.dtype, f)
		return
	}
	f()
}

// parseDType reads a --dtype value for files: float32, float16 or bfloat16.
func parseDType(s string) (torch.DType, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "float32", "fp32", "f32", "":
		return torch.Float32, nil
	case "float16", "fp16", "f16", "half":
		return torch.Float16, nil
	case "bfloat16", "bf16":
		return torch.BFloat16, nil
	}
	return 0, fmt.Errorf("--dtype %q: want float32, float16 or bfloat16", s)
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

// checkArgs rejects a flag given after the positional arguments, which the CLI library
// would otherwise take for an argument (flags must come first: goclip convert --dtype
// float16 SRC DST).
func checkArgs(c *cli.Context) error {
	for _, a := range c.Args().Slice() {
		if len(a) > 1 && strings.HasPrefix(a, "-") && a != "--" {
			return fmt.Errorf("%q comes after the arguments: put flags before them (goclip %s [flags] %s)",
				a, c.Command.Name, c.Command.ArgsUsage)
		}
	}
	return nil
}
