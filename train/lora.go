package train

import (
	"os"
	"path/filepath"

	"goclip/lora"
)

// AdapterDir is the run folder's PEFT adapter: RUN/adapter/.
const AdapterDir = "adapter"

// FinishLoRA is the Job.Finish of a LoRA run: it writes RUN/adapter/ (peft's files, with
// baseModel as base_model_name_or_path), then merges the adapter into the model and
// writes the merged model as RUN/model/ and RUN/model.pt. The adapter is unloaded
// afterwards (the model is a plain CLIP with the merged weights).
func FinishLoRA(a *lora.Adapter, baseModel, tokenizerDir string) func(run string) error {
	return func(run string) error {
		if err := a.Save(filepath.Join(run, AdapterDir), baseModel); err != nil {
			return err
		}
		m := a.Model()
		if err := a.MergeAndUnload(); err != nil {
			return err
		}
		return SaveModel(run, m, tokenizerDir)
	}
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
