package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/urfave/cli/v2"

	"goclip/clip"
	"goclip/lora"
)

// infoJSONFlag is info's --json.
var infoJSONFlag = &cli.BoolFlag{Name: "json", EnvVars: []string{"GOCLIP_INFO_JSON"}, Usage: `print {"total":..,"trainable":..,"trainable_percent":..}`, Category: catOutput}

var infoCommand = &cli.Command{
	Name:      "info",
	Usage:     "count a model's parameters, with or without LoRA adapters",
	ArgsUsage: " ",
	Description: `Counts the parameters of a CLIP model, from its config alone (no weights are
read or allocated), and prints them as peft's print_trainable_parameters does:

   trainable params: 5,898,240 || all params: 155,518,977 || trainable%: 3.7926

Without --lora-r every parameter is trainable. With --lora-r R, LoRA matrices A (R x in)
and B (out x R) are added to every linear layer named by --lora-targets, in both towers,
and only they are trainable.

Examples:
   goclip info --config vit-b-16
   goclip info --config vit-b-16 --lora-r 64 --lora-alpha 128 --lora-targets q_proj,k_proj,v_proj
   goclip info --model openai/clip-vit-base-patch16 --json`,
	Flags: []cli.Flag{
		modelFlag, revisionFlag, configFlag, loraRFlag, loraAlphaFlag, loraTargetsFlag, loraTowersFlag,
		lockImageFlag, lockTextFlag, lockUnlockedFlag, infoJSONFlag,
	},
	Action: torchAction(runInfo),
}

// paramCounts is what `goclip info --json` prints.
type paramCounts struct {
	Total            int64   `json:"total"`
	Trainable        int64   `json:"trainable"`
	TrainablePercent float64 `json:"trainable_percent"`
}

func runInfo(c *cli.Context) error {
	if c.NArg() > 0 {
		return fmt.Errorf("info takes no arguments (got %q); use --model DIR or --config NAME", c.Args().Slice())
	}
	cfg, _, err := modelArchitecture(c)
	if err != nil {
		return err
	}
	var counts paramCounts
	if counts.Total, err = clip.ParamCount(cfg); err != nil {
		return err
	}
	counts.Trainable = counts.Total
	if r := loraRFlag.Get(c); r != 0 || c.IsSet(loraTargetsFlag.Name) || c.IsSet(loraTowersFlag.Name) {
		if r <= 0 {
			return fmt.Errorf("--lora-r must be positive with LoRA flags, got %d", r)
		}
		lc, err := loraConfig(c, r)
		if err != nil {
			return err
		}
		if counts.Total, counts.Trainable, err = lora.CountConfig(cfg, lc); err != nil {
			return err
		}
	} else if l := lockOf(c); l.Any() || l.ImageUnlockedLayers != 0 {
		if err := l.Validate(); err != nil {
			return err
		}
		if err := l.Check(cfg); err != nil {
			return err
		}
		counts.Trainable -= l.FrozenCount(cfg)
	}
	if counts.Total > 0 {
		counts.TrainablePercent = 100 * float64(counts.Trainable) / float64(counts.Total)
	}
	if infoJSONFlag.Get(c) {
		return json.NewEncoder(c.App.Writer).Encode(counts)
	}
	_, err = fmt.Fprintln(c.App.Writer, lora.FormatCounts(counts.Total, counts.Trainable))
	return err
}

// modelArchitecture is the architecture that --model or --config names (exactly one of
// them), with --model's checkpoint (nil for --config: a fresh model of the architecture).
func modelArchitecture(c *cli.Context) (clip.Config, *clip.Source, error) {
	model, err := modelPath(c)
	if err != nil {
		return clip.Config{}, nil, err
	}
	config := configFlag.Get(c)
	switch {
	case model != "" && config != "":
		return clip.Config{}, nil, errors.New("give --model DIR or --config NAME, not both")
	case model != "":
		src, err := clip.FindCheckpoint(model)
		if err != nil {
			return clip.Config{}, nil, err
		}
		cfg, err := src.LoadConfig()
		return cfg, &src, err
	case config != "":
		cfg, err := loadArchitecture(config)
		return cfg, nil, err
	}
	return clip.Config{}, nil, errors.New("give --model DIR (a model folder) or --config NAME (one of " +
		strings.Join(clip.PresetNames(), ", ") + ")")
}

// loadArchitecture reads --config: a preset name, or a config.json path (or its folder).
func loadArchitecture(name string) (clip.Config, error) {
	if _, err := os.Stat(name); err == nil {
		return clip.LoadConfig(name)
	}
	cfg, err := clip.Preset(name)
	if err != nil {
		return clip.Config{}, fmt.Errorf("--config %s: not a file, and %w", name, err)
	}
	return cfg, nil
}
