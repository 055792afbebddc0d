package train

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"goclip/clip"
	"goclip/internal/atomicfile"
	"goclip/internal/rundir"
	"goclip/lora"
)

// AdapterDir is the run folder's PEFT adapter: RUN/adapter/ (see RunDir).
const AdapterDir = rundir.AdapterDir

// LoRA is a LoRA run, one value: the adapter injected into Job.Model (lora.Inject,
// InitAdapter) and the base model it records. From it the trainer derives the trained
// parameters (the adapter's, Adapter.Trainable), the checkpoint's contents (its
// tensors under "adapter" instead of "model") and the export (see export).
type LoRA struct {
	Adapter *lora.Adapter
	// BaseModel is adapter_config.json's base_model_name_or_path (BaseModelName).
	BaseModel string
}

// export writes RUN/adapter/ (peft's files), then merges the adapter into the model and
// writes the merged model as RUN/model/ (with the tokenizer of tokenizerDir) and
// RUN/model.pt, RUN/model/config.json recording the adapter as merged
// (lora.MarkMerged). The adapter is unloaded afterwards (the model is a plain CLIP with
// the merged weights).
func (l *LoRA) export(run, tokenizerDir string) error {
	a, rd := l.Adapter, RunDir(run)
	if err := a.Save(rd.Adapter(), l.BaseModel); err != nil {
		return err
	}
	// model/config.json records what is merged into it (the base's own record first),
	// so that the adapter is never applied to it again.
	merged, err := lora.MergedInto(l.BaseModel)
	if err != nil {
		return err
	}
	entry, err := a.MergedEntry(rd.Adapter())
	if err != nil {
		return err
	}
	m := a.Model()
	if err := a.MergeAndUnload(); err != nil {
		return err
	}
	if err := SaveModel(run, m, tokenizerDir); err != nil {
		return err
	}
	return lora.MarkMerged(rd.ModelConfig(), append(merged, entry))
}

// EvaluateBase is a fine-tune's baseline: job.Model, before training, evaluated on
// job.Test into RUN/eval_base.json (RUN is opts.Out), with the run's evaluation
// settings. A run folder that holds eval_base.json already (a resumed run) or a job
// without a test split evaluates nothing and returns nil. In a distributed run every
// rank takes part (each decides from the same file, which rank 0 writes only after the
// evaluation all of them run; the ranks' base weights are equal, read from one file);
// rank 0 reports to opts.Log and writes.
func EvaluateBase(ctx context.Context, job Job, opts Options) (*EvalResult, error) {
	opts.defaults()
	path := RunDir(opts.Out).EvalBase()
	if _, err := os.Stat(path); err == nil || len(job.Test) == 0 {
		return nil, nil
	}
	main := IsMainRank(opts.ProcessGroup)
	if !main {
		opts.Log = nil // the main process reports the pass
	}
	fmt.Fprintf(logw(opts), "evaluating the base model on the test split (%d images)\n", len(job.Test))
	task := NewTask(opts.Log, "base evaluation", "item")
	ev, err := Evaluate(ctx, job.Model, job.Tokenizer, job.Test, opts.EvalOptions(opts.Report, task.Update))
	task.Done()
	if err != nil {
		return nil, fmt.Errorf("base evaluation: %w", err)
	}
	if !main {
		return &ev, nil
	}
	fmt.Fprintf(logw(opts), "base: %s\n", ev)
	if err := os.MkdirAll(opts.Out, 0o755); err != nil {
		return nil, err
	}
	if err := atomicfile.WriteJSON(path, ev); err != nil {
		return nil, fmt.Errorf("writing %s: %w", path, err)
	}
	return &ev, nil
}

// absPath is path made absolute when possible (for adapter_config.json).
func absPath(path string) string {
	if a, err := filepath.Abs(path); err == nil {
		if _, err := os.Stat(a); err == nil {
			return a
		}
	}
	return path
}

// BaseModelName is what a LoRA run records as its base model: the --model path as given
// when it is not a local folder (a hub name), else its absolute path.
func BaseModelName(path string) string { return absPath(path) }

// LoRASettings are the LoRA settings a command line gave explicitly (--lora-r,
// --lora-alpha, --lora-dropout, --lora-targets); nil means not given.
type LoRASettings struct {
	R       *int
	Alpha   *float64
	Dropout *float64
	Targets []string
}

// AdapterFolder finds the peft adapter folder that dir names: dir itself when it holds
// adapter_config.json (goclip's adapter/, or peft's save_pretrained folder), or a
// LoRA run folder's adapter/.
func AdapterFolder(dir string) (string, error) {
	for _, d := range []string{dir, RunDir(dir).Adapter()} {
		if st, err := os.Stat(filepath.Join(d, lora.ConfigFile)); err == nil && st.Mode().IsRegular() {
			return d, nil
		}
	}
	if _, err := os.Stat(dir); err != nil {
		return "", fmt.Errorf("adapter: %w", err)
	}
	return "", fmt.Errorf("adapter %s: no %s there nor in %s (want a peft adapter folder or a LoRA run folder)",
		dir, lora.ConfigFile, RunDir(dir).Adapter())
}

// InitAdapter injects the adapter that dir holds (see AdapterFolder) into m with its
// weights, to train it further: a LoRA run that starts from it instead of a fresh
// adapter. Its rank, alpha and targets (and layers, rsLoRA, modules_to_save) are those
// of its adapter_config.json; a setting of given that disagrees is an error naming both
// values. given.Dropout, a training setting that does not change what the adapter
// computes, replaces the saved lora_dropout. Weights that do not fit are reported by
// key with their shapes (see lora.Adapter.LoadStateDict), and m is left as it was. The
// model is left in training mode.
func InitAdapter(m *clip.Model, dir string, given LoRASettings) (*lora.Adapter, error) {
	folder, err := AdapterFolder(dir)
	if err != nil {
		return nil, err
	}
	cfg, _, err := lora.ReadConfig(folder)
	if err != nil {
		return nil, err
	}
	file := filepath.Join(folder, lora.ConfigFile)
	var errs []string
	if given.R != nil && *given.R != cfg.R {
		errs = append(errs, fmt.Sprintf("--lora-r %d, but the adapter has r %d", *given.R, cfg.R))
	}
	if given.Alpha != nil && *given.Alpha != cfg.Alpha {
		errs = append(errs, fmt.Sprintf("--lora-alpha %g, but the adapter has lora_alpha %g", *given.Alpha, cfg.Alpha))
	}
	if given.Targets != nil {
		saved := "a regular expression " + strconv.Quote(cfg.TargetRegex)
		if cfg.TargetRegex == "" {
			saved = strings.Join(sortedSet(cfg.Targets), ",")
		}
		if cfg.TargetRegex != "" || !slices.Equal(sortedSet(given.Targets), sortedSet(cfg.Targets)) {
			errs = append(errs, fmt.Sprintf("--lora-targets %s, but the adapter's target_modules are %s",
				strings.Join(given.Targets, ","), saved))
		}
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("--init-adapter %s: %s (its settings come from %s: leave those flags out)",
			dir, strings.Join(errs, "; "), file)
	}
	if given.Dropout != nil {
		cfg.Dropout = *given.Dropout
		if err := cfg.Validate(); err != nil {
			return nil, fmt.Errorf("--lora-dropout: %w", err)
		}
	}
	a, err := lora.LoadAs(folder, m, cfg)
	if err != nil {
		return nil, fmt.Errorf("--init-adapter: %w", err)
	}
	m.SetTrain(true)
	return a, nil
}

// sortedSet is names sorted, without repeats.
func sortedSet(names []string) []string {
	s := slices.Clone(names)
	slices.Sort(s)
	return slices.Compact(s)
}
