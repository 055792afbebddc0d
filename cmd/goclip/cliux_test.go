package main

// Tests of the command line as a new user meets it: flags in any position, one-line
// usage errors, --resume from args.json, checks before any work, warnings, LoRA target
// forms, convert's overwrite guard, help texts, and the run files (args.json,
// metrics.jsonl, the adapter's model card).

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"goclip/internal/testutil"
	"goclip/torch"
	"goclip/torch/serialize"
)

func TestReorderFlags(t *testing.T) {
	cases := []struct {
		cmd       string
		args, out []string
	}{
		// The README's form: a value after --images that is a path, then more flags.
		{"embed", []string{"--model", "M", "--images", "a.png", "b.png", "--out", "e.npy"},
			[]string{"--model", "M", "--images", "a.png", "--out", "e.npy", "--", "b.png"}},
		// A bool flag takes no value: a.png stays a path.
		{"embed", []string{"--normalize", "a.png", "--images", "b.png"},
			[]string{"--normalize", "--images", "b.png", "--", "a.png"}},
		// "--" ends the flags: what follows stays positional, dashes and all.
		{"embed", []string{"--out", "x.npy", "--", "-odd.png", "--images"},
			[]string{"--out", "x.npy", "--", "-odd.png", "--images"}},
		// --name=value carries its value; positional arguments keep their order.
		{"convert", []string{"model.pt", "--dtype=float16", "hf", "--config", "cfg.json"},
			[]string{"--dtype=float16", "--config", "cfg.json", "--", "model.pt", "hf"}},
		// A value that looks like a number with a minus sign is still the flag's value.
		{"train", []string{"--seed", "3", "--min-lr", "-1"}, []string{"--seed", "3", "--min-lr", "-1"}},
		// launch: the first argument starts the launched command line.
		{"launch", []string{"--nproc", "2", "train", "--config", "tiny"},
			[]string{"--nproc", "2", "--", "train", "--config", "tiny"}},
	}
	app := newApp()
	for _, c := range cases {
		got := reorderFlags(findCommand(app, c.cmd), c.args)
		if !slices.Equal(got, c.out) {
			t.Errorf("%s %q:\n got %q\nwant %q", c.cmd, c.args, got, c.out)
		}
	}
}

func TestFlagsAfterArguments(t *testing.T) {
	fx := testutil.Fixtures(t)
	model := filepath.Join(fx, "clip-tiny-openai")
	a, b := filepath.Join(fx, "images", "rocket.jpg"), filepath.Join(fx, "images", "camera.png")
	tmp := t.TempDir()
	// The README's form, and flags first with --images repeated: the same rows.
	mustGoclip(t, "embed", "--model", model, "--images", a, b, "--out", filepath.Join(tmp, "readme.npy"), "--threads", "1")
	mustGoclip(t, "embed", "--threads", "1", "--out", filepath.Join(tmp, "first.npy"), "--model", model, "--images", a, "--images", b)
	s1, r1 := testutil.ReadNpyFloat32(t, filepath.Join(tmp, "readme.npy"))
	s2, r2 := testutil.ReadNpyFloat32(t, filepath.Join(tmp, "first.npy"))
	if !slices.Equal(s1, s2) || s1[0] != 2 || testutil.MaxAbsDiff(r1, r2) != 0 {
		t.Errorf("embed with flags after the paths: shape %v vs %v, max diff %g", s1, s2, testutil.MaxAbsDiff(r1, r2))
	}
	// convert SRC DST --flag.
	half := filepath.Join(tmp, "half.safetensors")
	mustGoclip(t, "convert", model, half, "--dtype", "float16")
	if hdr, _, err := serialize.ReadSafetensorsHeader(half); err != nil || hdr["logit_scale"].DType != serialize.F16 {
		t.Errorf("convert SRC DST --dtype float16: %v %v", hdr["logit_scale"], err)
	}
	// zeroshot with the image first.
	out := mustGoclip(t, "zeroshot", a, "--model", model, "--classes", "cat,rocket", "--json")
	if !strings.Contains(out, `"classes"`) {
		t.Errorf("zeroshot IMAGE --model ...: %s", out)
	}
}

func TestUsageErrorsAreOneLine(t *testing.T) {
	fx := testutil.Fixtures(t, "clip-tiny-openai")
	stdout, stderr, err := runGoclip(t, "embed", "--model", fx, "--images", "x.png")
	if err == nil || err.Error() != "required flag --out not set\nsee: goclip embed --help" {
		t.Errorf("missing --out: %v", err)
	}
	if stdout+stderr != "" {
		t.Errorf("missing --out printed more than the error:\n%s%s", stdout, stderr)
	}
	// Its environment variable counts as given.
	t.Setenv("GOCLIP_EMBED_OUT", filepath.Join(t.TempDir(), "e.npy"))
	if _, _, err := runGoclip(t, "embed", "--model", fx, "--texts", filepath.Join(t.TempDir(), "none.txt")); err == nil || strings.Contains(err.Error(), "required flag") {
		t.Errorf("--out from GOCLIP_EMBED_OUT: %v", err)
	}
	stdout, _, err = runGoclip(t, "info", "--modle", fx)
	if err == nil || !strings.Contains(err.Error(), "did you mean --model?") || !strings.HasSuffix(err.Error(), "see: goclip info --help") || stdout != "" {
		t.Errorf("unknown flag: %v\n%s", err, stdout)
	}
	for _, cmd := range []string{"train", "finetune"} {
		if _, _, err := runGoclip(t, cmd, "--data", "d"); err == nil || err.Error() != "required flag --out not set\nsee: goclip "+cmd+" --help" {
			t.Errorf("%s without --out: %v", cmd, err)
		}
	}
}

// tinyTrainArgs is a tiny-config train run on data into out (60 images of 32 px: 3
// steps of 16 per epoch).
func tinyTrainArgs(data, out string, extra ...string) []string {
	return append([]string{"train", "--config", "tiny", "--data", data, "--out", out, "--batch-size", "16",
		"--threads", "1", "--workers", "1", "--device", "cpu", "--precision", "fp32", "--warmup", "1", "--seed", "5"}, extra...)
}

// tinyData writes the synthetic data set of the tiny runs.
func tinyData(t *testing.T) string {
	data := filepath.Join(t.TempDir(), "data")
	mustGoclip(t, "synth", "--out", data, "--images", "60", "--size", "32", "--seed", "2")
	return data
}

// snapshot is every file under dir with its contents (nil for folders).
func snapshot(t *testing.T, dir string) map[string]string {
	t.Helper()
	files := map[string]string{}
	err := filepath.Walk(dir, func(p string, info os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		if !info.IsDir() {
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			files[rel] = string(data)
		} else {
			files[rel+"/"] = ""
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}

// assertUnchanged fails when dir differs from before.
func assertUnchanged(t *testing.T, what, dir string, before map[string]string) {
	t.Helper()
	after := snapshot(t, dir)
	for k, v := range after {
		if b, ok := before[k]; !ok || b != v {
			t.Errorf("%s changed %s in the run folder", what, k)
		}
	}
	for k := range before {
		if _, ok := after[k]; !ok {
			t.Errorf("%s removed %s from the run folder", what, k)
		}
	}
}

// metricRows are RUN/metrics.jsonl's rows.
func metricRows(t *testing.T, run string) []map[string]any {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(run, "metrics.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	var rows []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		var r map[string]any
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("%s: %v", line, err)
		}
		rows = append(rows, r)
	}
	return rows
}

// safetensorsScalar is the float32 scalar key of a safetensors file.
func safetensorsScalar(t *testing.T, path, key string) float64 {
	t.Helper()
	sd, _, err := serialize.ReadSafetensors(path)
	if err != nil {
		t.Fatal(err)
	}
	raw, ok := sd[key]
	if !ok || raw.DType != serialize.F32 || len(raw.Data) != 4 {
		t.Fatalf("%s: %s is not a float32 scalar", path, key)
	}
	return float64(math.Float32frombits(binary.LittleEndian.Uint32(raw.Data)))
}

func TestResumeTakesTheRunsSettings(t *testing.T) {
	data := tinyData(t)
	run := filepath.Join(t.TempDir(), "run")
	mustGoclip(t, tinyTrainArgs(data, run, "--context-length", "32", "--max-steps", "2", "--log-every", "1")...)

	// A flag that shapes the model, given again with another value: an error naming
	// the flag and both values, and nothing in the run folder changes.
	before := snapshot(t, run)
	_, _, err := runGoclip(t, "train", "--out", run, "--resume", "--context-length", "77")
	if err == nil || !strings.Contains(err.Error(), "--context-length 77") || !strings.Contains(err.Error(), "the run's 32") {
		t.Errorf("--resume --context-length 77 on a 32 run: %v", err)
	}
	assertUnchanged(t, "a refused resume", run, before)
	_, _, err = runGoclip(t, "finetune", "--out", run, "--resume")
	if err == nil || !strings.Contains(err.Error(), "goclip train --out "+run+" --resume") {
		t.Errorf("finetune --resume of a train run: %v", err)
	}
	assertUnchanged(t, "finetune --resume of a train run", run, before)

	// Without retyping: --data, --context-length, the schedule... come from args.json;
	// --max-steps and --log-every may change and are recorded.
	_, stderr, err := runGoclip(t, "train", "--out", run, "--resume", "--max-steps", "4", "--log-every", "2")
	if err != nil {
		t.Fatalf("train --resume --max-steps 4: %v\n%s", err, stderr)
	}
	if !strings.Contains(stderr, "resume: --max-steps 4 (the run had 2)") {
		t.Errorf("the changed flag was not reported:\n%s", stderr)
	}
	var args runArgsFile
	raw, err := os.ReadFile(filepath.Join(run, "args.json"))
	if err != nil || json.Unmarshal(raw, &args) != nil {
		t.Fatalf("args.json: %v", err)
	}
	flag := func(name string) string { return string(args.Flags[name]) }
	if flag("max-steps") != "4" || flag("log-every") != "2" || flag("context-length") != "32" || flag("device") != `"cpu"` ||
		flag("precision") != `"fp32"` || flag("dist-timeout") != `"5m0s"` || flag("data") != `"`+data+`"` {
		t.Errorf("args.json flags: %s", raw)
	}
	if _, ok := args.Flags["help"]; ok {
		t.Error("args.json records --help")
	}
	if len(args.Resumes) != 1 || string(args.Resumes[0].Changed["max-steps"][0]) != "2" || string(args.Resumes[0].Changed["max-steps"][1]) != "4" {
		t.Errorf("args.json resumes: %+v", args.Resumes)
	}
	if args.Command != "train" || args.Versions["goclip"] != version || args.Versions["libtorch"] != torch.Version() {
		t.Errorf("args.json command %q, versions %v", args.Command, args.Versions)
	}

	// metrics.jsonl: every training row has its time, learning rate, gradient norm,
	// logit scale and throughput; the last one's logit scale is the final model's.
	rows := metricRows(t, run)
	var last map[string]any
	for _, r := range rows {
		if _, ok := r["train_loss"]; !ok {
			continue
		}
		if _, err := time.Parse(time.RFC3339Nano, r["time"].(string)); err != nil {
			t.Errorf("row time: %v", err)
		}
		for _, k := range []string{"lr", "grad_norm", "logit_scale", "images_per_s"} {
			if v, ok := r[k].(float64); !ok || !(v > 0) || math.IsInf(v, 0) {
				t.Errorf("step %v: %s = %v", r["step"], k, r[k])
			}
		}
		last = r
	}
	if last == nil || last["step"].(float64) != 4 {
		t.Fatalf("last training row: %v", last)
	}
	want := math.Exp(safetensorsScalar(t, filepath.Join(run, "model", "model.safetensors"), "logit_scale"))
	if got := last["logit_scale"].(float64); math.Abs(got-want) > 1e-6*want {
		t.Errorf("logit_scale %v in the last row, exp(logit_scale) of the final model %v", got, want)
	}

	// Resuming the finished run appends no row twice. (Its args.json is first put back
	// in the flat form that runs before this one wrote, durations in nanoseconds: it
	// resumes the same.)
	flat := map[string]any{"command": []string{"goclip", "train"}, "help": false}
	for k, v := range args.Flags {
		flat[k] = v
	}
	flat["dist-timeout"] = int64(5 * time.Minute)
	if err := os.WriteFile(filepath.Join(run, "args.json"), mustJSON(t, flat), 0o644); err != nil {
		t.Fatal(err)
	}
	nRows := len(rows)
	mustGoclip(t, "train", "--out", run, "--resume")
	rows = metricRows(t, run)
	seen := map[string]bool{}
	for _, r := range rows {
		key := string(mustJSON(t, r["step"]))
		if _, ok := r["val_loss"]; ok {
			key += " val"
		}
		if seen[key] {
			t.Errorf("metrics.jsonl holds step %s twice", key)
		}
		seen[key] = true
	}
	if len(rows) != nRows {
		t.Errorf("resuming a finished run changed metrics.jsonl from %d to %d rows", nRows, len(rows))
	}

	// A LoRA run: train --resume points at finetune --resume; a changed rank is refused.
	ft := filepath.Join(t.TempDir(), "ft")
	mustGoclip(t, "finetune", "--model", run, "--data", data, "--out", ft, "--lora-r", "4", "--lora-alpha", "8", "--max-steps", "2",
		"--batch-size", "16", "--threads", "1", "--workers", "1", "--device", "cpu", "--warmup", "1")
	before = snapshot(t, ft)
	_, _, err = runGoclip(t, "train", "--out", ft, "--resume")
	if err == nil || !strings.Contains(err.Error(), "goclip finetune --out "+ft+" --resume") {
		t.Errorf("train --resume of a LoRA run: %v", err)
	}
	_, _, err = runGoclip(t, "finetune", "--out", ft, "--resume", "--lora-r", "8")
	if err == nil || !strings.Contains(err.Error(), "--lora-r 8 differs from the run's 4") {
		t.Errorf("finetune --resume --lora-r 8 of an r=4 run: %v", err)
	}
	assertUnchanged(t, "refused LoRA resumes", ft, before)

	// The adapter's model card names the base model, the LoRA settings, the data and
	// the final metrics (those of eval.json).
	card, err := os.ReadFile(filepath.Join(ft, "adapter", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	var final struct {
		Loss float64 `json:"loss"`
	}
	if raw, err := os.ReadFile(filepath.Join(ft, "eval.json")); err != nil || json.Unmarshal(raw, &final) != nil {
		t.Fatalf("eval.json: %v", err)
	}
	for _, want := range []string{"base_model: " + run, "library_name: peft", "| r | 4 |", "| lora_alpha | 8 (scaling 2) |",
		"q_proj, k_proj, v_proj", data + ": 54 training images, 2 optimizer steps", "| base |", fmt.Sprintf("| with this adapter | %.4f |", final.Loss)} {
		if !strings.Contains(string(card), want) {
			t.Errorf("adapter/README.md lacks %q:\n%s", want, card)
		}
	}

	// --adapter takes the run folder; an adapter whose config lies about its rank says so first.
	out := mustGoclip(t, "eval", "--model", run, "--adapter", ft, "--data", data, "--json", "--threads", "1")
	var ev struct {
		Loss float64 `json:"loss"`
	}
	if json.Unmarshal([]byte(out), &ev) != nil || math.Abs(ev.Loss-final.Loss) > 1e-4 {
		t.Errorf("eval --adapter RUN: %s (eval.json loss %v)", out, final.Loss)
	}
	bad := filepath.Join(t.TempDir(), "bad")
	if err := os.CopyFS(bad, os.DirFS(filepath.Join(ft, "adapter"))); err != nil {
		t.Fatal(err)
	}
	cfgPath := filepath.Join(bad, "adapter_config.json")
	var cfg map[string]any
	raw, _ = os.ReadFile(cfgPath)
	if err := json.Unmarshal(raw, &cfg); err != nil {
		t.Fatal(err)
	}
	cfg["r"] = 8
	if err := os.WriteFile(cfgPath, mustJSON(t, cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	_, _, err = runGoclip(t, "eval", "--model", run, "--adapter", bad, "--data", data, "--threads", "1")
	if err == nil || !strings.HasPrefix(err.Error(), "lora: adapter_config.json says r=8, the weights have rank 4") {
		t.Errorf("wrong-rank adapter: %v", err)
	}
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestChecksBeforeAnyWork(t *testing.T) {
	data := tinyData(t)
	tmp := t.TempDir()
	for _, c := range []struct {
		name string
		args []string
		want string
	}{
		{"bad --config", []string{"--config", "nope"}, "nope"},
		{"bad --schedule", []string{"--schedule", "linear"}, "linear"},
		{"bad --lr", []string{"--lr", "-1"}, "--lr"},
	} {
		out := filepath.Join(tmp, strings.ReplaceAll(c.name, " ", "_"))
		args := tinyTrainArgs(data, out, c.args...)
		if c.args[0] == "--config" {
			args[2] = "nope" // the preset itself
		}
		_, stderr, err := runGoclip(t, args...)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v", c.name, err)
		}
		if strings.Contains(stderr, "data:") || strings.Contains(stderr, "tokenizer:") {
			t.Errorf("%s: rejected only after reading the data:\n%s", c.name, stderr)
		}
		if _, err := os.Stat(out); err == nil {
			t.Errorf("%s left %s behind", c.name, out)
		}
	}
	// A failure found after the data scan (a batch larger than the training split)
	// leaves no folder either.
	out := filepath.Join(tmp, "big-batch")
	if _, _, err := runGoclip(t, tinyTrainArgs(data, out, "--batch-size", "500")...); err == nil {
		t.Error("a batch of 500 on 54 training images started")
	}
	if _, err := os.Stat(out); err == nil {
		t.Errorf("a failed start left %s behind", out)
	}

	// finetune --dry-run needs neither --data nor --out, and counts as info does.
	fx := testutil.Fixtures(t, "clip-tiny-openai")
	dry := mustGoclip(t, "finetune", "--model", fx, "--dry-run", "--lora-r", "4")
	if info := mustGoclip(t, "info", "--model", fx, "--lora-r", "4"); dry != info || !strings.HasPrefix(dry, "trainable params: ") {
		t.Errorf("finetune --dry-run printed %q, info %q", dry, info)
	}
}

func TestWarningsProgressAndGrammar(t *testing.T) {
	data := tinyData(t)
	run := filepath.Join(t.TempDir(), "run")
	// 5 steps with the default --warmup 100 and --log-every 10, bf16 on the CPU.
	_, stderr, err := runGoclip(t, "train", "--config", "tiny", "--data", data, "--out", run, "--batch-size", "16",
		"--threads", "1", "--workers", "1", "--device", "cpu", "--precision", "bf16", "--max-steps", "5")
	if err != nil {
		t.Fatalf("%v\n%s", err, stderr)
	}
	for _, w := range []string{"warning: --warmup 100 is longer than the run's 5 steps", "warning: --precision bf16 on the CPU"} {
		if n := strings.Count(stderr, w); n != 1 {
			t.Errorf("%q printed %d times:\n%s", w, n, stderr)
		}
	}
	// Piped progress: the first and the last step always, of the whole run's steps,
	// the epoch counted to the end of --max-steps (3 steps per epoch: 2 epochs).
	for _, w := range []string{"step 1/5  epoch 1/2", "step 5/5  epoch 2/2", "(3 steps of 16 per epoch, 2 epochs, 5 steps in all)"} {
		if !strings.Contains(stderr, w) {
			t.Errorf("progress lacks %q:\n%s", w, stderr)
		}
	}
	if strings.Contains(stderr, "step 3/5  ") {
		t.Errorf("a step between --log-every lines was printed:\n%s", stderr)
	}
	run1 := filepath.Join(t.TempDir(), "one")
	_, stderr, err = runGoclip(t, tinyTrainArgs(data, run1, "--max-steps", "1")...)
	if err != nil || !strings.Contains(stderr, "1 epoch, 1 step in all") || !strings.Contains(stderr, "done: 1 step (") {
		t.Errorf("one step: %v\n%s", err, stderr)
	}
}

func TestLoRATargetForms(t *testing.T) {
	fx := testutil.Fixtures(t, "clip-tiny-openai")
	py := testutil.PythonTorch(t, "transformers", "peft")
	// peft's counts for each form, on the fixture model.
	script := `
import json, sys
from transformers import CLIPModel
from peft import LoraConfig, get_peft_model
out = []
for targets in json.loads(sys.argv[2]):
    m = CLIPModel.from_pretrained(sys.argv[1])
    p = get_peft_model(m, LoraConfig(r=4, lora_alpha=8, target_modules=targets))
    tr, tot = p.get_nb_trainable_parameters()
    out.append([tr, tot])
print(json.dumps(out))
`
	forms := []any{"all-linear", `.*vision_model.*\.(q_proj|v_proj)`, []string{"q_proj", "fc2"}}
	flags := []string{"all-linear", `.*vision_model.*\.(q_proj|v_proj)`, "q_proj,fc2"}
	got := runPython(t, py, script, fx, string(mustJSON(t, forms)))
	var want [][2]int64
	if err := json.Unmarshal([]byte(got), &want); err != nil {
		t.Fatalf("%v: %s", err, got)
	}
	for i, f := range flags {
		var counts paramCounts
		out := mustGoclip(t, "info", "--model", fx, "--lora-r", "4", "--lora-targets", f, "--json")
		if err := json.Unmarshal([]byte(out), &counts); err != nil {
			t.Fatal(err)
		}
		if counts.Trainable != want[i][0] || counts.Total != want[i][1] {
			t.Errorf("--lora-targets %s: trainable %d of %d, peft %d of %d", f, counts.Trainable, counts.Total, want[i][0], want[i][1])
		}
	}
	_, _, err := runGoclip(t, "info", "--model", fx, "--lora-r", "4", "--lora-targets", "q_prj")
	if err == nil || !strings.Contains(err.Error(), "did you mean q_proj?") {
		t.Errorf("a misspelt target: %v", err)
	}
}

// runPython runs a Python script with args, outside the repository, and returns its
// stdout.
func runPython(t *testing.T, py, script string, args ...string) string {
	t.Helper()
	cmd := exec.Command(py, append([]string{"-c", script}, args...)...)
	cmd.Dir = t.TempDir()
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("python: %v\n%s", err, out)
	}
	return strings.TrimSpace(string(out))
}

func TestConvertRefusesToOverwrite(t *testing.T) {
	fx := testutil.Fixtures(t, "clip-tiny-openai")
	tmp := t.TempDir()
	pt := filepath.Join(tmp, "m.pt")
	mustGoclip(t, "convert", fx, pt)
	info, _ := os.Stat(pt)
	if _, _, err := runGoclip(t, "convert", fx, pt, "--dtype", "float16"); err == nil || !strings.Contains(err.Error(), "--force") {
		t.Errorf("convert over an existing file: %v", err)
	}
	if again, _ := os.Stat(pt); !again.ModTime().Equal(info.ModTime()) || again.Size() != info.Size() {
		t.Error("the refused convert changed the file")
	}
	mustGoclip(t, "convert", fx, pt, "--dtype", "float16", "--force")
	if again, _ := os.Stat(pt); again.Size() >= info.Size() {
		t.Errorf("--force did not overwrite: %d bytes, float32 had %d", again.Size(), info.Size())
	}
	hf := filepath.Join(tmp, "hf")
	mustGoclip(t, "convert", fx, hf)
	if _, _, err := runGoclip(t, "convert", fx, hf); err == nil || !strings.Contains(err.Error(), "--force") {
		t.Errorf("convert into a model folder: %v", err)
	}
}

func TestHelpTextsStayInTheRepository(t *testing.T) {
	for _, c := range newApp().Commands {
		out, _, err := runGoclip(t, c.Name, "--help")
		if err != nil {
			t.Fatalf("%s --help: %v", c.Name, err)
		}
		for _, bad := range []string{"DESIGN.md", "/work/", "1 epochs", "1 steps"} {
			if strings.Contains(out, bad) {
				t.Errorf("goclip %s --help mentions %q", c.Name, bad)
			}
		}
	}
}
