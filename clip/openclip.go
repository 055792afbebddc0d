package clip

// OpenAI / open_clip checkpoints: the state-dict layout of OpenAI's reference CLIP
// (model.py) and of open_clip's CLIP class, which keeps OpenAI's names. One table maps
// it to HF CLIPModel's keys and back; the architecture is inferred from the tensors'
// shapes where a checkpoint carries no config.
//
// open_clip's layout, tower by tower (D a tower's width, I its MLP width, P
// projection_dim, V the vocabulary, T the context length, N the patches, C channels):
//
//	visual.class_embedding                         [Dv]
//	visual.positional_embedding                    [N+1, Dv]
//	visual.conv1.weight                            [Dv, C, patch, patch] (no bias)
//	visual.ln_pre.{weight,bias}                    [Dv]
//	visual.transformer.resblocks.L.ln_1.*          [Dv]
//	visual.transformer.resblocks.L.attn.in_proj_weight [3Dv, Dv] = cat(q, k, v)
//	visual.transformer.resblocks.L.attn.in_proj_bias   [3Dv]
//	visual.transformer.resblocks.L.attn.out_proj.* [Dv, Dv], [Dv]
//	visual.transformer.resblocks.L.ln_2.*          [Dv]
//	visual.transformer.resblocks.L.mlp.c_fc.*      [Iv, Dv], [Iv]
//	visual.transformer.resblocks.L.mlp.c_proj.*    [Dv, Iv], [Dv]
//	visual.ln_post.{weight,bias}                   [Dv]
//	visual.proj                                    [Dv, P] (used as x @ proj)
//	token_embedding.weight                         [V, Dt]
//	positional_embedding                           [T, Dt]
//	transformer.resblocks.L.*                      as the visual blocks, width Dt
//	ln_final.{weight,bias}                         [Dt]
//	text_projection                                [Dt, P] (used as x @ proj)
//	logit_scale                                    []
//
// The computations agree with HF's: pre-LN blocks (x + attn(ln_1(x)), then
// h + mlp(ln_2(h))), a causal text mask, the class token pooled after ln_post, the text
// pooled at argmax(ids) (the end token, the largest id: HF's legacy eos_token_id 2),
// ln_final per position (so before or after pooling is the same), and logit_scale the
// log of the logits' scale in both.

import (
	"errors"
	"fmt"
	"maps"
	"math"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"

	"goclip/torch"
)

// Layout names the key naming of a state dict.
type Layout string

// The layouts goclip reads and writes.
const (
	LayoutHF       Layout = "hf"        // transformers' CLIPModel keys
	LayoutOpenCLIP Layout = "open_clip" // OpenAI's and open_clip's keys
)

// Layouts are the names ParseLayout accepts.
var Layouts = []Layout{LayoutHF, LayoutOpenCLIP}

// ParseLayout returns the layout named s ("hf" or "open_clip").
func ParseLayout(s string) (Layout, error) {
	for _, l := range Layouts {
		if string(l) == s {
			return l, nil
		}
	}
	return "", fmt.Errorf("unknown checkpoint layout %q (want hf or open_clip)", s)
}

// ErrArchitectureUnknown is wrapped by the errors of a checkpoint whose architecture can
// be neither read (no config.json) nor inferred from its tensors: the caller must give
// it.
var ErrArchitectureUnknown = errors.New("the architecture is unknown")

// ocOp says how an open_clip tensor is made of HF tensors.
type ocOp int

const (
	ocSame      ocOp = iota // the same tensor
	ocTranspose             // open_clip [in, out] (x @ W) = HF Linear weight [out, in], transposed
	ocQKV                   // open_clip in_proj [3D, ...] = cat(HF q, k, v) along dim 0
)

// ocRule maps one open_clip key to its HF key(s): one, or q, k, v for ocQKV.
type ocRule struct {
	oc string
	hf []string
	op ocOp
}

// openCLIPTop are the rules outside the transformer blocks.
var openCLIPTop = []ocRule{
	{"visual.class_embedding", []string{"vision_model.embeddings.class_embedding"}, ocSame},                // [Dv]
	{"visual.positional_embedding", []string{"vision_model.embeddings.position_embedding.weight"}, ocSame}, // [N+1, Dv]
	{"visual.conv1.weight", []string{"vision_model.embeddings.patch_embedding.weight"}, ocSame},            // [Dv, C, p, p]
	{"visual.ln_pre.weight", []string{"vision_model.pre_layrnorm.weight"}, ocSame},                         // [Dv]
	{"visual.ln_pre.bias", []string{"vision_model.pre_layrnorm.bias"}, ocSame},                             // [Dv]
	{"visual.ln_post.weight", []string{"vision_model.post_layernorm.weight"}, ocSame},                      // [Dv]
	{"visual.ln_post.bias", []string{"vision_model.post_layernorm.bias"}, ocSame},                          // [Dv]
	{"visual.proj", []string{"visual_projection.weight"}, ocTranspose},                                     // [Dv, P] <-> [P, Dv]
	{"token_embedding.weight", []string{"text_model.embeddings.token_embedding.weight"}, ocSame},           // [V, Dt]
	{"positional_embedding", []string{"text_model.embeddings.position_embedding.weight"}, ocSame},          // [T, Dt]
	{"ln_final.weight", []string{"text_model.final_layer_norm.weight"}, ocSame},                            // [Dt]
	{"ln_final.bias", []string{"text_model.final_layer_norm.bias"}, ocSame},                                // [Dt]
	{"text_projection", []string{"text_projection.weight"}, ocTranspose},                                   // [Dt, P] <-> [P, Dt]
	{"logit_scale", []string{"logit_scale"}, ocSame},                                                       // []
}

// openCLIPBlock are the rules of one transformer block, relative to
// "[visual.]transformer.resblocks.L." and "{vision,text}_model.encoder.layers.L.".
var openCLIPBlock = []ocRule{
	{"ln_1.weight", []string{"layer_norm1.weight"}, ocSame},                                                                   // [D]
	{"ln_1.bias", []string{"layer_norm1.bias"}, ocSame},                                                                       // [D]
	{"attn.in_proj_weight", []string{"self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight"}, ocQKV}, // [3D, D]
	{"attn.in_proj_bias", []string{"self_attn.q_proj.bias", "self_attn.k_proj.bias", "self_attn.v_proj.bias"}, ocQKV},         // [3D]
	{"attn.out_proj.weight", []string{"self_attn.out_proj.weight"}, ocSame},                                                   // [D, D]
	{"attn.out_proj.bias", []string{"self_attn.out_proj.bias"}, ocSame},                                                       // [D]
	{"ln_2.weight", []string{"layer_norm2.weight"}, ocSame},                                                                   // [D]
	{"ln_2.bias", []string{"layer_norm2.bias"}, ocSame},                                                                       // [D]
	{"mlp.c_fc.weight", []string{"mlp.fc1.weight"}, ocSame},                                                                   // [I, D]
	{"mlp.c_fc.bias", []string{"mlp.fc1.bias"}, ocSame},                                                                       // [I]
	{"mlp.c_proj.weight", []string{"mlp.fc2.weight"}, ocSame},                                                                 // [D, I]
	{"mlp.c_proj.bias", []string{"mlp.fc2.bias"}, ocSame},                                                                     // [D]
}

// The block prefixes of each tower, open_clip's and HF's.
const (
	ocVisualBlocks = "visual.transformer.resblocks."
	ocTextBlocks   = "transformer.resblocks."
	hfVisualBlocks = "vision_model.encoder.layers."
	hfTextBlocks   = "text_model.encoder.layers."
)

// openCLIPIgnored are entries of OpenAI/open_clip state dicts that are no parameters:
// OpenAI's JIT archives carry the first three as scalars, older open_clip versions the
// causal mask as a buffer.
var openCLIPIgnored = map[string]bool{"input_resolution": true, "context_length": true, "vocab_size": true, "attn_mask": true}

// openCLIPRules expands the table for cfg's layer counts, in state-dict order.
func openCLIPRules(cfg Config) []ocRule {
	rules := slices.Clone(openCLIPTop)
	tower := func(layers int64, ocPrefix, hfPrefix string) {
		for l := range layers {
			oc, hf := ocPrefix+strconv.FormatInt(l, 10)+".", hfPrefix+strconv.FormatInt(l, 10)+"."
			for _, r := range openCLIPBlock {
				keys := make([]string, len(r.hf))
				for i, k := range r.hf {
					keys[i] = hf + k
				}
				rules = append(rules, ocRule{oc + r.oc, keys, r.op})
			}
		}
	}
	tower(cfg.Vision.NumHiddenLayers, ocVisualBlocks, hfVisualBlocks)
	tower(cfg.Text.NumHiddenLayers, ocTextBlocks, hfTextBlocks)
	return rules
}

// ocShape is the open_clip shape of a rule, from the shape of its (first) HF tensor.
func (r ocRule) ocShape(hf []int64) []int64 {
	switch r.op {
	case ocTranspose:
		return []int64{hf[1], hf[0]}
	case ocQKV:
		s := slices.Clone(hf)
		s[0] *= 3
		return s
	}
	return hf
}

// OpenCLIPShapes lists the state dict an OpenAI/open_clip CLIP of architecture cfg has:
// its keys and shapes, in the table's order.
func OpenCLIPShapes(cfg Config) []ParamShape {
	hf := map[string][]int64{}
	for _, p := range ParamShapes(cfg) {
		hf[p.Name] = p.Shape
	}
	var ps []ParamShape
	for _, r := range openCLIPRules(cfg) {
		ps = append(ps, ParamShape{r.oc, r.ocShape(hf[r.hf[0]])})
	}
	return ps
}

// IsOpenCLIPKeys reports whether a state dict's keys (after StripModulePrefix) are in
// OpenAI's / open_clip's layout rather than HF's: whether any is one of its top-level
// names or lies under visual. or transformer.resblocks.
func IsOpenCLIPKeys(keys []string) bool {
	for _, k := range keys {
		if strings.HasPrefix(k, "visual.") || strings.HasPrefix(k, ocTextBlocks) ||
			k == "token_embedding.weight" || k == "positional_embedding" || k == "text_projection" {
			return true
		}
	}
	return false
}

// StripModulePrefix removes the "module." that torch's DataParallel and
// DistributedDataParallel put before every key (open_clip's training checkpoints have
// it), when every key has it; otherwise sd is returned as it is.
func StripModulePrefix[T any](sd map[string]T) map[string]T {
	const prefix = "module."
	if len(sd) == 0 {
		return sd
	}
	for k := range sd {
		if !strings.HasPrefix(k, prefix) {
			return sd
		}
	}
	out := make(map[string]T, len(sd))
	for k, v := range sd {
		out[strings.TrimPrefix(k, prefix)] = v
	}
	return out
}

// InferOpenCLIPConfig infers an HF config from the shapes of an OpenAI/open_clip state
// dict (keys without "module."):
//   - widths, patch size, channels, image size ((N+1) positions: sqrt(N) patches a side),
//     vocabulary, context length, MLP widths and projection_dim from the tensors;
//   - layers from the highest resblocks index of each tower;
//   - heads: width / 64 in both towers (OpenAI's rule, and open_clip's head_width 64;
//     ViT-B/16's 12 and 8 heads), an error when 64 does not divide a width;
//   - hidden_act "gelu": the weights do not tell it, and open_clip's model configs use
//     GELU unless named -quickgelu (OpenAI's own weights use quick_gelu: give such a
//     checkpoint its config instead);
//   - text pooling at argmax(ids) (eos_token_id 2, with bos 0 and pad 1, as the legacy
//     OpenAI configs of transformers), open_clip's argmax pooling; layer_norm_eps 1e-5.
//
// Keys it needs and lacks are all named in one error wrapping ErrArchitectureUnknown.
func InferOpenCLIPConfig(shapes map[string][]int64) (Config, error) {
	var missing, bad []string
	get := func(key string, rank int) []int64 {
		s, ok := shapes[key]
		if !ok {
			missing = append(missing, key)
			return nil
		}
		if len(s) != rank {
			bad = append(bad, fmt.Sprintf("%s has shape %v, want %d dimensions", key, s, rank))
			return nil
		}
		return s
	}
	layers := func(prefix string) int64 {
		n := int64(0)
		for k := range shapes {
			if rest, ok := strings.CutPrefix(k, prefix); ok {
				idx, _, _ := strings.Cut(rest, ".")
				if l, err := strconv.ParseInt(idx, 10, 64); err == nil && l+1 > n {
					n = l + 1
				}
			}
		}
		if n == 0 {
			missing = append(missing, prefix+"0.*")
		}
		return n
	}
	heads := func(what string, width int64) int64 {
		if width%64 != 0 {
			bad = append(bad, fmt.Sprintf("%s width %d is not a multiple of 64, so its number of heads is not width/64", what, width))
			return 0
		}
		return width / 64
	}

	c := DefaultConfig()
	conv := get("visual.conv1.weight", 4)             // [Dv, C, p, p]
	vpos := get("visual.positional_embedding", 2)     // [N+1, Dv]
	vfc := get(ocVisualBlocks+"0.mlp.c_fc.weight", 2) // [Iv, Dv]
	vproj := get("visual.proj", 2)                    // [Dv, P]
	tok := get("token_embedding.weight", 2)           // [V, Dt]
	tpos := get("positional_embedding", 2)            // [T, Dt]
	tfc := get(ocTextBlocks+"0.mlp.c_fc.weight", 2)   // [It, Dt]
	vl, tl := layers(ocVisualBlocks), layers(ocTextBlocks)
	if conv != nil && vpos != nil {
		c.Vision.HiddenSize, c.Vision.NumChannels, c.Vision.PatchSize = conv[0], conv[1], conv[2]
		g := int64(math.Round(math.Sqrt(float64(vpos[0] - 1))))
		if conv[2] != conv[3] || g*g != vpos[0]-1 {
			bad = append(bad, fmt.Sprintf("visual.conv1.weight %v and visual.positional_embedding %v are not square patches of a square image", conv, vpos))
		}
		c.Vision.ImageSize = g * conv[2]
		c.Vision.NumAttentionHeads = heads("vision", conv[0])
	}
	if vfc != nil {
		c.Vision.IntermediateSize = vfc[0]
	}
	if tok != nil && tpos != nil {
		c.Text.VocabSize, c.Text.HiddenSize, c.Text.MaxPositionEmbeddings = tok[0], tok[1], tpos[0]
		c.Text.NumAttentionHeads = heads("text", tok[1])
	}
	if tfc != nil {
		c.Text.IntermediateSize = tfc[0]
	}
	if vproj != nil {
		c.ProjectionDim = vproj[1]
	}
	c.Vision.NumHiddenLayers, c.Text.NumHiddenLayers = vl, tl
	c.Vision.HiddenAct, c.Text.HiddenAct = "gelu", "gelu"
	c.Text.EOSTokenID, c.Text.BOSTokenID, c.Text.PadTokenID = 2, 0, 1
	c.Text.ProjectionDim, c.Vision.ProjectionDim = c.ProjectionDim, c.ProjectionDim
	if len(missing) > 0 {
		sort.Strings(missing)
		bad = append([]string{fmt.Sprintf("%d missing keys: %s", len(missing), strings.Join(missing, ", "))}, bad...)
	}
	if len(bad) > 0 {
		return Config{}, fmt.Errorf("open_clip state dict: %w from its shapes: %s", ErrArchitectureUnknown, strings.Join(bad, "; "))
	}
	if err := c.Validate(); err != nil {
		return Config{}, fmt.Errorf("open_clip state dict: architecture inferred from its shapes: %w", err)
	}
	return c, nil
}

// FromOpenCLIP maps an OpenAI/open_clip state dict (keys without "module.") to HF keys
// for architecture cfg: in_proj split into q, k, v (in that order), visual.proj and
// text_projection transposed. The results are views of sd's tensors (or sd's tensors
// themselves), owned by the caller's scope or by sd: copy them before freeing sd, as
// LoadStateDict does. Unless every key of the table is present with its shape and no
// other key is (but the ignored non-parameters: input_resolution, context_length,
// vocab_size, attn_mask), nothing is mapped and a *StateDictError names every missing,
// unexpected and mis-shaped key in open_clip's names.
func FromOpenCLIP(sd map[string]*torch.Tensor, cfg Config) (map[string]*torch.Tensor, error) {
	shapes, err := tensorShapes(sd)
	if err != nil {
		return nil, err
	}
	if err := checkOpenCLIP(shapes, cfg); err != nil {
		return nil, err
	}
	hf := map[string]*torch.Tensor{}
	var at string // the key in hand, named when libtorch fails on it
	err = torch.Try(func() {
		for _, r := range openCLIPRules(cfg) {
			at = r.oc
			t := sd[r.oc]
			switch r.op {
			case ocSame:
				hf[r.hf[0]] = t
			case ocTranspose:
				hf[r.hf[0]] = t.T() // [P, D]
			case ocQKV:
				d := t.Size(0) / 3
				for i, k := range r.hf {
					hf[k] = t.Narrow(0, int64(i)*d, d) // [D, ...] of [3D, ...]
				}
			}
		}
	})
	if err != nil {
		return nil, fmt.Errorf("open_clip layout: %s: %w", at, err)
	}
	return hf, nil
}

// tensorShapes maps each key of sd to its tensor's shape; a nil or freed tensor is an
// error naming its key.
func tensorShapes(sd map[string]*torch.Tensor) (map[string][]int64, error) {
	shapes := make(map[string][]int64, len(sd))
	for _, k := range slices.Sorted(maps.Keys(sd)) {
		if err := torch.Try(func() { shapes[k] = sd[k].Shape() }); err != nil {
			return nil, fmt.Errorf("tensor %q: %w", k, err)
		}
	}
	return shapes, nil
}

// checkOpenCLIP reports every missing, unexpected and mis-shaped key of an open_clip
// state dict for cfg, in one *StateDictError.
func checkOpenCLIP(shapes map[string][]int64, cfg Config) error {
	serr := &StateDictError{}
	known := map[string]bool{}
	for _, p := range OpenCLIPShapes(cfg) {
		known[p.Name] = true
		got, ok := shapes[p.Name]
		if !ok {
			serr.Missing = append(serr.Missing, p.Name)
		} else if !slices.Equal(got, p.Shape) {
			serr.Mismatched = append(serr.Mismatched, ShapeMismatch{p.Name, p.Shape, got})
		}
	}
	for k := range shapes {
		if !known[k] && !openCLIPIgnored[k] {
			serr.Unexpected = append(serr.Unexpected, k)
		}
	}
	sort.Strings(serr.Unexpected)
	if len(serr.Missing)+len(serr.Unexpected)+len(serr.Mismatched) > 0 {
		return fmt.Errorf("open_clip layout: %w", serr)
	}
	return nil
}

// OpenCLIPStateDict returns the model's weights in OpenAI's / open_clip's layout, with
// floating-point tensors in dtype: q, k, v concatenated into in_proj, the projections
// transposed ([D, P]), the rest the model's own tensors (or their dtype copies). The
// new tensors belong to the caller's innermost scope; run it in a torch.Scope and close
// it when done with the map. Call release when done with it (it frees the dtype
// copies).
func OpenCLIPStateDict(m *Model, dtype torch.DType) (sd map[string]*torch.Tensor, release func(), err error) {
	hf, release, err := stateDictAs(m, dtype)
	if err != nil {
		return nil, nil, err
	}
	sd = map[string]*torch.Tensor{}
	var at string // the key in hand, named when libtorch fails on it
	err = torch.Try(func() {
		torch.NoGrad(func() {
			for _, r := range openCLIPRules(m.Config) {
				at = r.oc
				switch r.op {
				case ocSame:
					sd[r.oc] = hf[r.hf[0]]
				case ocTranspose:
					sd[r.oc] = hf[r.hf[0]].T().Contiguous() // [D, P]
				case ocQKV:
					sd[r.oc] = torch.Cat([]*torch.Tensor{hf[r.hf[0]], hf[r.hf[1]], hf[r.hf[2]]}, 0) // [3D, ...]
				}
			}
		})
	})
	if err != nil {
		release()
		return nil, nil, fmt.Errorf("open_clip layout: %s: %w", at, err)
	}
	return sd, release, nil
}

// SaveOpenCLIP writes the model's weights in OpenAI's / open_clip's layout (a bare
// state dict, as open_clip's load_checkpoint and CLIP.load_state_dict take it), with
// floating-point tensors in dtype, to path: a .safetensors file, or a torch.save file
// for any other extension (.pt, .bin, .pth) that torch.load(path, weights_only=True)
// opens. The file is written atomically.
func SaveOpenCLIP(path string, m *Model, dtype torch.DType) error {
	s := torch.NewScope()
	defer s.Close()
	sd, release, err := OpenCLIPStateDict(m, dtype)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	defer release()
	if strings.EqualFold(filepath.Ext(path), ".safetensors") {
		return torch.SaveSafetensors(path, sd, map[string]string{"format": safetensorsFormatPT})
	}
	return torch.SavePT(path, sd)
}

// LoadAnyLayout reads the source's weights, in HF's layout or OpenAI's / open_clip's
// (a bare dict or a {"state_dict": ...} checkpoint, with or without "module."
// prefixes; .pt, .bin or .safetensors), and builds the model on dev with
// floating-point weights converted to dtype. The architecture is cfg when it is not
// nil; otherwise the source's config (an HF config.json, or the open_clip_config.json
// of a source FindAnyCheckpoint found), and without one an error wrapping
// ErrArchitectureUnknown for HF keys and InferOpenCLIPConfig for open_clip keys. It
// returns the config used and the layout found. Every missing, unexpected and
// mis-shaped key is reported in one error, in the source's own key names.
func (s Source) LoadAnyLayout(cfg *Config, dev torch.Device, dtype torch.DType) (*Model, Config, Layout, error) {
	sd, err := s.ReadStateDict(dev, dtype)
	if err != nil {
		return nil, Config{}, "", err
	}
	defer torch.FreeMap(sd)
	sd = StripModulePrefix(sd)
	keys := make([]string, 0, len(sd))
	for k := range sd {
		keys = append(keys, k)
	}
	layout := LayoutHF
	if IsOpenCLIPKeys(keys) {
		layout = LayoutOpenCLIP
	}
	fail := func(err error) (*Model, Config, Layout, error) {
		return nil, Config{}, layout, fmt.Errorf("checkpoint %s: %w", s.weightsName(), err)
	}

	var c Config
	switch {
	case cfg != nil:
		c = *cfg
	case s.Config != "":
		if c, err = loadSourceConfig(s); err != nil {
			return nil, Config{}, layout, err
		}
	case layout == LayoutHF:
		return fail(fmt.Errorf("HF CLIP keys and no %s, so %w", ConfigFile, ErrArchitectureUnknown))
	default:
		shapes, err := tensorShapes(sd)
		if err != nil {
			return fail(err)
		}
		if c, err = InferOpenCLIPConfig(shapes); err != nil {
			return fail(err)
		}
	}

	m, err := New(c, dev)
	if err != nil {
		return nil, Config{}, layout, err
	}
	scope := torch.NewScope() // the views FromOpenCLIP makes
	defer scope.Close()
	hf := sd
	if layout == LayoutOpenCLIP {
		if hf, err = FromOpenCLIP(sd, c); err != nil {
			m.Free()
			return fail(err)
		}
	}
	if err := m.LoadStateDict(hf); err != nil {
		m.Free()
		return fail(err)
	}
	return m, c, layout, nil
}
