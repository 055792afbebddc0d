// Command goclip trains and fine-tunes CLIP models on libtorch.
//
// Each command lives in its own file as a *cli.Command and registers itself with
// register in an init function; main builds the app from the registered commands.
package main

import (
	"fmt"
	"os"
	"sort"

	"github.com/urfave/cli/v2"
)

var commands []*cli.Command

// register adds a command to the app; called from each command file's init.
func register(c *cli.Command) { commands = append(commands, c) }

func newApp() *cli.App {
	sort.Slice(commands, func(i, j int) bool { return commands[i].Name < commands[j].Name })
	return &cli.App{
		Name:                 "goclip",
		Usage:                "train and LoRA fine-tune CLIP models on libtorch",
		Commands:             commands,
		EnableBashCompletion: true,
	}
}

func main() {
	if err := newApp().Run(os.Args); err != nil {
		fmt.Fprintln(os.Stderr, "goclip:", err)
		os.Exit(1)
	}
}
