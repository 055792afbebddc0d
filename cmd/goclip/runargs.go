package main

// RUN/args.json: the settings a run used, and --resume taking them back.
//
// args.json holds every flag of the command with the value the run used (the resolved
// device and precision, durations as text, paths made absolute), the command line, the
// goclip, libtorch and CUDA it ran on, and for a resumed run which flags each resume
// changed. `--resume` reads it: a flag not given again takes the run's value; a flag
// given again with another value is an error when it would change the model, the data
// or the optimizer state, and recorded when it is one of resumeMayChange.

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"goclip/internal/rundir"
	"goclip/torch"
	"goclip/train"
)

// ArgsFile is the run's settings file (see train.RunDir).
const ArgsFile = rundir.ArgsFile

// resumeMayChange are the flags a resumed run may set to other values than the run's:
// how long it runs, how it logs, and the compute it runs on. Every other flag shapes
// the model, the data or the optimizer state and must stay as the run had it.
var resumeMayChange = map[string]bool{
	"epochs": true, "max-steps": true, "workers": true, "threads": true, "log-every": true,
	"eval-every": true, "save-every": true, "keep": true, "eval-batch-size": true, "max-bad-steps": true,
	"cache": true, "device": true, "dist-timeout": true,
	"trim-text": true, "fused-qkv": true, "grad-checkpointing": true, "device-input": true, "bf16-base": true, "sync-every-step": true, // the same results, to float rounding
	"zeroshot-data": true, "zeroshot-every": true, "zeroshot-templates": true,
}

// notRecorded are flags that are not settings of the run.
var notRecorded = map[string]bool{"help": true, "resume": true, "resume-from": true, "dry-run": true}

// runArgsFile is the layout of args.json.
type runArgsFile struct {
	Command  string                     `json:"command"` // train or finetune
	Argv     []string                   `json:"argv"`
	Flags    map[string]json.RawMessage `json:"flags"`
	Versions map[string]any             `json:"versions"`
	Started  string                     `json:"started"`
	Resumes  []resumeRecord             `json:"resumes,omitempty"`
}

// resumeRecord is one --resume that changed flags: flag -> [run's value, new value].
type resumeRecord struct {
	Time    string                        `json:"time"`
	Changed map[string][2]json.RawMessage `json:"changed,omitempty"`
}

// flagValue is the value of flag f as args.json records it: durations as text, paths
// absolute when they name something that exists (a Hub model id stays as given).
func flagValue(c *cli.Context, f cli.Flag) any {
	name := f.Names()[0]
	switch f.(type) {
	case *cli.BoolFlag:
		return c.Bool(name)
	case *cli.IntFlag:
		return c.Int(name)
	case *cli.Int64Flag:
		return c.Int64(name)
	case *cli.Uint64Flag:
		return c.Uint64(name)
	case *cli.Float64Flag:
		return c.Float64(name)
	case *cli.DurationFlag:
		return c.Duration(name).String()
	case *cli.StringSliceFlag:
		return c.StringSlice(name)
	case *cli.PathFlag:
		return absIfExists(c.String(name))
	}
	return fmt.Sprint(c.Value(name))
}

// absIfExists is path made absolute when it names a file or folder.
func absIfExists(path string) string {
	if path == "" {
		return path
	}
	if _, err := os.Stat(path); err != nil {
		return path
	}
	if a, err := filepath.Abs(path); err == nil {
		return a
	}
	return path
}

// recordedFlags are the command's flags as args.json records them, with the resolved
// values in resolved (device, precision) replacing the given ones.
func recordedFlags(c *cli.Context, resolved map[string]any) (map[string]json.RawMessage, error) {
	out := map[string]json.RawMessage{}
	for _, f := range c.Command.Flags {
		name := f.Names()[0]
		if notRecorded[name] {
			continue
		}
		v := flagValue(c, f)
		if r, ok := resolved[name]; ok {
			v = r
		}
		raw, err := json.Marshal(v)
		if err != nil {
			return nil, fmt.Errorf("--%s: %w", name, err)
		}
		out[name] = raw
	}
	return out, nil
}

// newRunArgs is the args.json of this invocation; prev is the run's (nil for a new
// run), whose start and resume history it keeps.
func newRunArgs(c *cli.Context, dev torch.Device, resolved map[string]any, prev *runArgsFile, changed map[string][2]json.RawMessage) (*runArgsFile, error) {
	flags, err := recordedFlags(c, resolved)
	if err != nil {
		return nil, err
	}
	now := time.Now().UTC().Format(time.RFC3339)
	cuda := map[string]any{"built_with_cuda": torch.BuiltWithCUDA(), "available": torch.CUDAAvailable()}
	if torch.CUDAAvailable() {
		cuda["devices"] = torch.CUDADeviceCount()
	}
	if dev.Type == torch.CUDADevice {
		if p, err := torch.CUDAProperties(dev); err == nil {
			cuda["device_name"] = p.Name
			cuda["compute_capability"] = fmt.Sprintf("%d.%d", p.Major, p.Minor)
		}
	}
	a := &runArgsFile{
		Command: c.Command.Name, Argv: append([]string{"goclip"}, os.Args[1:]...), Flags: flags, Started: now,
		Versions: map[string]any{"goclip": version, "go": runtime.Version(), "libtorch": torch.Version(), "cuda": cuda},
	}
	if prev != nil {
		a.Started, a.Resumes = prev.Started, prev.Resumes
		a.Resumes = append(a.Resumes, resumeRecord{Time: now, Changed: changed})
	}
	return a, nil
}

// readRunArgs reads RUN/args.json. Runs written before args.json had a "flags" object
// kept the flags at the top level, beside "command" (the argv); both are read.
func readRunArgs(run string) (*runArgsFile, error) {
	path := train.RunDir(run).Args()
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var a runArgsFile
	if err := json.Unmarshal(data, &a); err == nil && a.Flags != nil {
		return &a, nil
	}
	var flat map[string]json.RawMessage
	if err := json.Unmarshal(data, &flat); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	a = runArgsFile{Flags: map[string]json.RawMessage{}}
	for k, v := range flat {
		switch k {
		case "command":
			_ = json.Unmarshal(v, &a.Argv)
			if len(a.Argv) > 1 {
				a.Command = a.Argv[1]
			}
		case "help":
		default:
			a.Flags[k] = v
		}
	}
	return &a, nil
}

// applyRunArgs gives the flags not set on this command line the values of the run in
// --out (args.json), and checks the ones set again. It returns the run's args and the
// flags this resume changes (flag -> [run's value, new value]). A run without
// args.json is resumed with the flags as given.
func applyRunArgs(c *cli.Context) (*runArgsFile, map[string][2]json.RawMessage, error) {
	run := runOutFlag.Get(c)
	prev, err := readRunArgs(run)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, fmt.Errorf("--resume: %w", err)
	}
	if prev.Command != "" && prev.Command != c.Command.Name {
		return nil, nil, fmt.Errorf("--resume: %s is a goclip %s run; continue it with: goclip %s --out %s --resume",
			run, prev.Command, prev.Command, run)
	}
	changed := map[string][2]json.RawMessage{}
	names := make([]string, 0, len(c.Command.Flags))
	byName := map[string]cli.Flag{}
	for _, f := range c.Command.Flags {
		names = append(names, f.Names()[0])
		byName[f.Names()[0]] = f
	}
	sort.Strings(names)
	for _, name := range names {
		rec, ok := prev.Flags[name]
		if !ok || notRecorded[name] {
			continue
		}
		f := byName[name]
		rec = normalizeRecorded(f, rec)
		now, err := json.Marshal(flagValue(c, f))
		if err != nil {
			return nil, nil, err
		}
		if !c.IsSet(name) {
			if sameJSON(now, rec) {
				continue // the default, as the run had it: the flag stays unset
			}
			if err := setFromJSON(c, name, rec); err != nil {
				return nil, nil, fmt.Errorf("--resume: args.json's %s %s: %w", name, rec, err)
			}
			continue
		}
		if sameJSON(now, rec) || (name == "precision" && resolvesTo(c, rec)) {
			continue
		}
		if !resumeMayChange[name] {
			return nil, nil, fmt.Errorf("--resume: --%s %s differs from the run's %s (%s): a resumed run keeps its model, data and optimizer settings; drop --%s or start a new run",
				name, now, rec, train.RunDir(run).Args(), name)
		}
		changed[name] = [2]json.RawMessage{rec, now}
	}
	return prev, changed, nil
}

// normalizeRecorded is a recorded value in today's form: runs written before durations
// were recorded as text hold them as nanoseconds.
func normalizeRecorded(f cli.Flag, rec json.RawMessage) json.RawMessage {
	if _, ok := f.(*cli.DurationFlag); ok {
		var ns int64
		if json.Unmarshal(rec, &ns) == nil {
			if text, err := json.Marshal(time.Duration(ns).String()); err == nil {
				return text
			}
		}
	}
	return rec
}

// resolvesTo reports whether this command line's --precision resolves to the recorded
// one (an unset precision is recorded resolved).
func resolvesTo(c *cli.Context, rec json.RawMessage) bool {
	var s string
	return json.Unmarshal(rec, &s) == nil && strings.EqualFold(s, precisionFlag.Get(c))
}

// sameJSON compares two JSON values by their compact text.
func sameJSON(a, b json.RawMessage) bool {
	var x, y bytes.Buffer
	if json.Compact(&x, a) != nil || json.Compact(&y, b) != nil {
		return bytes.Equal(a, b)
	}
	return bytes.Equal(x.Bytes(), y.Bytes())
}

// setFromJSON sets flag name to a value read from args.json: a string, a number, a
// bool, or a list (each item added to a slice flag).
func setFromJSON(c *cli.Context, name string, raw json.RawMessage) error {
	var list []string
	if json.Unmarshal(raw, &list) == nil {
		for _, v := range list {
			if err := c.Set(name, v); err != nil {
				return err
			}
		}
		return nil
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		if s == "" {
			return nil
		}
		return c.Set(name, s)
	}
	var n json.Number
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return err
	}
	switch x := v.(type) {
	case json.Number:
		n = x
		return c.Set(name, n.String())
	case bool:
		return c.Set(name, fmt.Sprint(x))
	case nil:
		return nil
	}
	return fmt.Errorf("unexpected value")
}
