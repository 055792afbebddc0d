package train

// The model card of a LoRA run's adapter folder: RUN/adapter/README.md, as peft's
// save_pretrained writes one (YAML front matter with base_model and library_name,
// then the text), with the LoRA settings, the data and the final evaluation.

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"

	"goclip/internal/atomicfile"
	"goclip/internal/numfmt"
	"goclip/lora"
)

// ModelCard is what the adapter's README.md tells.
type ModelCard struct {
	BaseModel string      // base_model_name_or_path
	Config    lora.Config // the adapter's settings
	Trainable int64       // trainable parameters (the adapter's)
	Total     int64       // all parameters with the adapter
	Data      string      // the training data (folder or description)
	TrainSize int         // training images
	Steps     int         // optimizer steps
	Base      *EvalResult // the base model on the test split (nil: none)
	Final     *EvalResult // the fine-tuned model on the test split (nil: none)
	Command   string      // the command line that trained it
}

// Markdown is the card's text.
func (mc ModelCard) Markdown() string {
	var b strings.Builder
	c := mc.Config
	fmt.Fprintf(&b, "---\nbase_model: %s\nlibrary_name: peft\ntags:\n- clip\n- lora\n- goclip\n---\n\n", yamlString(mc.BaseModel))
	fmt.Fprintf(&b, "# LoRA adapter for %s\n\n", mc.BaseModel)
	fmt.Fprintf(&b, "A LoRA adapter (peft format: `adapter_config.json`, `adapter_model.safetensors`) trained with goclip; load it with `PeftModel.from_pretrained(CLIPModel.from_pretrained(base), this_folder)` or `goclip eval --model BASE --adapter this_folder`.\n\n")
	fmt.Fprintf(&b, "## LoRA settings\n\n")
	targets := strings.Join(c.Targets, ", ")
	if c.TargetRegex != "" {
		targets = "`" + c.TargetRegex + "` (regular expression)"
	}
	fmt.Fprintf(&b, "| setting | value |\n| --- | --- |\n| r | %d |\n| lora_alpha | %g (scaling %g) |\n| lora_dropout | %g |\n| target_modules | %s |\n",
		c.R, c.Alpha, c.Scaling(), c.Dropout, targets)
	if mc.Total > 0 {
		fmt.Fprintf(&b, "| trainable parameters | %s of %s (%.4f%%) |\n", numfmt.Thousands(mc.Trainable), numfmt.Thousands(mc.Total), 100*float64(mc.Trainable)/float64(mc.Total))
	}
	fmt.Fprintf(&b, "\n## Training data\n\n%s: %d training images, %s.\n", mc.Data, mc.TrainSize, Plural(mc.Steps, "optimizer step"))
	if mc.Command != "" {
		fmt.Fprintf(&b, "\n```\n%s\n```\n", mc.Command)
	}
	if mc.Final != nil {
		fmt.Fprintf(&b, "\n## Evaluation (test split)\n\n| model | loss | image→text R@1 | R@5 | R@10 | text→image R@1 | R@5 | R@10 |\n| --- | --- | --- | --- | --- | --- | --- | --- |\n")
		row := func(name string, r *EvalResult) {
			fmt.Fprintf(&b, "| %s | %.4f | %.3f | %.3f | %.3f | %.3f | %.3f | %.3f |\n", name, r.Loss,
				r.ImageToText.R1, r.ImageToText.R5, r.ImageToText.R10, r.TextToImage.R1, r.TextToImage.R5, r.TextToImage.R10)
		}
		if mc.Base != nil {
			row("base", mc.Base)
		}
		row("with this adapter", mc.Final)
		fmt.Fprintf(&b, "\n%d images, %d captions.\n", mc.Final.Images, mc.Final.Captions)
	}
	return b.String()
}

// yamlString quotes s for YAML when it is not a plain scalar.
func yamlString(s string) string {
	if s == "" || strings.ContainsAny(s, ":#'\"{}[],&*!|>%@`") || strings.TrimSpace(s) != s {
		return fmt.Sprintf("%q", s)
	}
	return s
}

// WriteModelCard writes the card as RUN/adapter/README.md. A card without Base takes
// the run's RUN/eval_base.json (EvaluateBase's) when it is there and readable.
func WriteModelCard(run string, mc ModelCard) error {
	rd := RunDir(run)
	if mc.Base == nil {
		var base EvalResult
		if data, err := os.ReadFile(rd.EvalBase()); err == nil && json.Unmarshal(data, &base) == nil {
			mc.Base = &base
		}
	}
	return atomicfile.WriteBytes(rd.Card(), []byte(mc.Markdown()))
}
