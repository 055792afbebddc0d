package rundir

import (
	"path/filepath"
	"testing"
)

// TestLayout: the paths are DESIGN.md's "Files a run writes", under the folder given.
func TestLayout(t *testing.T) {
	d := Dir(filepath.Join("runs", "a"))
	for got, want := range map[string]string{
		d.Config(): "config.json", d.Args(): "args.json", d.Metrics(): "metrics.jsonl",
		d.Curve(): "learning_curve.png", d.TensorBoard(): "tb", d.Checkpoints(): "checkpoints",
		d.Last(): "checkpoints/last.pt", d.Best(): "checkpoints/best.pt", d.Step(40): "checkpoints/step-40.pt",
		d.Model(): "model", d.ModelConfig(): "model/config.json", d.ModelPT(): "model.pt",
		d.Adapter(): "adapter", d.Card(): "adapter/README.md", d.Tokenizer(): "tokenizer",
		d.Eval(): "eval.json", d.EvalBase(): "eval_base.json", d.Marker(): ".goclip-run",
	} {
		if want := filepath.Join("runs", "a", filepath.FromSlash(want)); got != want {
			t.Errorf("got %s, want %s", got, want)
		}
	}
	if got := filepath.Join(d.Path(), LastPath); got != d.Last() {
		t.Errorf("LastPath gives %s, want %s", got, d.Last())
	}
}

// TestStepOf: step file names parse back to their step; other names and non-canonical
// numbers do not.
func TestStepOf(t *testing.T) {
	for _, s := range []int{0, 7, 120} {
		if n, ok := StepOf(StepFile(s)); !ok || n != s {
			t.Errorf("StepOf(%s) = %d, %v", StepFile(s), n, ok)
		}
	}
	for _, name := range []string{"step-007.pt", "step--1.pt", "step-3.pth", "last.pt", "step-.pt", "step-1e3.pt"} {
		if n, ok := StepOf(name); ok {
			t.Errorf("StepOf(%s) = %d, want no step", name, n)
		}
	}
}
