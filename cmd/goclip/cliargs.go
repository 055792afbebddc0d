package main

// The command line before urfave/cli sees it: flags may come before or after the
// positional arguments (goclip convert model.pt hf --config cfg.json), as in git or
// docker, and a missing required flag is one line, not the command's whole help.
//
// urfave/cli v2 stops reading flags at the first positional argument. runApp moves
// every flag of the command (as that command defines them: a bool flag takes no value,
// any other flag takes the next argument unless written --name=value) in front of the
// positional arguments, which follow a "--". "--" in the input ends the flags; what
// follows it stays positional, in order. Commands listed in passThrough (launch) stop
// at their first positional argument, which starts another command line.

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/urfave/cli/v2"
)

// passThrough are the commands whose first positional argument begins a command line
// of its own (goclip launch --nproc 2 train --config tiny ...).
var passThrough = map[string]bool{"launch": true}

// runApp runs app on args (args[0] is the program name) with each command's flags put
// before its positional arguments, and the required flags checked first.
func runApp(app *cli.App, args []string) error {
	args, err := prepareArgs(app, args)
	if err != nil {
		return err
	}
	return app.Run(args)
}

// prepareArgs is args reordered for the command they name, after checking that the
// command's required flags are given (on the command line or by their environment
// variables). Without a known command, args are returned unchanged.
func prepareArgs(app *cli.App, args []string) ([]string, error) {
	// The app itself takes only --help and the completion flag: the command is the
	// first argument that is not a flag.
	i := 1
	for i < len(args) && strings.HasPrefix(args[i], "-") && args[i] != "--" {
		i++
	}
	if i >= len(args) {
		return args, nil
	}
	cmd := findCommand(app, args[i])
	if cmd == nil {
		return args, nil
	}
	rest := reorderFlags(cmd, args[i+1:])
	if err := checkRequired(cmd, rest); err != nil {
		return nil, err
	}
	return append(append([]string(nil), args[:i+1]...), rest...), nil
}

func findCommand(app *cli.App, name string) *cli.Command {
	for _, c := range app.Commands {
		if c.HasName(name) {
			return c
		}
	}
	return nil
}

// flagArity maps each flag name of cmd (all aliases, --help included) to whether it
// takes a value.
func flagArity(cmd *cli.Command) map[string]bool {
	takes := map[string]bool{"help": false, "h": false, "generate-bash-completion": false}
	for _, f := range cmd.Flags {
		value := true
		if _, ok := f.(*cli.BoolFlag); ok {
			value = false
		} else if df, ok := f.(cli.DocGenerationFlag); ok {
			value = df.TakesValue()
		}
		for _, n := range f.Names() {
			takes[n] = value
		}
	}
	return takes
}

// flagName is the name of a flag argument ("--lr=1e-4" and "-lr" give "lr") and
// whether it carries its value after "=".
func flagName(arg string) (name string, inline bool) {
	name = strings.TrimLeft(arg, "-")
	if k, _, ok := strings.Cut(name, "="); ok {
		return k, true
	}
	return name, false
}

// isFlag reports whether arg is written as a flag ("-" alone is a positional: stdin).
func isFlag(arg string) bool { return len(arg) > 1 && arg[0] == '-' }

// reorderFlags is a command's arguments with its flags first, then "--" and the
// positional arguments in their order. An unknown flag stays a flag, for urfave/cli to
// report by name.
func reorderFlags(cmd *cli.Command, args []string) []string {
	takes := flagArity(cmd)
	var flags, pos []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			pos = append(pos, args[i+1:]...)
			break
		}
		if !isFlag(a) {
			if passThrough[cmd.Name] {
				pos = append(pos, args[i:]...)
				break
			}
			pos = append(pos, a)
			continue
		}
		flags = append(flags, a)
		name, inline := flagName(a)
		if takes[name] && !inline && i+1 < len(args) {
			i++
			flags = append(flags, args[i])
		}
	}
	if len(pos) == 0 {
		return flags
	}
	return append(append(flags, "--"), pos...)
}

// requiredFlag is a flag that must be given, with where it may come from.
type requiredFlag interface {
	cli.Flag
	IsRequired() bool
	GetEnvVars() []string
}

// checkRequired reports the first required flag of cmd that neither args (reordered:
// flags before "--") nor its environment variables give, as one line that points at
// the command's help. --help itself needs nothing.
func checkRequired(cmd *cli.Command, args []string) error {
	given := map[string]bool{}
	for _, a := range args {
		if a == "--" {
			break
		}
		if isFlag(a) {
			n, _ := flagName(a)
			given[n] = true
		}
	}
	if given["help"] || given["h"] || given["generate-bash-completion"] {
		return nil
	}
	for _, f := range cmd.Flags {
		rf, ok := f.(requiredFlag)
		if !ok || !rf.IsRequired() {
			continue
		}
		present := false
		for _, n := range rf.Names() {
			present = present || given[n]
		}
		for _, e := range rf.GetEnvVars() {
			if _, ok := os.LookupEnv(e); ok {
				present = true
			}
		}
		if !present {
			return missingFlag(cmd.Name, rf.Names()[0])
		}
	}
	return nil
}

// missingFlag is the error of a required flag that was not given.
func missingFlag(command, name string) error {
	return usageError(command, fmt.Sprintf("required flag --%s not set", name))
}

// usageError is msg with a pointer to the command's help.
func usageError(command, msg string) error {
	return errors.New(msg + "\nsee: goclip " + command + " --help")
}
