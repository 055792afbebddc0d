// Package rundir is the one owner of a goclip run folder's layout (DESIGN.md, "Files a
// run writes"): every file and folder name of RUN/ is defined here, and Dir has a method
// per file and folder. train writes run folders (train.RunDir is this Dir); clip reads
// them (a run folder as --model); the commands name their files through it.
//
// It is a leaf: it imports nothing of goclip, so every package may use it.
package rundir

import (
	"path/filepath"
	"strconv"
	"strings"
)

// The names of a run folder's files and folders.
const (
	Marker      = ".goclip-run"        // marks a run folder; a running goclip holds it locked
	ConfigFile  = "config.json"        // the HF CLIPConfig of the run's model
	ArgsFile    = "args.json"          // the command line's settings
	MetricsFile = "metrics.jsonl"      // one JSON object per logged step and evaluation
	CurveFile   = "learning_curve.png" // the learning curve drawn from metrics.jsonl
	TensorBoard = "tb"                 // TensorBoard event files of the metrics rows
	Checkpoints = "checkpoints"        // resumable checkpoints
	LastFile    = "last.pt"            // checkpoints/last.pt: the newest checkpoint
	BestFile    = "best.pt"            // checkpoints/best.pt: the lowest validation loss
	ModelDir    = "model"              // the final model, an HF folder
	ModelPT     = "model.pt"           // the final state dict (HF keys)
	AdapterDir  = "adapter"            // a LoRA run's PEFT adapter
	CardFile    = "README.md"          // adapter/README.md: the adapter's model card
	Tokenizer   = "tokenizer"          // a from-scratch run's trained BPE vocabulary
	EvalFile    = "eval.json"          // the final evaluation on the test split
	EvalBase    = "eval_base.json"     // a fine-tune's evaluation of the base model
)

// LastPath is checkpoints/last.pt relative to the run folder.
const LastPath = Checkpoints + "/" + LastFile

// Dir is a run folder's path.
type Dir string

func (d Dir) join(parts ...string) string {
	return filepath.Join(append([]string{string(d)}, parts...)...)
}

// Path is the folder itself.
func (d Dir) Path() string { return string(d) }

// Marker is RUN/.goclip-run.
func (d Dir) Marker() string { return d.join(Marker) }

// Config is RUN/config.json.
func (d Dir) Config() string { return d.join(ConfigFile) }

// Args is RUN/args.json.
func (d Dir) Args() string { return d.join(ArgsFile) }

// Metrics is RUN/metrics.jsonl.
func (d Dir) Metrics() string { return d.join(MetricsFile) }

// Curve is RUN/learning_curve.png.
func (d Dir) Curve() string { return d.join(CurveFile) }

// TensorBoard is RUN/tb/.
func (d Dir) TensorBoard() string { return d.join(TensorBoard) }

// Checkpoints is RUN/checkpoints/.
func (d Dir) Checkpoints() string { return d.join(Checkpoints) }

// Last is RUN/checkpoints/last.pt.
func (d Dir) Last() string { return d.join(Checkpoints, LastFile) }

// Best is RUN/checkpoints/best.pt.
func (d Dir) Best() string { return d.join(Checkpoints, BestFile) }

// Step is RUN/checkpoints/step-N.pt, the checkpoint kept at step.
func (d Dir) Step(step int) string { return d.join(Checkpoints, StepFile(step)) }

// Model is RUN/model/.
func (d Dir) Model() string { return d.join(ModelDir) }

// ModelConfig is RUN/model/config.json.
func (d Dir) ModelConfig() string { return d.join(ModelDir, ConfigFile) }

// ModelPT is RUN/model.pt.
func (d Dir) ModelPT() string { return d.join(ModelPT) }

// Adapter is RUN/adapter/.
func (d Dir) Adapter() string { return d.join(AdapterDir) }

// Card is RUN/adapter/README.md.
func (d Dir) Card() string { return d.join(AdapterDir, CardFile) }

// Tokenizer is RUN/tokenizer/.
func (d Dir) Tokenizer() string { return d.join(Tokenizer) }

// Eval is RUN/eval.json.
func (d Dir) Eval() string { return d.join(EvalFile) }

// EvalBase is RUN/eval_base.json.
func (d Dir) EvalBase() string { return d.join(EvalBase) }

// Folders are the folders of a run that goclip writes files into: the run folder
// itself first.
func (d Dir) Folders() []string {
	return []string{d.Path(), d.Checkpoints(), d.Model(), d.Adapter(), d.Tokenizer(), d.TensorBoard()}
}

// StepFile is the file name of the checkpoint kept at step: step-N.pt.
func StepFile(step int) string { return "step-" + strconv.Itoa(step) + ".pt" }

// StepOf parses a StepFile name.
func StepOf(name string) (int, bool) {
	s, ok := strings.CutPrefix(name, "step-")
	if !ok {
		return 0, false
	}
	s, ok = strings.CutSuffix(s, ".pt")
	if !ok {
		return 0, false
	}
	n, err := strconv.Atoi(s)
	return n, err == nil && n >= 0 && strconv.Itoa(n) == s
}
