package clip

// open_clip's model configs (its model_configs/*.json, and the "model_cfg" of an
// open_clip_config.json) and open_clip model folders (what open_clip's push_to_hf_hub
// writes and create_model("local-dir:DIR") / ("hf-hub:...") reads: open_clip_config.json
// beside open_clip_model.safetensors or open_clip_pytorch_model.bin).

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"goclip/internal/atomicfile"
	"goclip/torch"
)

// File names of an open_clip model folder.
const (
	OpenCLIPConfigFile      = "open_clip_config.json"
	OpenCLIPSafetensorsFile = "open_clip_model.safetensors"
)

// openCLIPWeightFiles are the weight files of an open_clip folder in open_clip's order
// of preference (factory._find_checkpoint_in_dir).
var openCLIPWeightFiles = []string{OpenCLIPSafetensorsFile, "open_clip_pytorch_model.safetensors",
	"open_clip_pytorch_model.bin", "open_clip_pytorch_model.pth"}

// ocVision and ocText are the fields of open_clip's CLIPVisionCfg and CLIPTextCfg that
// set a ViT CLIP's shape.
type ocVision struct {
	ImageSize int64   `json:"image_size"`
	Layers    int64   `json:"layers"`
	Width     int64   `json:"width"`
	HeadWidth int64   `json:"head_width"`
	MLPRatio  float64 `json:"mlp_ratio"`
	PatchSize int64   `json:"patch_size"`
}

type ocText struct {
	ContextLength int64   `json:"context_length"`
	VocabSize     int64   `json:"vocab_size"`
	Width         int64   `json:"width"`
	Heads         int64   `json:"heads"`
	Layers        int64   `json:"layers"`
	MLPRatio      float64 `json:"mlp_ratio"`
	PoolType      string  `json:"pool_type,omitempty"`
	EOSID         int64   `json:"eos_id,omitempty"`
}

// ocNeutral are the other fields of open_clip's tower configs that goclip accepts, with
// the values that leave the model CLIP's: anything else changes the architecture (layer
// scale, attentional pooling, a timm or HF tower, ...) and is rejected. Fields that only
// matter in training or to the tokenizer take any value.
var ocNeutral = map[string][]string{
	"patch_dropout": nil, "output_tokens": nil, "final_ln_after_pool": nil, // training only; or the same for one pooled token
	"hf_tokenizer_name": nil, "tokenizer_mode": nil, "tokenizer_kwargs": nil, "pad_id": nil,
	"ls_init_value": {"null"}, "attentional_pool": {"false"}, "attn_pooler_queries": nil, "attn_pooler_heads": nil,
	"no_ln_pre": {"false"}, "pos_embed_type": {`"learnable"`}, "pool_type": {`"tok"`},
	"act_kwargs": {"null", "{}"}, "norm_kwargs": {"null", "{}"}, "block_type": {"null", `"default"`},
	"qk_norm": {"false"}, "scaled_cosine_attn": {"false"}, "scale_heads": {"false"}, "scale_attn_inner": {"false"},
	"scale_attn": {"false"}, "scale_fc": {"false"}, "timm_model_name": {"null"}, "timm_model_pretrained": nil,
	"timm_pool": nil, "timm_proj": nil, "timm_proj_bias": nil, "timm_drop": nil, "timm_drop_path": nil,
	"embed_cls": {"false"}, "no_causal_mask": {"false"}, "proj_bias": {"false"}, "proj_type": {`"linear"`},
	"hf_model_name": {"null"}, "hf_model_pretrained": nil, "hf_proj_type": nil, "hf_pooler_type": nil,
}

// ocTextKnown and ocVisionKnown are the fields ocText and ocVision decode.
var (
	ocVisionKnown = []string{"image_size", "layers", "width", "head_width", "mlp_ratio", "patch_size"}
	ocTextKnown   = []string{"context_length", "vocab_size", "width", "heads", "layers", "mlp_ratio", "pool_type", "eos_id"}
)

// checkNeutral names every field of a tower config that is neither decoded nor neutral.
func checkNeutral(tower string, fields map[string]json.RawMessage, known []string) []string {
	var bad []string
	for k, v := range fields {
		if slices.Contains(known, k) {
			continue
		}
		allowed, ok := ocNeutral[k]
		if !ok || (allowed != nil && !slices.Contains(allowed, string(bytes.TrimSpace(v)))) {
			bad = append(bad, fmt.Sprintf("%s.%s = %s", tower, k, compactJSON(v)))
		}
	}
	sort.Strings(bad)
	return bad
}

// compactJSON is a JSON value on one line, cut to 80 bytes.
func compactJSON(v json.RawMessage) string {
	var b bytes.Buffer
	if json.Compact(&b, v) != nil {
		return string(v)
	}
	if s := b.String(); len(s) > 80 {
		return s[:77] + "..."
	}
	return b.String()
}

// ParseOpenCLIPConfig reads an open_clip model config: the JSON of open_clip's
// model_configs/NAME.json ({"embed_dim", "quick_gelu", "vision_cfg", "text_cfg"}) or an
// open_clip_config.json holding one under "model_cfg". It gives the HF config of the
// same model: heads width / head_width (default 64) in the vision tower and text_cfg's
// heads in the text tower, MLP widths width * mlp_ratio (default 4), hidden_act
// quick_gelu when quick_gelu is true and gelu otherwise, text pooling at argmax(ids)
// (eos_token_id 2) or, for pool_type "eos", at the first eos_id. Fields that make
// another architecture (layer scale, attentional pooling, timm or HF towers, a custom
// text tower, ...) are all named in one error.
func ParseOpenCLIPConfig(data []byte) (Config, error) {
	var top map[string]json.RawMessage
	if err := json.Unmarshal(data, &top); err != nil {
		return Config{}, fmt.Errorf("open_clip config: %w", err)
	}
	if inner, ok := top["model_cfg"]; ok {
		top = nil
		if err := json.Unmarshal(inner, &top); err != nil {
			return Config{}, fmt.Errorf("open_clip config: model_cfg: %w", err)
		}
	}
	var bad []string
	var m struct {
		EmbedDim   int64 `json:"embed_dim"`
		QuickGELU  bool  `json:"quick_gelu"`
		CustomText bool  `json:"custom_text"`
	}
	var vf, tf map[string]json.RawMessage
	for k, v := range top {
		var err error
		switch k {
		case "embed_dim":
			err = json.Unmarshal(v, &m.EmbedDim)
		case "quick_gelu":
			err = json.Unmarshal(v, &m.QuickGELU)
		case "custom_text":
			if err = json.Unmarshal(v, &m.CustomText); err == nil && m.CustomText {
				bad = append(bad, "custom_text = true (its text tower's keys are text.*)")
			}
		case "vision_cfg":
			err = json.Unmarshal(v, &vf)
		case "text_cfg":
			err = json.Unmarshal(v, &tf)
		case "init_logit_scale", "cast_dtype", "output_dict": // initialisation and runtime only
		default: // init_logit_bias (SigLIP), multimodal_cfg (CoCa), ...
			bad = append(bad, fmt.Sprintf("%s = %s", k, compactJSON(v)))
		}
		if err != nil {
			bad = append(bad, fmt.Sprintf("%s: %v", k, err))
		}
	}
	if vf == nil || tf == nil || m.EmbedDim == 0 {
		bad = append(bad, "embed_dim, vision_cfg and text_cfg are required")
	}
	v := ocVision{ImageSize: 224, Layers: 12, Width: 768, HeadWidth: 64, MLPRatio: 4, PatchSize: 16}
	t := ocText{ContextLength: 77, VocabSize: 49408, Width: 512, Heads: 8, Layers: 12, MLPRatio: 4, PoolType: "argmax", EOSID: 2}
	decode := func(name string, fields map[string]json.RawMessage, known []string, into any) {
		bad = append(bad, checkNeutral(name, fields, known)...)
		sub := map[string]json.RawMessage{}
		for _, k := range known {
			if raw, ok := fields[k]; ok {
				sub[k] = raw
			}
		}
		b, _ := json.Marshal(sub)
		if err := json.Unmarshal(b, into); err != nil {
			bad = append(bad, fmt.Sprintf("%s: %v (layers as a list is a ResNet, image_size as a pair a non-square image: neither is supported)", name, err))
		}
	}
	decode("vision_cfg", vf, ocVisionKnown, &v)
	decode("text_cfg", tf, ocTextKnown, &t)
	if t.PoolType != "argmax" && t.PoolType != "eos" {
		bad = append(bad, fmt.Sprintf("text_cfg.pool_type = %q (want argmax or eos)", t.PoolType))
	}
	if t.PoolType == "eos" && t.EOSID == 2 {
		bad = append(bad, "text_cfg.pool_type eos with eos_id 2: HF's config reads eos_token_id 2 as argmax pooling")
	}
	mlp := func(name string, width int64, ratio float64) int64 {
		i := int64(float64(width) * ratio) // open_clip: int(width * mlp_ratio)
		if i <= 0 {
			bad = append(bad, fmt.Sprintf("%s.mlp_ratio %g gives an MLP width of %d", name, ratio, i))
		}
		return i
	}
	if v.HeadWidth <= 0 || v.Width%v.HeadWidth != 0 {
		bad = append(bad, fmt.Sprintf("vision_cfg.width %d is not a multiple of head_width %d", v.Width, v.HeadWidth))
		v.HeadWidth = 1
	}

	c := DefaultConfig()
	act := "gelu"
	if m.QuickGELU {
		act = "quick_gelu"
	}
	c.ProjectionDim = m.EmbedDim
	c.Vision.HiddenSize, c.Vision.IntermediateSize = v.Width, mlp("vision_cfg", v.Width, v.MLPRatio)
	c.Vision.NumHiddenLayers, c.Vision.NumAttentionHeads = v.Layers, v.Width/v.HeadWidth
	c.Vision.ImageSize, c.Vision.PatchSize, c.Vision.HiddenAct = v.ImageSize, v.PatchSize, act
	c.Text.VocabSize, c.Text.HiddenSize, c.Text.IntermediateSize = t.VocabSize, t.Width, mlp("text_cfg", t.Width, t.MLPRatio)
	c.Text.NumHiddenLayers, c.Text.NumAttentionHeads, c.Text.MaxPositionEmbeddings = t.Layers, t.Heads, t.ContextLength
	c.Text.HiddenAct = act
	c.Text.EOSTokenID, c.Text.BOSTokenID, c.Text.PadTokenID = 2, 0, 1
	if t.PoolType == "eos" {
		c.Text.EOSTokenID, c.Text.BOSTokenID = t.EOSID, 49406
	}
	c.Text.ProjectionDim, c.Vision.ProjectionDim = c.ProjectionDim, c.ProjectionDim
	if len(bad) > 0 {
		sort.Strings(bad)
		return Config{}, fmt.Errorf("open_clip config: not a model goclip runs: %s", strings.Join(bad, "; "))
	}
	if err := c.Validate(); err != nil {
		return Config{}, fmt.Errorf("open_clip config: %w", err)
	}
	return c, nil
}

// LoadOpenCLIPConfig reads an open_clip model config file (see ParseOpenCLIPConfig).
func LoadOpenCLIPConfig(path string) (Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Config{}, err
	}
	c, err := ParseOpenCLIPConfig(data)
	if err != nil {
		return Config{}, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

// IsOpenCLIPConfigFile reports whether path is a JSON file holding an open_clip model
// config (embed_dim, vision_cfg and text_cfg, at the top or under model_cfg) rather
// than an HF config.json.
func IsOpenCLIPConfigFile(path string) bool {
	data, err := os.ReadFile(path)
	if err != nil {
		return false
	}
	var top map[string]json.RawMessage
	if json.Unmarshal(data, &top) != nil {
		return false
	}
	if inner, ok := top["model_cfg"]; ok && json.Unmarshal(inner, &top) != nil {
		return false
	}
	_, v := top["vision_cfg"]
	_, t := top["text_cfg"]
	return v && t
}

// OpenCLIPModelConfig is the open_clip model config of cfg, as ParseOpenCLIPConfig
// reads it back. A config open_clip's CLIP cannot express is an error naming the
// fields: towers with different activations or one other than gelu and quick_gelu,
// layer_norm_eps other than 1e-5, vision heads not dividing the width, MLP widths that
// are not width * a ratio open_clip rounds back.
func OpenCLIPModelConfig(cfg Config) (map[string]any, error) {
	var bad []string
	v, t := cfg.Vision, cfg.Text
	if v.HiddenAct != t.HiddenAct || (v.HiddenAct != "gelu" && v.HiddenAct != "quick_gelu") {
		bad = append(bad, fmt.Sprintf("hidden_act %q and %q (open_clip has gelu or quick_gelu, the same in both towers)", v.HiddenAct, t.HiddenAct))
	}
	if v.LayerNormEps != 1e-5 || t.LayerNormEps != 1e-5 {
		bad = append(bad, fmt.Sprintf("layer_norm_eps %g and %g (open_clip's is 1e-5)", v.LayerNormEps, t.LayerNormEps))
	}
	ratio := func(name string, width, inner int64) float64 {
		r := float64(inner) / float64(width)
		if int64(float64(width)*r) != inner {
			bad = append(bad, fmt.Sprintf("%s.intermediate_size %d is not int(%d * mlp_ratio) for any float mlp_ratio", name, inner, width))
		}
		return r
	}
	vr, tr := ratio("vision_config", v.HiddenSize, v.IntermediateSize), ratio("text_config", t.HiddenSize, t.IntermediateSize)
	if v.NumChannels != 3 {
		bad = append(bad, fmt.Sprintf("vision_config.num_channels %d (open_clip's is 3)", v.NumChannels))
	}
	text := map[string]any{"context_length": t.MaxPositionEmbeddings, "vocab_size": t.VocabSize, "width": t.HiddenSize,
		"heads": t.NumAttentionHeads, "layers": t.NumHiddenLayers, "mlp_ratio": tr}
	if t.EOSTokenID != 2 {
		text["pool_type"], text["eos_id"] = "eos", t.EOSTokenID
	}
	if len(bad) > 0 {
		return nil, fmt.Errorf("config not expressible as an open_clip model config: %s", strings.Join(bad, "; "))
	}
	return map[string]any{
		"embed_dim":  cfg.ProjectionDim,
		"quick_gelu": v.HiddenAct == "quick_gelu",
		"vision_cfg": map[string]any{"image_size": v.ImageSize, "layers": v.NumHiddenLayers, "width": v.HiddenSize,
			"head_width": v.HiddenSize / v.NumAttentionHeads, "mlp_ratio": vr, "patch_size": v.PatchSize},
		"text_cfg": text,
	}, nil
}

// FindAnyCheckpoint is FindCheckpoint that also finds open_clip model folders (an
// open_clip_config.json with open_clip_model.safetensors, open_clip_pytorch_model.bin,
// ...: the Source's Config is then the open_clip_config.json, which LoadAnyLayout
// reads), and that takes the open_clip_config.json beside a weights file with no
// config.json beside it. An HF folder that also holds open_clip files is found as HF.
func FindAnyCheckpoint(path string) (Source, error) {
	s, err := FindCheckpoint(path)
	if err == nil {
		if oc := filepath.Join(s.Dir, OpenCLIPConfigFile); s.Kind == "file" && s.Config == "" && isFile(oc) {
			s.Config = oc
		}
		return s, nil
	}
	oc := filepath.Join(path, OpenCLIPConfigFile)
	if !isDir(path) || !isFile(oc) {
		return Source{}, err
	}
	for _, w := range openCLIPWeightFiles {
		if isFile(filepath.Join(path, w)) {
			return Source{Path: path, Kind: "open_clip", Dir: path, Config: oc,
				Weights: []string{filepath.Join(path, w)}, Tokenizer: tokenizerIn(path)}, nil
		}
	}
	return Source{}, fmt.Errorf("checkpoint: %s has %s but no weights (looked for %s)", path, OpenCLIPConfigFile, strings.Join(openCLIPWeightFiles, ", "))
}

// loadSourceConfig reads s.Config: an HF config.json, or an open_clip_config.json.
func loadSourceConfig(s Source) (Config, error) {
	if filepath.Base(s.Config) == OpenCLIPConfigFile {
		return LoadOpenCLIPConfig(s.Config)
	}
	return s.LoadConfig()
}

// SaveOpenCLIPFolder writes an open_clip model folder that open_clip's
// create_model("local-dir:DIR") opens: open_clip_config.json ({"model_cfg": ...,
// "preprocess_cfg": CLIP's mean and std}), open_clip_model.safetensors (the weights in
// open_clip's layout, floating point in dtype) and the tokenizer files of tokenizerDir
// when it is not "" (vocab.json and merges.txt, and the others SaveHFAs copies). Each
// file is written atomically.
func SaveOpenCLIPFolder(dir string, m *Model, dtype torch.DType, tokenizerDir string) error {
	if m == nil {
		return fmt.Errorf("save %s: no model (nil *Model)", dir)
	}
	mc, err := OpenCLIPModelConfig(m.Config)
	if err != nil {
		return fmt.Errorf("save %s: %w", dir, err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("save %s: %w", dir, err)
	}
	pp := preprocessorConfig(m.Config.Vision.ImageSize)
	if err := SaveOpenCLIP(filepath.Join(dir, OpenCLIPSafetensorsFile), m, dtype); err != nil {
		return fmt.Errorf("save %s: %w", dir, err)
	}
	if tokenizerDir != "" {
		for i, name := range tokenizerFiles {
			from := filepath.Join(tokenizerDir, name)
			if !isFile(from) {
				if i < 2 {
					return fmt.Errorf("save %s: tokenizer folder %s has no %s", dir, tokenizerDir, name)
				}
				continue
			}
			data, err := os.ReadFile(from)
			if err == nil {
				err = atomicfile.WriteBytes(filepath.Join(dir, name), data)
			}
			if err != nil {
				return fmt.Errorf("save %s: %w", dir, err)
			}
		}
	}
	cfg := map[string]any{"model_cfg": mc, "preprocess_cfg": map[string]any{
		"mean": pp["image_mean"], "std": pp["image_std"], "interpolation": "bicubic", "resize_mode": "shortest"}}
	if err := atomicfile.WriteJSON(filepath.Join(dir, OpenCLIPConfigFile), cfg); err != nil {
		return fmt.Errorf("save %s: %w", dir, err)
	}
	return nil
}
