package clip

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"

	"goclip/internal/atomicfile"
	"goclip/nn"
)

// TextConfig mirrors transformers' CLIPTextConfig (the "text_config" object of an HF
// config.json). Fields missing from a file take transformers' defaults.
type TextConfig struct {
	VocabSize             int64   `json:"vocab_size"`
	HiddenSize            int64   `json:"hidden_size"`
	IntermediateSize      int64   `json:"intermediate_size"`
	NumHiddenLayers       int64   `json:"num_hidden_layers"`
	NumAttentionHeads     int64   `json:"num_attention_heads"`
	MaxPositionEmbeddings int64   `json:"max_position_embeddings"`
	HiddenAct             string  `json:"hidden_act"`
	LayerNormEps          float64 `json:"layer_norm_eps"`
	AttentionDropout      float64 `json:"attention_dropout"`
	InitializerRange      float64 `json:"initializer_range"`
	InitializerFactor     float64 `json:"initializer_factor"`
	// EOSTokenID selects text pooling: 2 (legacy OpenAI configs) pools at argmax(input_ids),
	// i.e. at the end token 49407, the largest id; any other value pools at the first
	// position holding EOSTokenID.
	EOSTokenID    int64 `json:"eos_token_id"`
	BOSTokenID    int64 `json:"bos_token_id"`
	PadTokenID    int64 `json:"pad_token_id"`
	ProjectionDim int64 `json:"projection_dim,omitempty"` // informational; the model uses Config.ProjectionDim

	extra map[string]json.RawMessage // fields goclip does not model, kept for Save
}

// VisionConfig mirrors transformers' CLIPVisionConfig ("vision_config").
type VisionConfig struct {
	HiddenSize        int64   `json:"hidden_size"`
	IntermediateSize  int64   `json:"intermediate_size"`
	NumHiddenLayers   int64   `json:"num_hidden_layers"`
	NumAttentionHeads int64   `json:"num_attention_heads"`
	ImageSize         int64   `json:"image_size"`
	PatchSize         int64   `json:"patch_size"`
	NumChannels       int64   `json:"num_channels"`
	HiddenAct         string  `json:"hidden_act"`
	LayerNormEps      float64 `json:"layer_norm_eps"`
	AttentionDropout  float64 `json:"attention_dropout"`
	InitializerRange  float64 `json:"initializer_range"`
	InitializerFactor float64 `json:"initializer_factor"`
	ProjectionDim     int64   `json:"projection_dim,omitempty"` // informational

	extra map[string]json.RawMessage
}

// Config mirrors transformers' CLIPConfig: an HF CLIP model folder's config.json.
type Config struct {
	Text                TextConfig   `json:"text_config"`
	Vision              VisionConfig `json:"vision_config"`
	ProjectionDim       int64        `json:"projection_dim"`         // width of the joint embedding
	LogitScaleInitValue float64      `json:"logit_scale_init_value"` // ln(1/0.07) = 2.6592
	InitializerFactor   float64      `json:"initializer_factor"`

	extra map[string]json.RawMessage
}

// NumPatches is the number of image patches, (image_size / patch_size)².
func (v VisionConfig) NumPatches() int64 {
	g := v.ImageSize / v.PatchSize
	return g * g
}

// DefaultConfig is transformers' CLIPConfig() with no arguments (a ViT-B/32 shape with
// eos_token_id 49407); LoadConfig starts from it, so absent fields take these values.
func DefaultConfig() Config {
	return Config{
		Text: TextConfig{
			VocabSize: 49408, HiddenSize: 512, IntermediateSize: 2048, NumHiddenLayers: 12,
			NumAttentionHeads: 8, MaxPositionEmbeddings: 77, HiddenAct: "quick_gelu",
			LayerNormEps: 1e-5, InitializerRange: 0.02, InitializerFactor: 1,
			EOSTokenID: 49407, BOSTokenID: 49406, PadTokenID: 1, ProjectionDim: 512,
		},
		Vision: VisionConfig{
			HiddenSize: 768, IntermediateSize: 3072, NumHiddenLayers: 12, NumAttentionHeads: 12,
			ImageSize: 224, PatchSize: 32, NumChannels: 3, HiddenAct: "quick_gelu",
			LayerNormEps: 1e-5, InitializerRange: 0.02, InitializerFactor: 1, ProjectionDim: 512,
		},
		ProjectionDim:       512,
		LogitScaleInitValue: 2.6592,
		InitializerFactor:   1,
	}
}

// presetNames are the names Preset accepts, in the order PresetNames gives them.
var presetNames = []string{"vit-b-16", "vit-b-32", "vit-l-14", "seed-scratch", "tiny"}

// PresetNames returns the names Preset accepts, in a fresh slice (changing it changes
// nothing here).
func PresetNames() []string { return slices.Clone(presetNames) }

// Preset returns a named architecture:
//   - vit-b-16, vit-b-32, vit-l-14: OpenAI's CLIP architectures, as the configs of
//     openai/clip-vit-base-patch16, -base-patch32 and -large-patch14 (eos_token_id 2:
//     argmax pooling, as those checkpoints need).
//   - seed-scratch: the study's from-scratch model, vit-b-16's architecture (ViT-B/16
//     image tower; 12-layer, 8-head, width-512 text tower) with eos_token_id 49407, so
//     the text is pooled at the first end token.
//   - tiny: seconds per epoch on a CPU: 64-pixel images in 8-pixel patches (64 patches),
//     both towers width 128 with 2 layers and 4 heads (MLP 512), projection 64, the full
//     49408-token vocabulary and 77 positions (so the standard tokenizer's output fits),
//     eos_token_id 49407.
func Preset(name string) (Config, error) {
	c := DefaultConfig()
	switch name {
	case "vit-b-16", "vit-b-32", "vit-l-14":
		c.Text.EOSTokenID, c.Text.BOSTokenID, c.Text.PadTokenID = 2, 0, 1
		c.Vision.PatchSize = 16
		if name == "vit-b-32" {
			c.Vision.PatchSize = 32
		}
		if name == "vit-l-14" {
			c.Vision.HiddenSize, c.Vision.IntermediateSize = 1024, 4096
			c.Vision.NumHiddenLayers, c.Vision.NumAttentionHeads, c.Vision.PatchSize = 24, 16, 14
			c.Text.HiddenSize, c.Text.IntermediateSize, c.Text.NumAttentionHeads = 768, 3072, 12
			c.ProjectionDim = 768
		}
	case "seed-scratch":
		c.Vision.PatchSize = 16
	case "tiny":
		c.Vision.HiddenSize, c.Vision.IntermediateSize = 128, 512
		c.Vision.NumHiddenLayers, c.Vision.NumAttentionHeads = 2, 4
		c.Vision.ImageSize, c.Vision.PatchSize = 64, 8
		c.Text.HiddenSize, c.Text.IntermediateSize = 128, 512
		c.Text.NumHiddenLayers, c.Text.NumAttentionHeads = 2, 4
		c.ProjectionDim = 64
	default:
		return Config{}, fmt.Errorf("unknown model preset %q (want one of %s)", name, strings.Join(PresetNames(), ", "))
	}
	c.Text.ProjectionDim, c.Vision.ProjectionDim = c.ProjectionDim, c.ProjectionDim
	return c, nil
}

// Upper bounds on a config's sizes, far above the largest real CLIP (ViT-bigG/14:
// vision width 1664 with 48 layers and MLP 8192, text width 1280 with 32 layers; images
// of 448 pixels and more; multilingual vocabularies of 250k tokens), and low enough that
// no size, nor the parameter count they make, can overflow or ask for absurd memory
// before a model is built. Validate names the config.json key that exceeds one.
const (
	MaxHiddenSize       = 1 << 14 // hidden_size of either tower
	MaxIntermediateSize = 1 << 16 // intermediate_size (the MLP's width)
	MaxLayers           = 256     // num_hidden_layers
	MaxAttentionHeads   = 256     // num_attention_heads
	MaxVocabSize        = 1 << 21 // text_config.vocab_size
	MaxPositions        = 1 << 14 // text_config.max_position_embeddings
	MaxImageSize        = 1 << 13 // vision_config.image_size, in pixels
	MaxChannels         = 64      // vision_config.num_channels
	MaxPatches          = 1 << 16 // (image_size / patch_size)²
	MaxProjectionDim    = 1 << 14 // projection_dim
	MaxParams           = 1 << 37 // parameters in all, about 137 billion
)

// Validate reports every inconsistent or unsupported field, by its config.json name.
func (c Config) Validate() error {
	var errs []string
	bad := func(format string, args ...any) { errs = append(errs, fmt.Sprintf(format, args...)) }
	bounded := func(name string, v, limit int64) {
		if v <= 0 {
			bad("%s must be positive, got %d", name, v)
		} else if v > limit {
			bad("%s must be at most %d, got %d", name, limit, v)
		}
	}
	act := func(name, v string) {
		if _, err := nn.ActivationFor(v); err != nil {
			bad("%s: %v", name, err)
		}
	}
	eps := func(name string, v float64) {
		if !(v > 0) || math.IsInf(v, 0) {
			bad("%s must be positive, got %g", name, v)
		}
	}
	dropout := func(name string, v float64) {
		if !(v >= 0 && v < 1) {
			bad("%s must be in [0, 1), got %g", name, v)
		}
	}
	divisible := func(a string, av int64, b string, bv int64) {
		if av > 0 && bv > 0 && av%bv != 0 {
			bad("%s (%d) is not divisible by %s (%d)", a, av, b, bv)
		}
	}

	t := c.Text
	bounded("text_config.vocab_size", t.VocabSize, MaxVocabSize)
	bounded("text_config.hidden_size", t.HiddenSize, MaxHiddenSize)
	bounded("text_config.intermediate_size", t.IntermediateSize, MaxIntermediateSize)
	bounded("text_config.num_hidden_layers", t.NumHiddenLayers, MaxLayers)
	bounded("text_config.num_attention_heads", t.NumAttentionHeads, MaxAttentionHeads)
	bounded("text_config.max_position_embeddings", t.MaxPositionEmbeddings, MaxPositions)
	divisible("text_config.hidden_size", t.HiddenSize, "text_config.num_attention_heads", t.NumAttentionHeads)
	act("text_config.hidden_act", t.HiddenAct)
	eps("text_config.layer_norm_eps", t.LayerNormEps)
	dropout("text_config.attention_dropout", t.AttentionDropout)
	if t.EOSTokenID < 0 || (t.VocabSize > 0 && t.EOSTokenID >= t.VocabSize) {
		bad("text_config.eos_token_id %d is outside the vocabulary [0, %d)", t.EOSTokenID, t.VocabSize)
	}

	v := c.Vision
	bounded("vision_config.hidden_size", v.HiddenSize, MaxHiddenSize)
	bounded("vision_config.intermediate_size", v.IntermediateSize, MaxIntermediateSize)
	bounded("vision_config.num_hidden_layers", v.NumHiddenLayers, MaxLayers)
	bounded("vision_config.num_attention_heads", v.NumAttentionHeads, MaxAttentionHeads)
	bounded("vision_config.num_channels", v.NumChannels, MaxChannels)
	bounded("vision_config.image_size", v.ImageSize, MaxImageSize)
	bounded("vision_config.patch_size", v.PatchSize, MaxImageSize)
	divisible("vision_config.hidden_size", v.HiddenSize, "vision_config.num_attention_heads", v.NumAttentionHeads)
	divisible("vision_config.image_size", v.ImageSize, "vision_config.patch_size", v.PatchSize)
	if v.ImageSize > 0 && v.PatchSize > 0 && v.ImageSize <= MaxImageSize && v.NumPatches() > MaxPatches {
		bad("vision_config.image_size / vision_config.patch_size (%d / %d) makes %d patches, more than %d", v.ImageSize, v.PatchSize, v.NumPatches(), MaxPatches)
	}
	act("vision_config.hidden_act", v.HiddenAct)
	eps("vision_config.layer_norm_eps", v.LayerNormEps)
	dropout("vision_config.attention_dropout", v.AttentionDropout)

	bounded("projection_dim", c.ProjectionDim, MaxProjectionDim)
	if math.IsNaN(c.LogitScaleInitValue) || math.IsInf(c.LogitScaleInitValue, 0) {
		bad("logit_scale_init_value must be finite, got %g", c.LogitScaleInitValue)
	}
	for _, f := range []struct {
		name string
		v    float64
	}{{"initializer_factor", c.InitializerFactor}, {"text_config.initializer_factor", t.InitializerFactor},
		{"vision_config.initializer_factor", v.InitializerFactor}, {"text_config.initializer_range", t.InitializerRange},
		{"vision_config.initializer_range", v.InitializerRange}} {
		if !(f.v >= 0) || math.IsInf(f.v, 0) {
			bad("%s must be a finite number >= 0, got %g", f.name, f.v)
		}
	}
	if len(errs) == 0 {
		// Every size is bounded, so the count cannot overflow; it is checked anyway.
		if n, err := countParams(c); err != nil || n > MaxParams {
			bad("the config describes %s parameters, more than %d (hidden_size, intermediate_size, num_hidden_layers and vocab_size together)", countString(n, err), int64(MaxParams))
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("invalid CLIP config: %s", strings.Join(errs, "; "))
	}
	return nil
}

func countString(n int64, err error) string {
	if err != nil {
		return "more than 2^63"
	}
	return fmt.Sprint(n)
}

// LoadConfig reads and validates an HF CLIP config.json (path is the file or its folder).
// Absent fields take transformers' defaults; fields goclip does not model are kept and
// written back by Save. The legacy text_config_dict / vision_config_dict keys are read
// when text_config / vision_config are absent.
func LoadConfig(path string) (Config, error) {
	if st, err := os.Stat(path); err == nil && st.IsDir() {
		path = filepath.Join(path, "config.json")
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return Config{}, err
	}
	c := DefaultConfig()
	if err := json.Unmarshal(data, &c); err != nil {
		return Config{}, fmt.Errorf("%s: %w", path, err)
	}
	if err := c.Validate(); err != nil {
		return Config{}, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

// Save writes c as an HF config.json, atomically (a temporary file renamed into place),
// with architectures ["CLIPModel"] and model_type "clip".
func (c Config) Save(path string) error {
	if err := atomicfile.WriteJSON(path, c); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}

// The JSON methods decode known fields into the struct (over the values already there,
// the defaults) and keep the rest in extra; encoding writes extra back under the known
// fields. Known fields always win.

type (
	textAlias   TextConfig
	visionAlias VisionConfig
	configAlias Config
)

// UnmarshalJSON decodes a text_config object.
func (t *TextConfig) UnmarshalJSON(data []byte) error {
	extra, err := decodeKnown(data, (*textAlias)(t))
	t.extra = extra
	return err
}

// MarshalJSON encodes a text_config object.
func (t TextConfig) MarshalJSON() ([]byte, error) {
	return encodeWithExtra((*textAlias)(&t), t.extra, map[string]any{"model_type": "clip_text_model"})
}

// UnmarshalJSON decodes a vision_config object.
func (v *VisionConfig) UnmarshalJSON(data []byte) error {
	extra, err := decodeKnown(data, (*visionAlias)(v))
	v.extra = extra
	return err
}

// MarshalJSON encodes a vision_config object.
func (v VisionConfig) MarshalJSON() ([]byte, error) {
	return encodeWithExtra((*visionAlias)(&v), v.extra, map[string]any{"model_type": "clip_vision_model"})
}

// UnmarshalJSON decodes a CLIPConfig object.
func (c *Config) UnmarshalJSON(data []byte) error {
	var top map[string]json.RawMessage
	if err := json.Unmarshal(data, &top); err != nil {
		return err
	}
	// Legacy configs (transformers < 4.23) nest the towers under *_config_dict.
	for _, k := range []string{"text_config", "vision_config"} {
		if legacy, ok := top[k+"_dict"]; ok {
			if cur, ok := top[k]; !ok || string(cur) == "null" {
				top[k] = legacy
			}
			delete(top, k+"_dict")
		}
	}
	data, err := json.Marshal(top)
	if err != nil {
		return err
	}
	extra, err := decodeKnown(data, (*configAlias)(c))
	c.extra = extra
	return err
}

// MarshalJSON encodes a CLIPConfig object.
func (c Config) MarshalJSON() ([]byte, error) {
	return encodeWithExtra((*configAlias)(&c), c.extra, map[string]any{
		"architectures": []string{"CLIPModel"},
		"model_type":    "clip",
	})
}

// decodeKnown decodes data into known (a pointer to an alias struct, so its own methods
// do not recurse) and returns the object's keys that known has no field for.
func decodeKnown(data []byte, known any) (map[string]json.RawMessage, error) {
	var all map[string]json.RawMessage
	if err := json.Unmarshal(data, &all); err != nil {
		return nil, err
	}
	if err := json.Unmarshal(data, known); err != nil {
		return nil, err
	}
	names, err := knownNames(known)
	if err != nil {
		return nil, err
	}
	for _, n := range names {
		delete(all, n)
	}
	if len(all) == 0 {
		return nil, nil
	}
	return all, nil
}

// knownNames lists the JSON keys an alias struct encodes (omitempty fields included).
func knownNames(known any) ([]string, error) {
	var m map[string]json.RawMessage
	b, err := json.Marshal(known)
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, err
	}
	names := []string{"projection_dim"} // omitempty in the tower configs
	for k := range m {
		names = append(names, k)
	}
	return names, nil
}

// encodeWithExtra writes known's fields, fixed (always written), and the extra fields
// that neither sets.
func encodeWithExtra(known any, extra map[string]json.RawMessage, fixed map[string]any) ([]byte, error) {
	b, err := json.Marshal(known)
	if err != nil {
		return nil, err
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, err
	}
	pythonFloats(known, m)
	for k, v := range fixed {
		raw, err := json.Marshal(v)
		if err != nil {
			return nil, err
		}
		m[k] = raw
	}
	for k, v := range extra {
		if _, ok := m[k]; !ok {
			m[k] = v
		}
	}
	return json.Marshal(m)
}

// pythonFloats rewrites, in m, the float64 fields of the struct known points to so that
// a whole number keeps its decimal point (1.0, not Go's 1), as Python writes floats:
// transformers 5 checks config fields by type and rejects an int where a float is
// declared (CLIPConfig.from_pretrained fails on "initializer_factor": 1).
func pythonFloats(known any, m map[string]json.RawMessage) {
	v := reflect.ValueOf(known).Elem()
	for i := 0; i < v.NumField(); i++ {
		f := v.Type().Field(i)
		if !f.IsExported() || f.Type.Kind() != reflect.Float64 {
			continue
		}
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if raw, ok := m[name]; ok && !strings.ContainsAny(string(raw), ".eE") {
			m[name] = json.RawMessage(string(raw) + ".0")
		}
	}
}
