// Command goclip trains and fine-tunes CLIP models on libtorch.
//
// Each command lives in its own file as a *cli.Command and registers itself with
// register in an init function; main builds the app from the registered commands.
package main

import (
	"fmt"
	"os"
	"sort"
	"strings"

	"github.com/urfave/cli/v2"
)

var commands []*cli.Command

// register adds a command to the app; called from each command file's init.
func register(c *cli.Command) { commands = append(commands, c) }

func newApp() *cli.App {
	sort.Slice(commands, func(i, j int) bool { return commands[i].Name < commands[j].Name })
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
