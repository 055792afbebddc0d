// Command goclip trains and fine-tunes CLIP models on libtorch.
//
// Each command lives in its own file as a *cli.Command; newApp lists them all, in
// the order of the help.
package main

import (
	"fmt"
	"os"
	"strings"

	"github.com/urfave/cli/v2"
)

// newApp is the goclip application with every command.
func newApp() *cli.App {
	commands := []*cli.Command{
		benchCommand,
		cacheCommand,
		convertCommand,
		embedCommand,
		evalCommand,
		finetuneCommand,
		infoCommand,
		launchCommand,
		shardCommand,
		synthCommand,
		tokenizeCommand,
		trainCommand,
		versionCommand,
		zeroshotCommand,
	}
	for _, c := range commands {
		c.OnUsageError = onUsageError
	}
	return &cli.App{
		Name:                 "goclip",
		Usage:                "train and LoRA fine-tune CLIP models on libtorch",
		Commands:             commands,
		EnableBashCompletion: true,
	}
}

// onUsageError turns a flag the command does not know, or a bad flag value, into one
// line that suggests the nearest flag name and points at the command's help.
func onUsageError(c *cli.Context, err error, _ bool) error {
	msg := err.Error()
	if name, ok := strings.CutPrefix(msg, "flag provided but not defined: -"); ok && cli.SuggestFlag != nil {
		if s := cli.SuggestFlag(c.Command.Flags, name, false); s != "" {
			msg += fmt.Sprintf(" (did you mean --%s?)", strings.TrimLeft(s, "-"))
		}
	}
	return usageError(c.Command.Name, msg)
}

func main() {
	if err := runApp(newApp(), os.Args); err != nil {
		fmt.Fprintln(os.Stderr, "goclip:", err)
		os.Exit(1)
	}
}
