package main

import (
	"context"
	"fmt"
	"strings"

	"github.com/urfave/cli/v2"

	"goclip/clip"
	"goclip/lora"
	"goclip/torch"
	"goclip/train"
)

// dryRunFlag is finetune's --dry-run.
var dryRunFlag = &cli.BoolFlag{Name: "dry-run", Usage: "build the model and adapters, print the parameter counts and exit", Category: catOutput}

var finetuneCommand = &cli.Command{
	Name:      "finetune",
	Usage:     "LoRA fine-tuning of a pre-trained CLIP, its base weights frozen",
	UsageText: "goclip finetune --model DIR --data DIR --out RUN [--lora-r 64 --lora-alpha 128 --lora-dropout P --lora-targets q_proj,k_proj,v_proj | --init-adapter DIR] [flags]",
	Description: `Injects LoRA adapters (peft's LoraConfig: rank --lora-r, scaling alpha/r, dropout
on the adapter's input) into the named linear layers of both towers (--lora-towers
vision or text: of one; --lock-image or --lock-text: not of the locked one, whose
modules stay frozen and in evaluation mode), freezes every base weight and trains the
adapters with the loop of goclip train. Before training it
evaluates the model on the test split (RUN/eval_base.json); at the end it writes
RUN/adapter/ (peft's adapter_config.json and adapter_model.safetensors), the merged
model as RUN/model/ and RUN/model.pt, and RUN/eval.json.

--init-adapter DIR starts from an existing adapter instead of a fresh one (to continue a
fine-tune, or to train an adapter that peft made): DIR is an adapter folder
(adapter_config.json and adapter_model.safetensors with peft's key names, as goclip
and peft's save_pretrained write them) or a LoRA run folder (its adapter/). The rank,
alpha and targets are the adapter's; --lora-r, --lora-alpha or --lora-targets given
with other values are an error, --lora-dropout replaces the saved dropout. Weights
that do not fit the model are reported by key with their shapes.

--resume continues the run in --out with the settings of its args.json, as for goclip
train (see goclip train --help).

--dry-run builds the model and the adapters, prints peft's count line and exits (it
needs neither --data nor --out):
   trainable params: 5,898,240 || all params: 155,518,977 || trainable%: 3.7926

Examples:
   goclip finetune --model /data/clip-vit-base-patch16 --data /data/flickr30k --out runs/lora64
   goclip finetune --model runs/demo-base --data runs/demo-data/shifted --out runs/demo-finetune --epochs 5
   goclip finetune --model runs/demo-base --init-adapter runs/demo-finetune --data runs/demo-data/shifted --out runs/demo-finetune-2`,
	Flags: append([]cli.Flag{
		modelFlag, revisionFlag,
		finetuneLoRARFlag, loraAlphaFlag, loraDropoutFlag,
		loraTargetsFlag, loraTowersFlag,
		&cli.PathFlag{Name: initAdapterFlag, Usage: "start from this adapter instead of a fresh one: a peft adapter folder (goclip's or save_pretrained's) or a LoRA run folder; " +
			"r, alpha and targets come from its adapter_config.json", EnvVars: []string{"GOCLIP_INIT_ADAPTER"}, Category: catLoRA},
		dryRunFlag,
		bf16BaseFlag,
	}, trainingFlags(5, 1e-4, 64)...),
	Action: torchAction(runFinetune),
}

// bf16BaseFlag is finetune's and bench's switch of the bf16 base (train.Options.FP32Base).
var bf16BaseFlag = &cli.BoolFlag{Name: "bf16-base", Usage: "LoRA under --precision bf16: keep the frozen base weights in bf16 on the device (the adapters and their optimizer state stay float32; the merged export is float32); =false keeps them float32 and casts them every step",
	Value: true, EnvVars: []string{"GOCLIP_BF16_BASE"}, Category: catLoRA}

// initAdapterFlag names finetune's --init-adapter.
const initAdapterFlag = "init-adapter"

func runFinetune(c *cli.Context) (err error) {
	dryRun := dryRunFlag.Get(c)
	var s *trainSetup
	if !dryRun {
		if s, err = checkTraining(c, true); err != nil {
			return err
		}
		s.opts.FP32Base = !c.Bool(bf16BaseFlag.Name)
		defer func() { s.close(err) }()
	} else if c.NArg() > 0 {
		return fmt.Errorf("finetune takes no arguments (got %q)", c.Args().Slice())
	}
	given := c.String(modelFlag.Name)
	if given == "" {
		return missingFlag("finetune", modelFlag.Name)
	}
	dir, hub, err := resolveModelPath(c, given)
	if err != nil {
		return fmt.Errorf("--model: %w", err)
	}
	baseName := train.BaseModelName(dir)
	if hub {
		baseName = given // peft records a Hub model by its id
	}
	pre, err := clip.FindPretrained(dir, true)
	if err != nil {
		return err
	}
	tok, tokDir := pre.Tokenizer, pre.Source.Tokenizer
	dev := torch.CPU
	if s != nil {
		dev = s.dev // this rank's GPU in a distributed run
		if err := s.checkFresh(); err != nil {
			return err
		}
		if err := s.openData(c); err != nil {
			return err
		}
	} else if dev, err = setupCompute(c); err != nil {
		return err
	}
	m, _, err := pre.Load(dev)
	if err != nil {
		return err
	}
	defer m.Free()
	a, err := finetuneAdapter(c, m)
	if err != nil {
		return err
	}
	total, trainable, err := a.Counts()
	if err != nil {
		return err
	}
	if s == nil || s.main() {
		fmt.Fprintln(c.App.Writer, lora.FormatCounts(total, trainable))
	}
	if dryRun {
		return nil
	}
	job := s.job(m, tok, tokDir)
	job.LoRA = &train.LoRA{Adapter: a, BaseModel: baseName}
	if _, err := train.EvaluateBase(context.Background(), job, s.opts); err != nil {
		return err
	}
	res, err := s.run(c, job)
	if err != nil || !s.main() {
		return err
	}
	card := train.ModelCard{BaseModel: baseName, Config: a.Config, Trainable: trainable, Total: total,
		Data: absIfExists(s.ds.Root), TrainSize: len(job.Train), Steps: res.Steps, Final: res.Test,
		Command: strings.Join(s.args.Argv, " ")}
	return train.WriteModelCard(s.out, card) // with eval_base.json's base evaluation
}

// finetuneAdapter is the adapter to train: --init-adapter's, or a fresh one of the
// --lora-* flags.
func finetuneAdapter(c *cli.Context, m *clip.Model) (*lora.Adapter, error) {
	if dir := c.String(initAdapterFlag); dir != "" {
		var given train.LoRASettings
		if c.IsSet(finetuneLoRARFlag.Name) {
			r := finetuneLoRARFlag.Get(c)
			given.R = &r
		}
		if c.IsSet(loraAlphaFlag.Name) {
			alpha := c.Float64(loraAlphaFlag.Name)
			given.Alpha = &alpha
		}
		if c.IsSet(loraDropoutFlag.Name) {
			p := loraDropoutFlag.Get(c)
			given.Dropout = &p
		}
		if c.IsSet(loraTargetsFlag.Name) {
			given.Targets = splitList(c.String(loraTargetsFlag.Name))
		}
		if c.IsSet(loraTowersFlag.Name) {
			return nil, fmt.Errorf("--lora-towers with --%s: the adapter's own targets decide (leave --lora-towers out; --lock-image or --lock-text freeze its adapters in a tower)", initAdapterFlag)
		}
		return train.InitAdapter(m, dir, given)
	}
	lc, err := loraConfig(c, finetuneLoRARFlag.Get(c))
	if err != nil {
		return nil, err
	}
	torch.ManualSeed(c.Uint64(seedFlag.Name)) // lora_A's draw: the same run from the same --seed
	return lora.Inject(m, lc)
}
