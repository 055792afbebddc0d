package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/urfave/cli/v2"

	"goclip/clip"
	"goclip/internal/atomicfile"
	"goclip/internal/numfmt"
	"goclip/lora"
	"goclip/torch"
)

// The flags of goclip convert.
var (
	convertConfigFlag = &cli.StringFlag{Name: "config", Usage: "architecture for a SRC without config.json: a preset (" +
		strings.Join(clip.PresetNames(), ", ") + "), an HF config.json or an open_clip model config JSON", EnvVars: []string{"GOCLIP_CONVERT_CONFIG"}, Category: catModel}
	dtypeFlag          = &cli.StringFlag{Name: "dtype", EnvVars: []string{"GOCLIP_CONVERT_DTYPE"}, Usage: "dtype of the written weights: float32, float16 or bfloat16", Value: "float32", Category: catOutput}
	formatFlag         = &cli.StringFlag{Name: "format", EnvVars: []string{"GOCLIP_CONVERT_FORMAT"}, Usage: "key layout of DST: hf (CLIPModel's keys) or open_clip (OpenAI's and open_clip's keys; a folder DST is an open_clip model folder)", Value: string(clip.LayoutHF), Category: catOutput}
	convertAdapterFlag = &cli.PathFlag{Name: "adapter", Usage: "a peft LoRA adapter folder, or a LoRA run folder (its adapter/), to merge into SRC (with --merge)", Category: catLoRA}
	mergeFlag          = &cli.BoolFlag{Name: "merge", Usage: "merge --adapter into the weights and write the merged model", Category: catLoRA}
	convertForceFlag   = &cli.BoolFlag{Name: "force", Usage: "overwrite an existing DST", EnvVars: []string{"GOCLIP_CONVERT_FORCE"}, Category: catOutput}
	// convertForceAdapterFlag is eval's and embed's --force-adapter (forceAdapterFlag),
	// without its second name --force, which is convert's own.
	convertForceAdapterFlag = &cli.BoolFlag{Name: forceAdapterFlag.Name, Usage: "merge --adapter even when its base fingerprint differs from SRC's, or SRC records it as merged already", Category: catLoRA}
)

var convertCommand = &cli.Command{
	Name:      "convert",
	Usage:     "convert a CLIP checkpoint between HF folders, .safetensors and .pt files, HF and open_clip keys",
	ArgsUsage: "SRC DST",
	Description: `Reads the CLIP weights of SRC, checks them against the architecture (every
missing, unexpected or mis-shaped key is reported at once, by name) and writes them to
DST. Formats are chosen by path:

  SRC  an HF model folder (config.json + model.safetensors, a sharded
       model.safetensors.index.json, or pytorch_model.bin), a goclip run folder
       (RUN/model/, else RUN/checkpoints/last.pt), or a file: .safetensors,
       .pt/.bin/.pth (torch.save), model.safetensors.index.json
  DST  a .safetensors file, a .pt/.bin/.pth file (opens with
       torch.load(path, weights_only=True)), or anything else: an HF model folder
       (config.json, model.safetensors, and the tokenizer files found beside SRC)

SRC may also be a Hugging Face model id (openai/clip-vit-base-patch16) held in the
local Hub cache ($HF_HUB_CACHE, $HF_HOME/hub or ~/.cache/huggingface/hub), at
--revision. An existing DST is not overwritten unless --force is given.

The architecture comes from SRC's config.json (or the one beside a file); --config
gives it where there is none, e.g. for a bare .pt, as a preset name or a config.json
path. Keys are HF CLIPModel's; *.position_ids buffers are dropped. Floating-point
weights are written in --dtype (default float32).

OpenAI / open_clip checkpoints (keys visual.conv1.weight, visual.proj,
transformer.resblocks.N.attn.in_proj_weight, text_projection, ...; a bare state dict or
{"state_dict": ...}, with or without "module." prefixes; .pt, .bin or .safetensors) are
read as such, found by their keys, as is an open_clip model folder (open_clip_config.json
with open_clip_model.safetensors or open_clip_pytorch_model.bin, as open_clip's hub
repositories hold it). The architecture is that of --config (which also takes an open_clip
model config JSON, e.g. open_clip's model_configs/ViT-B-16-quickgelu.json), else of the
open_clip_config.json or config.json beside the weights, else inferred from the shapes,
with width/64 heads and hidden_act gelu (open_clip's default): the weights do not say
which activation they were trained with, and OpenAI's weights (and open_clip's
*-quickgelu models) need quick_gelu, e.g. --config vit-b-16. OpenAI's own downloads
(TorchScript archives) are no state dicts: save open_clip's model.state_dict() of them.

--format open_clip writes DST in that layout: a .pt/.bin/.pth or .safetensors file
(a bare state dict, which open_clip's CLIP.load_state_dict takes), or else a folder that
open_clip.create_model("local-dir:DST") opens (open_clip_config.json,
open_clip_model.safetensors and the tokenizer files). --format hf (the default) writes
CLIPModel's keys.

--adapter DIR --merge applies a LoRA adapter (a peft adapter folder: adapter_config.json
and adapter_model.safetensors or adapter_model.bin, e.g. RUN/adapter) to SRC, which must
be the base model the adapter was trained on, and writes the merged model
(W + scaling * B @ A in each adapted layer) with HF keys only. An adapter goclip
wrote carries a fingerprint of its base weights: SRC with other weights (another
model, or a model that already holds the adapter merged) is an error; --force-adapter
overrides (--force only overwrites DST). A merged folder's config.json records the
adapters merged into it (goclip_merged_adapters).

Examples:
   goclip convert openai/clip-vit-base-patch16 clip-b16.pt
   goclip convert model.pt my-model/ --config vit-b-16
   goclip convert runs/demo-base demo-base.safetensors --dtype bfloat16
   goclip convert open_clip_pytorch_model.bin clip-b16/ --config vit-b-16
   goclip convert --format open_clip clip-b16/ open_clip_model.safetensors
   goclip convert --adapter runs/demo-finetune/adapter --merge runs/demo-base merged/`,
	Flags: []cli.Flag{
		convertConfigFlag, dtypeFlag, formatFlag, convertAdapterFlag, revisionFlag, mergeFlag,
		convertForceFlag, convertForceAdapterFlag,
	},
	Action: torchAction(runConvert),
}

// weightFileExts are the DST extensions written as a single file; any other DST is a
// folder.
var weightFileExts = map[string]bool{".safetensors": true, ".pt": true, ".bin": true, ".pth": true}

func runConvert(c *cli.Context) error {
	if c.NArg() != 2 {
		return fmt.Errorf("convert takes SRC and DST, got %d argument(s); see goclip convert --help", c.NArg())
	}
	srcPath, dst := c.Args().Get(0), c.Args().Get(1)
	dtype, err := parseDType(dtypeFlag.Get(c))
	if err != nil {
		return err
	}
	adapter := convertAdapterFlag.Get(c)
	if (adapter != "") != mergeFlag.Get(c) {
		return errors.New("--adapter DIR and --merge go together: convert writes the merged model")
	}
	format, err := clip.ParseLayout(formatFlag.Get(c))
	if err != nil {
		return fmt.Errorf("--format: %w", err)
	}
	if adapter != "" {
		if adapter, err = adapterPath(adapter); err != nil {
			return err
		}
	}
	ext := strings.ToLower(filepath.Ext(dst))
	toFile := weightFileExts[ext]
	if !toFile && ext != "" {
		if st, err := os.Stat(dst); err != nil || !st.IsDir() {
			return fmt.Errorf("DST %s: unknown format %q (want a folder, .safetensors, .pt, .bin or .pth)", dst, ext)
		}
	}

	srcDir, _, err := resolveModelPath(c, srcPath)
	if err != nil {
		return fmt.Errorf("SRC: %w", err)
	}
	src, err := clip.FindAnyCheckpoint(srcDir)
	if err != nil {
		return err
	}
	var arch *clip.Config // nil: SRC's config.json, or inferred from open_clip shapes
	if name := convertConfigFlag.Get(c); name != "" {
		load := loadArchitecture
		if clip.IsOpenCLIPConfigFile(name) {
			load = clip.LoadOpenCLIPConfig
		}
		cfg, err := load(name)
		if err != nil {
			return err
		}
		arch = &cfg
	}
	if samePath(src, dst) {
		return errors.New("SRC and DST are the same file")
	}
	if err := checkDestination(dst, toFile, convertForceFlag.Get(c)); err != nil {
		return err
	}
	if err := sweepConvertTemps(c, dst, toFile); err != nil {
		return err
	}
	merged, err := lora.MergedInto(srcDir) // what SRC records as merged into it
	if err != nil {
		return err
	}
	m, cfg, layout, err := src.LoadAnyLayout(arch, torch.CPU, torch.Float32)
	if errors.Is(err, clip.ErrArchitectureUnknown) {
		return fmt.Errorf("%w: give it with --config NAME|FILE", err)
	} else if err != nil {
		return err
	}
	defer m.Free()
	if layout == clip.LayoutOpenCLIP && arch == nil && src.Config == "" {
		fmt.Fprintf(c.App.ErrWriter, "open_clip state dict: architecture inferred from the shapes, hidden_act %s (OpenAI's weights need quick_gelu: give --config)\n", cfg.Text.HiddenAct)
	}
	if adapter != "" {
		a, err := lora.LoadWith(adapter, m, adapterChecks(c, srcDir))
		if err != nil {
			return err
		}
		entry, err := a.MergedEntry(adapter)
		if err != nil {
			return err
		}
		merged = append(merged, entry)
		if err := a.MergeAndUnload(); err != nil {
			return err
		}
	}

	switch {
	case format == clip.LayoutOpenCLIP && toFile:
		err = clip.SaveOpenCLIP(dst, m, dtype)
	case format == clip.LayoutOpenCLIP:
		err = clip.SaveOpenCLIPFolder(dst, m, dtype, src.Tokenizer)
	case toFile:
		err = clip.SaveWeights(dst, m, dtype)
	default:
		if err = clip.SaveHFAs(dst, m, cfg, src.Tokenizer, dtype); err == nil {
			err = lora.MarkMerged(filepath.Join(dst, clip.ConfigFile), merged)
		}
	}
	if err != nil {
		return err
	}
	total, _ := clip.ParamCount(cfg) // cfg was validated when the model was built
	fmt.Fprintf(c.App.ErrWriter, "converted %s -> %s (%s parameters, %s)\n", srcPath, dst, numfmt.Thousands(total), dtype)
	return nil
}

// checkDestination refuses to overwrite an existing DST without --force: a file, or a
// folder that already holds model files.
func checkDestination(dst string, toFile, force bool) error {
	if force {
		return nil
	}
	st, err := os.Stat(dst)
	if err != nil {
		return nil
	}
	if toFile || !st.IsDir() {
		return fmt.Errorf("DST %s exists: give --force to overwrite it", dst)
	}
	for _, name := range []string{clip.ConfigFile, "model.safetensors", clip.OpenCLIPConfigFile, clip.OpenCLIPSafetensorsFile} {
		if _, err := os.Stat(filepath.Join(dst, name)); err == nil {
			return fmt.Errorf("DST %s already holds a model (%s): give --force to overwrite it", dst, name)
		}
	}
	return nil
}

// samePath reports whether dst is one of src's weight files.
func samePath(src clip.Source, dst string) bool {
	d, err := os.Stat(dst)
	if err != nil {
		return false
	}
	for _, w := range src.Weights {
		if s, err := os.Stat(w); err == nil && os.SameFile(s, d) {
			return true
		}
	}
	return false
}

// sweepConvertTemps removes what an interrupted convert to dst left: the temporary
// file of a DST file, or the temporary folder and files of a DST folder, when the
// process that wrote them is gone.
func sweepConvertTemps(c *cli.Context, dst string, toFile bool) error {
	dst = filepath.Clean(dst)
	removed, err := atomicfile.RemoveStale(filepath.Dir(dst), false, filepath.Base(dst))
	if err == nil && !toFile {
		var inside []string
		inside, err = atomicfile.RemoveStale(dst, false)
		removed = append(removed, inside...)
	}
	if err != nil {
		return fmt.Errorf("DST %s: removing temporary files of an interrupted convert: %w", dst, err)
	}
	if len(removed) > 0 {
		fmt.Fprintf(c.App.ErrWriter, "removed %d temporary file(s) of an interrupted convert: %s\n", len(removed), strings.Join(removed, ", "))
	}
	return nil
}
