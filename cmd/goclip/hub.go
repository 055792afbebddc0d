package main

// Where --model, --adapter and convert's SRC point: a local folder or file as given, a
// Hugging Face model id in the local Hub cache (clip.HubSnapshot, at --revision), or,
// for --adapter, a run folder (its adapter/).

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/urfave/cli/v2"

	"goclip/clip"
	"goclip/lora"
	"goclip/train"
)

var revisionFlag = &cli.StringFlag{
	Name:     "revision",
	Usage:    "with a Hugging Face model id as --model: the branch, tag or commit in the local Hub cache",
	Value:    "main",
	EnvVars:  []string{"GOCLIP_REVISION"},
	Category: catModel,
}

// resolveModelPath is path when it exists, else the Hub cache's snapshot of the model
// id path at --revision. hub reports the latter.
func resolveModelPath(c *cli.Context, path string) (dir string, hub bool, err error) {
	if path == "" {
		return "", false, nil
	}
	if _, err := os.Stat(path); err == nil {
		return path, false, nil
	}
	if dir, err = clip.HubSnapshot(path, revisionFlag.Get(c)); err != nil {
		return "", false, err
	}
	return dir, true, nil
}

// modelPath is --model resolved (see resolveModelPath).
func modelPath(c *cli.Context) (string, error) {
	dir, _, err := resolveModelPath(c, modelFlag.Get(c))
	if err != nil {
		return "", fmt.Errorf("--model: %w", err)
	}
	return dir, nil
}

// adapterPath is an --adapter value as a peft adapter folder: the folder itself, or a
// run folder's adapter/.
func adapterPath(dir string) (string, error) {
	if _, err := os.Stat(filepath.Join(dir, lora.ConfigFile)); err == nil {
		return dir, nil
	}
	sub := filepath.Join(dir, train.AdapterDir)
	if _, err := os.Stat(filepath.Join(sub, lora.ConfigFile)); err == nil {
		return sub, nil
	}
	if _, err := os.Stat(dir); err != nil {
		return "", fmt.Errorf("--adapter: %w", err)
	}
	return "", fmt.Errorf("--adapter %s: neither a peft adapter folder (%s) nor a LoRA run folder (%s)",
		dir, lora.ConfigFile, filepath.Join(train.AdapterDir, lora.ConfigFile))
}
