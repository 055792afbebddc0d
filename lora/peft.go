package lora

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"

	"goclip/clip"
	"goclip/internal/atomicfile"
	"goclip/torch"
	"goclip/torch/serialize"
)

// The files of a peft adapter folder.
const (
	ConfigFile        = "adapter_config.json"
	WeightsFile       = "adapter_model.safetensors"
	LegacyWeightsFile = "adapter_model.bin" // torch.save format, older peft
)

// keyPrefix is what peft's PeftModel puts before the base model's module names.
const keyPrefix = "base_model.model."

// StateDict maps the adapter's tensors to their keys in peft's adapter_model.safetensors:
// "base_model.model.<module>.lora_A.weight" and ".lora_B.weight" for each LoRA layer,
// "base_model.model.<HF key>" for each parameter of the modules to save. The tensors
// are the model's own (do not Free them).
func (a *Adapter) StateDict() map[string]*torch.Tensor {
	sd := map[string]*torch.Tensor{}
	for _, m := range a.modules {
		sd[keyPrefix+m.Name+".lora_A.weight"] = m.Layer.A
		sd[keyPrefix+m.Name+".lora_B.weight"] = m.Layer.B
	}
	for _, p := range a.saved() {
		sd[keyPrefix+p.Name] = p.T
	}
	return sd
}

// loraKey matches a LoRA weight key that still carries peft's adapter name:
// "<module>.lora_A.default.weight".
var loraKey = regexp.MustCompile(`^(.*\.lora_[AB])\.[^.]+\.weight$`)

// canonicalKey maps a key as peft may store it to StateDict's form: the
// "base_model.model." prefix added where missing, the adapter name removed from LoRA
// keys ("q_proj.lora_A.default.weight" -> "q_proj.lora_A.weight") and modules_to_save
// wrappers ("visual_projection.modules_to_save.default.weight" ->
// "visual_projection.weight").
func canonicalKey(k string) string {
	if !strings.HasPrefix(k, keyPrefix) {
		k = keyPrefix + k
	}
	if m := loraKey.FindStringSubmatch(k); m != nil {
		return m[1] + ".weight"
	}
	if i := strings.Index(k, ".modules_to_save."); i >= 0 {
		rest := k[i+len(".modules_to_save."):]
		if j := strings.IndexByte(rest, '.'); j >= 0 {
			return k[:i] + rest[j:]
		}
	}
	return k
}

// LoadStateDict copies adapter weights into the adapter's tensors (under NoGrad,
// converting dtype and device). Keys may be in peft's saved form or still carry the
// adapter name (".lora_A.default.weight"), with or without "base_model.model.". Unless
// every tensor has an entry of its shape and no entry is left over, nothing is copied
// and a *clip.StateDictError names every missing key, every unknown key (both with
// their shapes) and every shape mismatch (a different rank shows as one) at once.
func (a *Adapter) LoadStateDict(sd map[string]*torch.Tensor) error {
	want := a.StateDict()
	src := map[string]*torch.Tensor{}
	from := map[string]string{}
	serr := &clip.StateDictError{}
	for _, k := range slices.Sorted(maps.Keys(sd)) {
		c := canonicalKey(k)
		if prev, dup := from[c]; dup {
			return fmt.Errorf("adapter weights: %q and %q are the same tensor %q", prev, k, c)
		}
		from[c] = k
		if _, ok := want[c]; !ok {
			serr.Unexpected = append(serr.Unexpected, k)
			continue
		}
		src[c] = sd[k]
	}
	var at string // the key in hand, named when libtorch fails on it (a freed tensor)
	err := torch.Try(func() {
		for _, k := range serr.Unexpected {
			at = k
			if t := sd[k]; t != nil {
				serr.SetShape(k, t.Shape())
			}
		}
		for _, k := range slices.Sorted(maps.Keys(want)) {
			at = k
			if f, ok := from[k]; ok {
				at = f
			}
			s, ok := src[k]
			if !ok || s == nil {
				serr.Missing = append(serr.Missing, k)
				serr.SetShape(k, want[k].Shape())
				continue
			}
			if w, g := want[k].Shape(), s.Shape(); !slices.Equal(w, g) {
				serr.Mismatched = append(serr.Mismatched, clip.ShapeMismatch{Key: from[k], Expected: w, Actual: g})
			}
		}
	})
	if err != nil {
		return fmt.Errorf("adapter weights: %s: %w", at, err)
	}
	if len(serr.Missing)+len(serr.Unexpected)+len(serr.Mismatched) > 0 {
		return serr
	}
	err = torch.Try(func() {
		torch.NoGrad(func() {
			for k, t := range want {
				at = from[k]
				t.CopyFrom(src[k])
			}
		})
	})
	if err != nil {
		return fmt.Errorf("adapter weights: %s: %w", at, err)
	}
	return nil
}

// peftConfig is adapter_config.json as this package writes it: peft's LoraConfig fields
// (those every peft release since 0.10 reads) with their defaults where goclip has no
// setting.
func (a *Adapter) peftConfig(baseModel string) map[string]any {
	c := a.Config
	var targets any
	var layers any
	switch {
	case c.towerRestricted():
		// peft has no tower setting: name the selected modules exactly, as one regular
		// expression (which also holds the layer selection).
		names := make([]string, len(a.modules))
		for i, m := range a.modules {
			names[i] = regexp.QuoteMeta(m.Name)
		}
		targets = strings.Join(names, "|")
	case c.TargetRegex != "":
		targets = c.TargetRegex
	case c.allLinear():
		// What peft writes for "all-linear": the distinct names it expanded to.
		var ts []string
		for _, m := range a.modules {
			ts = append(ts, m.Name[strings.LastIndexByte(m.Name, '.')+1:])
		}
		sort.Strings(ts)
		targets = slices.Compact(ts)
	default:
		ts := slices.Clone(c.Targets)
		sort.Strings(ts)
		targets = slices.Compact(ts)
		if len(c.Layers) > 0 {
			ls := slices.Clone(c.Layers)
			sort.Ints(ls)
			layers = slices.Compact(ls)
		}
	}
	var modules any
	if ms := c.modulesToSave(); len(ms) > 0 {
		modules = ms
	}
	var base any
	if baseModel != "" {
		base = baseModel
	}
	return map[string]any{
		"alpha_pattern":           map[string]any{},
		"auto_mapping":            nil,
		"base_model_name_or_path": base,
		"bias":                    "none",
		"fan_in_fan_out":          false,
		"inference_mode":          true,
		"init_lora_weights":       true,
		"layer_replication":       nil,
		"layers_pattern":          nil,
		"layers_to_transform":     layers,
		"loftq_config":            map[string]any{},
		"lora_alpha":              c.Alpha,
		"lora_dropout":            c.Dropout,
		"megatron_config":         nil,
		"megatron_core":           "megatron.core",
		"modules_to_save":         modules,
		"peft_type":               "LORA",
		"r":                       c.R,
		"rank_pattern":            map[string]any{},
		"revision":                nil,
		"target_modules":          targets,
		"task_type":               nil,
		"use_dora":                false,
		"use_rslora":              c.RSLoRA,
	}
}

// Save writes the adapter as peft's save_pretrained does, into dir (created if needed):
// adapter_config.json (peft's LoraConfig, base_model_name_or_path = baseModel, "" for
// null) and adapter_model.safetensors (StateDict's keys; metadata {"format": "pt"} and
// MetaBaseFingerprint, the fingerprint of the base weights Inject found).
// Each file is written atomically, for peft's PeftModel.from_pretrained(CLIPModel, dir).
// A tower restriction, which peft lacks, is written as a target_modules regular
// expression naming the selected modules. logit_scale, a parameter that peft's
// modules_to_save cannot wrap (it wraps modules), is stored as
// "base_model.model.logit_scale", the key of the base parameter itself, which peft's
// non-strict load_state_dict fills.
func (a *Adapter) Save(dir, baseModel string) error {
	if len(a.modules) == 0 {
		return errors.New("lora: save: the adapter has no LoRA layers (unloaded?)")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("lora: save: %w", err)
	}
	if err := atomicfile.WriteJSON(filepath.Join(dir, ConfigFile), a.peftConfig(baseModel)); err != nil {
		return fmt.Errorf("lora: save: %w", err)
	}
	meta := map[string]string{"format": "pt", MetaBaseFingerprint: a.base}
	if err := torch.SaveSafetensors(filepath.Join(dir, WeightsFile), a.StateDict(), meta); err != nil {
		return fmt.Errorf("lora: save: %w", err)
	}
	return nil
}

// fileConfig holds the adapter_config.json fields that ReadConfig interprets, with
// peft's defaults for absent ones.
type fileConfig struct {
	PeftType          string          `json:"peft_type"`
	R                 int             `json:"r"`
	LoraAlpha         float64         `json:"lora_alpha"`
	LoraDropout       float64         `json:"lora_dropout"`
	TargetModules     json.RawMessage `json:"target_modules"`
	UseRSLoRA         bool            `json:"use_rslora"`
	ModulesToSave     []string        `json:"modules_to_save"`
	Bias              string          `json:"bias"`
	FanInFanOut       bool            `json:"fan_in_fan_out"`
	UseDoRA           bool            `json:"use_dora"`
	InitLoraWeights   json.RawMessage `json:"init_lora_weights"`
	LayersToTransform json.RawMessage `json:"layers_to_transform"`
	LayersPattern     json.RawMessage `json:"layers_pattern"`
	RankPattern       map[string]any  `json:"rank_pattern"`
	AlphaPattern      map[string]any  `json:"alpha_pattern"`
	BaseModel         *string         `json:"base_model_name_or_path"`
}

// mustBeOff are LoraConfig fields of some peft releases that change what the adapter
// computes; an adapter that sets one is rejected rather than misread. Absent, null,
// false, empty and {} are accepted.
var mustBeOff = []string{"layer_replication", "megatron_config", "exclude_modules", "lora_bias",
	"trainable_token_indices", "target_parameters", "use_qalora", "alora_invocation_tokens", "use_bdlora"}

// ReadConfig reads a peft adapter_config.json (dir is the adapter folder or the file) as
// a Config, with its base_model_name_or_path ("" when null). It rejects, naming the
// field, what this package does not implement: another peft_type, use_dora,
// fan_in_fan_out, bias other than "none", rank_pattern or alpha_pattern entries,
// initialisations that change the base weights (pissa, olora, loftq, ...), layer
// patterns other than "layers", and the fields of mustBeOff when set.
func ReadConfig(dir string) (Config, string, error) {
	path := dir
	if st, err := os.Stat(dir); err == nil && st.IsDir() {
		path = filepath.Join(dir, ConfigFile)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return Config{}, "", fmt.Errorf("lora: %w", err)
	}
	fc := fileConfig{PeftType: "LORA", R: 8, LoraAlpha: 8, Bias: "none"} // peft's defaults
	if err := json.Unmarshal(data, &fc); err != nil {
		return Config{}, "", fmt.Errorf("lora: %s: %w", path, err)
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(data, &raw); err != nil {
		return Config{}, "", fmt.Errorf("lora: %s: %w", path, err)
	}
	cfg, err := fc.config(raw)
	if err != nil {
		return Config{}, "", fmt.Errorf("lora: %s: %w", path, err)
	}
	base := ""
	if fc.BaseModel != nil {
		base = *fc.BaseModel
	}
	return cfg, base, nil
}

func (fc fileConfig) config(raw map[string]json.RawMessage) (Config, error) {
	var errs []string
	bad := func(format string, args ...any) { errs = append(errs, fmt.Sprintf(format, args...)) }
	if fc.PeftType != "LORA" {
		bad("peft_type %q is not supported (want LORA)", fc.PeftType)
	}
	if fc.UseDoRA {
		bad("use_dora true (DoRA) is not supported")
	}
	if fc.FanInFanOut {
		bad("fan_in_fan_out true is not supported (CLIP's linear layers store weights as [out, in])")
	}
	if fc.Bias != "none" {
		bad("bias %q is not supported (want \"none\")", fc.Bias)
	}
	if len(fc.RankPattern) > 0 || len(fc.AlphaPattern) > 0 {
		bad("rank_pattern and alpha_pattern are not supported (every layer has rank r and lora_alpha)")
	}
	for _, k := range mustBeOff {
		switch v := strings.TrimSpace(string(raw[k])); v {
		case "", "null", "false", "[]", "{}", `""`:
		default:
			bad("%s %s is not supported", k, v)
		}
	}
	if len(fc.InitLoraWeights) > 0 {
		var on bool
		var s string
		if json.Unmarshal(fc.InitLoraWeights, &on) != nil && (json.Unmarshal(fc.InitLoraWeights, &s) != nil || s != "gaussian") {
			bad("init_lora_weights %s is not supported: it changes the base model's weights", fc.InitLoraWeights)
		}
	}
	cfg := Config{R: fc.R, Alpha: fc.LoraAlpha, Dropout: fc.LoraDropout, RSLoRA: fc.UseRSLoRA, ModulesToSave: fc.ModulesToSave}
	var list []string
	var regex string
	switch t := fc.TargetModules; {
	case len(t) == 0 || string(t) == "null":
		bad("target_modules is missing (peft's per-architecture default is not supported: name the modules)")
	case json.Unmarshal(t, &list) == nil:
		cfg.Targets = list
	case json.Unmarshal(t, &regex) == nil:
		if regex == AllLinear {
			cfg.Targets = []string{AllLinear}
		} else {
			cfg.TargetRegex = regex
		}
	default:
		bad("target_modules %s is neither a list of names nor a regular expression", t)
	}
	if l := fc.LayersToTransform; len(l) > 0 && string(l) != "null" {
		var one int
		if json.Unmarshal(l, &one) == nil {
			cfg.Layers = []int{one}
		} else if json.Unmarshal(l, &cfg.Layers) != nil {
			bad("layers_to_transform %s is neither a layer index nor a list of them", l)
		}
	}
	if p := fc.LayersPattern; len(p) > 0 {
		switch strings.ReplaceAll(string(p), " ", "") {
		case "null", `"layers"`, `["layers"]`, `""`, "[]":
		default:
			bad("layers_pattern %s is not supported (CLIP's layers are named layers.N)", p)
		}
	}
	if len(errs) > 0 {
		return Config{}, errors.New(strings.Join(errs, "; "))
	}
	return cfg, nil
}

// LoadOptions say how Load checks that an adapter belongs on the model it is given.
type LoadOptions struct {
	// Model is the folder (or file) the model was loaded from: named in errors, looked
	// up for a merged model's record of its adapters (MergedKey in its config.json),
	// and compared with a peft adapter's base_model_name_or_path. "" skips both.
	Model string
	// Force applies the adapter even when its base fingerprint differs from the
	// model's, or when the model records the adapter as merged into it already.
	Force bool
	// Warn receives the warnings of a check that cannot tell (nil: dropped).
	Warn func(msg string)
}

// Load reads a peft LoRA adapter folder with the checks of LoadWith and no model path.
func Load(dir string, m *clip.Model) (*Adapter, error) { return LoadWith(dir, m, LoadOptions{}) }

// LoadWith reads a peft LoRA adapter folder (adapter_config.json, and
// adapter_model.safetensors or the older adapter_model.bin) written by Save or by peft's
// save_pretrained for transformers' CLIPModel, injects it into m with the saved
// configuration and copies its weights. Unsupported configurations are rejected (see
// ReadConfig); weights that do not fit are reported all at once (see
// Adapter.LoadStateDict), and m is then left as it was. As peft's from_pretrained, it
// puts the model in evaluation mode (m.SetTrain(false)); the LoRA matrices still
// require grad, so training can continue after m.SetTrain(true).
//
// The adapter must belong on m: an adapter goclip wrote carries its base's fingerprint
// (MetaBaseFingerprint), and a different fingerprint of m is an error naming both; a
// model whose config.json records this adapter as merged into it is an error (applying
// it again merges it twice). opts.Force overrides both. An adapter without a
// fingerprint (peft's) is checked by its shapes and by its base_model_name_or_path,
// with a warning when they cannot tell.
func LoadWith(dir string, m *clip.Model, opts LoadOptions) (*Adapter, error) {
	cfg, baseName, err := ReadConfig(dir)
	if err != nil {
		return nil, err
	}
	return load(dir, m, cfg, baseName, opts)
}

// LoadAs is Load with cfg in place of the folder's adapter_config.json (ReadConfig's
// result with, say, another dropout for further training): the weights must fit the
// layers cfg makes, and the adapter's base fingerprint, when it has one, m's.
func LoadAs(dir string, m *clip.Model, cfg Config) (*Adapter, error) {
	return load(dir, m, cfg, baseModelName(dir), LoadOptions{})
}

// baseModelName is the base_model_name_or_path of an adapter folder's config ("" when
// absent or unreadable).
func baseModelName(dir string) string {
	data, err := os.ReadFile(filepath.Join(dir, ConfigFile))
	if err != nil {
		return ""
	}
	var fc struct {
		BaseModel *string `json:"base_model_name_or_path"`
	}
	if json.Unmarshal(data, &fc) != nil || fc.BaseModel == nil {
		return ""
	}
	return *fc.BaseModel
}

// load is LoadWith with the configuration and base name given.
func load(dir string, m *clip.Model, cfg Config, baseName string, opts LoadOptions) (*Adapter, error) {
	if m == nil {
		return nil, fmt.Errorf("lora: loading %s: no model (nil *clip.Model)", dir)
	}
	path := filepath.Join(dir, WeightsFile)
	var meta map[string]string
	if _, err := os.Stat(path); err != nil {
		legacy := filepath.Join(dir, LegacyWeightsFile)
		if _, lerr := os.Stat(legacy); lerr != nil {
			return nil, fmt.Errorf("lora: %s holds neither %s nor %s", dir, WeightsFile, LegacyWeightsFile)
		}
		path = legacy
	} else if _, meta, err = serialize.ReadSafetensorsHeader(path); err != nil {
		return nil, fmt.Errorf("lora: %w", err)
	}
	sd, err := torch.LoadTensors(path, m.Device())
	if err != nil {
		return nil, fmt.Errorf("lora: %w", err)
	}
	defer torch.FreeMap(sd)
	// A config may ask for far more than the file holds (r: 1e9): refuse it before
	// Inject allocates the LoRA matrices. Smaller mismatches are left to
	// LoadStateDict, which reports them key by key.
	_, want, err := CountConfig(m.Config, cfg)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, ConfigFile), err)
	}
	var have int64
	for _, k := range slices.Sorted(maps.Keys(sd)) {
		if err := torch.Try(func() { have += sd[k].Numel() }); err != nil {
			return nil, fmt.Errorf("lora: %s: tensor %q: %w", path, k, err)
		}
	}
	if want > 4*have+1<<20 {
		return nil, fmt.Errorf("lora: %s asks for %d trainable parameters (r = %d), but %s holds %d", filepath.Join(dir, ConfigFile), want, cfg.R, path, have)
	}
	a, err := Inject(m, cfg)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, ConfigFile), err)
	}
	if err := a.LoadStateDict(sd); err != nil {
		a.Unload()
		if cause := rankCause(cfg, sd); cause != "" {
			return nil, fmt.Errorf("lora: %s: the adapter's config and weights do not belong together; %s, key by key:\n%w", cause, path, err)
		}
		return nil, fmt.Errorf("lora: %s: %w", path, err)
	}
	if err := a.checkBase(dir, baseName, meta[MetaBaseFingerprint], opts); err != nil {
		a.Unload()
		return nil, err
	}
	m.SetTrain(false)
	return a, nil
}

// checkBase applies LoadWith's base checks to a loaded adapter.
func (a *Adapter) checkBase(dir, baseName, baseFP string, opts LoadOptions) error {
	model := opts.Model
	if model == "" {
		model = "the model"
	}
	warn := func(format string, args ...any) {
		if opts.Warn != nil {
			opts.Warn(fmt.Sprintf(format, args...))
		}
	}
	if opts.Model != "" {
		merged, err := MergedInto(opts.Model)
		if err != nil {
			return err
		}
		fp, err := a.AdapterFingerprint()
		if err != nil {
			return err
		}
		for _, e := range merged {
			if e.Adapter != fp {
				continue
			}
			msg := fmt.Sprintf("lora: adapter %s is already merged into %s (its config.json records it under %s): applying it again would merge it twice", dir, model, MergedKey)
			if baseName != "" {
				msg += "; load it on its base model " + baseName
			}
			if !opts.Force {
				return errors.New(msg + " (--force to apply it anyway)")
			}
			warn("%s; applying it anyway (--force)", msg)
		}
	}
	switch {
	case baseFP != "" && baseFP != a.base:
		base := "its base model"
		if baseName != "" {
			base = baseName
		}
		msg := fmt.Sprintf("lora: adapter %s was trained on %s (fingerprint %s), but %s has other weights (fingerprint %s)", dir, base, baseFP, model, a.base)
		if !opts.Force {
			return errors.New(msg + ": give its base model, or --force to apply it anyway")
		}
		warn("%s; applying it anyway (--force)", msg)
	case baseFP == "" && opts.Model != "" && !samePlace(baseName, opts.Model):
		named := "names no base model"
		if baseName != "" {
			named = "names base model " + baseName
		}
		warn("adapter %s carries no goclip fingerprint of its base and %s: its shapes fit %s, but whether it holds the same base weights cannot be told", dir, named, model)
	}
	return nil
}

// samePlace reports whether two paths name the same folder or file on this machine
// (a run folder and its model/ count as one).
func samePlace(a, b string) bool {
	if a == "" || b == "" {
		return false
	}
	sa, err1 := os.Stat(a)
	sb, err2 := os.Stat(b)
	if err1 != nil || err2 != nil {
		return false
	}
	if os.SameFile(sa, sb) {
		return true
	}
	if st, err := os.Stat(filepath.Join(a, clip.RunModelDir)); err == nil && os.SameFile(st, sb) {
		return true
	}
	if st, err := os.Stat(filepath.Join(b, clip.RunModelDir)); err == nil && os.SameFile(st, sa) {
		return true
	}
	return false
}

// rankCause names the commonest cause of a mismatch, for the front of the error:
// adapter_config.json's r differs from the rank of the saved lora_A matrices [r, in]
// (one wrong r shows as a mismatch of every tensor). "" when the ranks agree.
func rankCause(cfg Config, sd map[string]*torch.Tensor) string {
	ranks := map[int64]int{}
	if torch.Try(func() {
		for k, t := range sd {
			if strings.HasSuffix(canonicalKey(k), ".lora_A.weight") && t.Dim() == 2 {
				ranks[t.Size(0)]++
			}
		}
	}) != nil || len(ranks) != 1 {
		return ""
	}
	for r, n := range ranks {
		if int(r) != cfg.R {
			return fmt.Sprintf("%s says r=%d, the weights have rank %d (all %d lora_A matrices)", ConfigFile, cfg.R, r, n)
		}
	}
	return ""
}
