package clip

// Checkpoints on disk: finding the weights and config of a Hugging Face CLIP folder, a
// goclip run folder or a bare weights file; loading them into a Model (checked, not
// trusted: LoadStateDict reports every missing, unexpected and mis-shaped key); and
// writing a Model back as an HF folder, a .safetensors file or a torch.save .pt file.

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"goclip/internal/atomicfile"
	"goclip/internal/rundir"
	"goclip/torch"
	"goclip/torch/serialize"
)

// File names of a Hugging Face model folder, and those of a goclip run folder that
// FindCheckpoint reads (internal/rundir owns the run folder's layout).
const (
	ConfigFile          = "config.json"
	SafetensorsFile     = "model.safetensors"
	SafetensorsIndex    = serialize.SafetensorsIndexName // model.safetensors.index.json
	PyTorchFile         = "pytorch_model.bin"
	PreprocessorFile    = "preprocessor_config.json"
	RunModelDir         = rundir.ModelDir // RUN/model/: the final HF folder
	RunCheckpointPath   = rundir.LastPath // RUN/checkpoints/last.pt: the resumable checkpoint
	positionIDsSuffix   = ".position_ids" // HF buffers, accepted and ignored
	safetensorsFormatPT = "pt"            // __metadata__ format transformers requires
)

// tokenizerFiles are copied by SaveHF from a tokenizer folder when present; the first
// two are required unless the folder has tokenizer.json (as transformers 5 writes it).
var tokenizerFiles = []string{"vocab.json", "merges.txt", "tokenizer_config.json",
	"special_tokens_map.json", tokenizerJSON, PreprocessorFile}

const tokenizerJSON = "tokenizer.json"

// Source is a checkpoint found on disk by FindCheckpoint.
type Source struct {
	// Path is the path FindCheckpoint was given.
	Path string
	// Kind says what Path is: "hf" (an HF model folder), "run" (a goclip run folder
	// without model/, read from its checkpoints/last.pt) or "file" (a weights file).
	// A run folder with model/ is found as the "hf" folder RUN/model.
	Kind string
	// Dir is the folder that holds the weights.
	Dir string
	// Config is the config.json to build the model from ("" when there is none, as for
	// a bare .pt: the caller must supply the architecture).
	Config string
	// Weights are the weight files: one .safetensors, .pt or .bin, or a sharded
	// checkpoint's shards in name order.
	Weights []string
	// Index is the sharded checkpoint's model.safetensors.index.json, or "".
	Index string
	// Tokenizer is a folder holding vocab.json and merges.txt, or tokenizer.json, next to
	// the weights, or "".
	Tokenizer string
}

func isFile(path string) bool {
	st, err := os.Stat(path)
	return err == nil && st.Mode().IsRegular()
}

func isDir(path string) bool {
	st, err := os.Stat(path)
	return err == nil && st.IsDir()
}

// FindCheckpoint locates the config and weights at path, which may be:
//   - a Hugging Face CLIP folder: config.json with model.safetensors, or a sharded
//     model.safetensors.index.json and its shards, or pytorch_model.bin (in that order
//     of preference);
//   - a goclip run folder: RUN/model/ when the run finished, else RUN/config.json with
//     the weights of RUN/checkpoints/last.pt (its "model" or "state_dict" entry);
//   - a weights file (.safetensors, .pt, .bin, .pth, or a model.safetensors.index.json),
//     with the config.json beside it when there is one.
//
// It reads no weights; a missing config is reported by Source.LoadConfig.
func FindCheckpoint(path string) (Source, error) {
	st, err := os.Stat(path)
	if err != nil {
		return Source{}, fmt.Errorf("checkpoint: %w", err)
	}
	if !st.IsDir() {
		return findFile(path)
	}
	if sub := filepath.Join(path, RunModelDir); isDir(sub) && isFile(filepath.Join(sub, ConfigFile)) {
		s, err := findFolder(sub)
		s.Path = path
		return s, err
	}
	return findFolder(path)
}

// findFolder finds the weights of an HF folder, or of a run folder without model/.
func findFolder(dir string) (Source, error) {
	s := Source{Path: dir, Kind: "hf", Dir: dir}
	if cfg := filepath.Join(dir, ConfigFile); isFile(cfg) {
		s.Config = cfg
	}
	s.Tokenizer = tokenizerIn(dir)
	switch {
	case isFile(filepath.Join(dir, SafetensorsFile)):
		s.Weights = []string{filepath.Join(dir, SafetensorsFile)}
	case isFile(filepath.Join(dir, SafetensorsIndex)):
		if err := s.readIndex(filepath.Join(dir, SafetensorsIndex)); err != nil {
			return Source{}, err
		}
	case isFile(filepath.Join(dir, PyTorchFile)):
		s.Weights = []string{filepath.Join(dir, PyTorchFile)}
	case isFile(filepath.Join(dir, RunCheckpointPath)):
		s.Kind = "run"
		s.Weights = []string{filepath.Join(dir, RunCheckpointPath)}
	default:
		return Source{}, fmt.Errorf("checkpoint: %s holds no model weights (looked for %s, %s, %s, %s/ and %s)",
			dir, SafetensorsFile, SafetensorsIndex, PyTorchFile, RunModelDir, RunCheckpointPath)
	}
	return s, nil
}

// findFile describes a single weights file (or a shard index).
func findFile(path string) (Source, error) {
	dir := filepath.Dir(path)
	s := Source{Path: path, Kind: "file", Dir: dir, Tokenizer: tokenizerIn(dir)}
	if cfg := filepath.Join(dir, ConfigFile); isFile(cfg) {
		s.Config = cfg
	}
	switch ext := strings.ToLower(filepath.Ext(path)); {
	case strings.HasSuffix(strings.ToLower(path), ".index.json"):
		if err := s.readIndex(path); err != nil {
			return Source{}, err
		}
	case ext == ".safetensors" || ext == ".pt" || ext == ".bin" || ext == ".pth" || ext == ".ckpt":
		s.Weights = []string{path}
	default:
		return Source{}, fmt.Errorf("checkpoint: %s: unknown format %q (want a model folder, .safetensors, .pt, .bin or .pth)", path, ext)
	}
	return s, nil
}

// readIndex fills Weights with the shards of a safetensors index.
func (s *Source) readIndex(index string) error {
	ix, err := serialize.ReadSafetensorsIndex(index)
	if err != nil {
		return fmt.Errorf("checkpoint: %w", err)
	}
	s.Index = index
	for _, shard := range ix.Shards() {
		s.Weights = append(s.Weights, filepath.Join(ix.Dir, shard))
	}
	return nil
}

// tokenizerIn returns dir when it holds vocab.json and merges.txt or tokenizer.json,
// else dir/tokenizer when that does, else "".
func tokenizerIn(dir string) string {
	for _, d := range []string{dir, rundir.Dir(dir).Tokenizer()} {
		if hasTokenizer(d) {
			return d
		}
	}
	return ""
}

// hasTokenizer reports whether dir holds vocab.json and merges.txt, or tokenizer.json.
func hasTokenizer(dir string) bool {
	return (isFile(filepath.Join(dir, tokenizerFiles[0])) && isFile(filepath.Join(dir, tokenizerFiles[1]))) ||
		isFile(filepath.Join(dir, tokenizerJSON))
}

// LoadConfig reads the source's config.json; a source without one is an error naming
// the folder.
func (s Source) LoadConfig() (Config, error) {
	if s.Config == "" {
		return Config{}, fmt.Errorf("checkpoint: %s has no %s, so the architecture is unknown", s.Dir, ConfigFile)
	}
	return LoadConfig(s.Config)
}

// ReadStateDict reads every weight file onto dev, converting floating-point tensors to
// dtype (a float16 or bfloat16 checkpoint loads into a float32 model) and dropping the
// *.position_ids buffers HF checkpoints carry. The caller owns the tensors
// (torch.FreeMap). Errors name the file and, where one is at fault, the key.
func (s Source) ReadStateDict(dev torch.Device, dtype torch.DType) (map[string]*torch.Tensor, error) {
	sd := map[string]*torch.Tensor{}
	from := map[string]string{}
	fail := func(err error) (map[string]*torch.Tensor, error) {
		torch.FreeMap(sd)
		return nil, err
	}
	for _, file := range s.Weights {
		err := readWeights(file, func(name string, raw serialize.RawTensor) error {
			if strings.HasSuffix(name, positionIDsSuffix) {
				return nil
			}
			if prev, dup := from[name]; dup {
				return fmt.Errorf("tensor %q is also in %s", name, prev)
			}
			t, err := tensorFromRaw(raw, dev, dtype)
			if err != nil {
				return fmt.Errorf("tensor %q: %w", name, err)
			}
			sd[name], from[name] = t, file
			return nil
		})
		if err != nil && !strings.Contains(err.Error(), file) {
			err = fmt.Errorf("checkpoint %s: %w", file, err)
		}
		if err != nil {
			return fail(err)
		}
	}
	return sd, nil
}

// readWeights calls f with each tensor of a weights file, one at a time for
// safetensors, so that the host copy of a large checkpoint is never held whole.
func readWeights(file string, f func(name string, raw serialize.RawTensor) error) error {
	if strings.EqualFold(filepath.Ext(file), ".safetensors") {
		st, err := serialize.OpenSafetensors(file)
		if err != nil {
			return err
		}
		defer st.Close()
		for _, name := range st.Names() {
			raw, err := st.Tensor(name)
			if err != nil {
				return err
			}
			if err := f(name, raw); err != nil {
				return err
			}
		}
		return nil
	}
	raw, err := serialize.ReadPT(file)
	if err != nil {
		return err
	}
	names := slices.Sorted(maps.Keys(raw))
	for _, name := range names {
		if err := f(name, raw[name]); err != nil {
			return err
		}
		delete(raw, name) // let the host copy go
	}
	return nil
}

// tensorFromRaw makes a tensor on dev, converted to dtype when it is floating point.
func tensorFromRaw(raw serialize.RawTensor, dev torch.Device, dtype torch.DType) (*torch.Tensor, error) {
	t, err := torch.FromRaw(raw, dev)
	if err != nil {
		return nil, err
	}
	var c *torch.Tensor
	err = torch.Try(func() {
		c = t.Owned()
		if c.DType().IsFloat() && c.DType() != dtype {
			c = t.To(dtype).Owned()
			t.Free()
		}
	})
	if err != nil {
		t.Free()
		return nil, err
	}
	return c, nil
}

// Load builds a model from cfg on dev and loads the source's weights into it, converted
// to dtype. Every missing, unexpected or mis-shaped key is reported in one error.
func (s Source) Load(cfg Config, dev torch.Device, dtype torch.DType) (*Model, error) {
	sd, err := s.ReadStateDict(dev, dtype)
	if err != nil {
		return nil, err
	}
	defer torch.FreeMap(sd)
	m, err := New(cfg, dev)
	if err != nil {
		return nil, err
	}
	if err := m.LoadStateDict(sd); err != nil {
		m.Free()
		return nil, fmt.Errorf("checkpoint %s: %w", s.weightsName(), err)
	}
	return m, nil
}

// weightsName names the weights in errors: the file, or the shard index.
func (s Source) weightsName() string {
	if s.Index != "" {
		return s.Index
	}
	return strings.Join(s.Weights, ", ")
}

// LoadPretrained loads the model that `--model DIR` names: an HF CLIP folder or a run
// folder (see FindCheckpoint). Floating-point weights are converted to dtype as they are
// read (float16 and bfloat16 checkpoints load into float32 training with
// torch.Float32); the parameters themselves are float32, as New makes them, so any
// other dtype only rounds the values. Errors name the folder or file at fault and, for
// a state dict that does not fit the config, every missing, unexpected and mis-shaped
// key (a *StateDictError, wrapped).
func LoadPretrained(dir string, dev torch.Device, dtype torch.DType) (*Model, Config, error) {
	src, err := FindCheckpoint(dir)
	if err != nil {
		return nil, Config{}, err
	}
	if src.Kind == "file" {
		return nil, Config{}, fmt.Errorf("checkpoint: %s is a file; --model wants a model folder (convert it with goclip convert)", dir)
	}
	cfg, err := src.LoadConfig()
	if err != nil {
		return nil, Config{}, err
	}
	m, err := src.Load(cfg, dev, dtype)
	if err != nil {
		return nil, Config{}, err
	}
	return m, cfg, nil
}

// stateDictAs returns the model's state dict with floating-point tensors in dtype: the
// model's own tensors where they already are, converted copies elsewhere. Call release
// when done with it; it frees the copies only.
func stateDictAs(m *Model, dtype torch.DType) (sd map[string]*torch.Tensor, release func(), err error) {
	if m == nil {
		return nil, nil, errors.New("no model (nil *Model)")
	}
	sd = m.StateDict()
	var copies []*torch.Tensor
	release = func() {
		for _, t := range copies {
			t.Free()
		}
	}
	var at string // the key in hand, named when libtorch fails on it
	err = torch.Try(func() {
		torch.NoGrad(func() {
			for k, t := range sd {
				at = k
				if t.DType().IsFloat() && t.DType() != dtype {
					c := t.To(dtype).Owned()
					copies = append(copies, c)
					sd[k] = c
				}
			}
		})
	})
	if err != nil {
		release()
		return nil, nil, fmt.Errorf("%s: %w", at, err)
	}
	return sd, release, nil
}

// SaveWeights writes the model's state dict, HF keys, with floating-point tensors in
// dtype, to path: a .safetensors file (with the {"format": "pt"} metadata transformers
// wants) or a torch.save file for any other extension (.pt, .bin, .pth), which
// torch.load(path, weights_only=True) opens. The file is written atomically.
func SaveWeights(path string, m *Model, dtype torch.DType) error {
	return saveWeights(path, m, dtype, !strings.EqualFold(filepath.Ext(path), ".safetensors"))
}

// saveWeights writes a torch.save file when pt, else a .safetensors file.
func saveWeights(path string, m *Model, dtype torch.DType, pt bool) error {
	sd, release, err := stateDictAs(m, dtype)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	defer release()
	if pt {
		return torch.SavePT(path, sd)
	}
	return torch.SaveSafetensors(path, sd, map[string]string{"format": safetensorsFormatPT})
}

// SavePT writes the model's state dict as float32 with HF keys to path in torch.save's
// format, atomically: torch.load(path, weights_only=True) returns it, and
// transformers' CLIPModel.load_state_dict accepts it.
func SavePT(path string, m *Model) error {
	return saveWeights(path, m, torch.Float32, true)
}

// SaveHF writes an HF CLIP model folder with float32 weights; see SaveHFAs.
func SaveHF(dir string, m *Model, cfg Config, tokenizerDir string) error {
	return SaveHFAs(dir, m, cfg, tokenizerDir, torch.Float32)
}

// SaveHFAs writes an HF CLIP model folder that transformers' CLIPModel.from_pretrained
// and CLIPProcessor.from_pretrained open: config.json (torch_dtype set to dtype),
// model.safetensors (floating-point weights in dtype), the tokenizer files of
// tokenizerDir (vocab.json and merges.txt, required unless there is tokenizer.json, and
// tokenizer_config.json, special_tokens_map.json, tokenizer.json,
// preprocessor_config.json when present; tokenizer_config.json, special_tokens_map.json
// and preprocessor_config.json are written for CLIP's defaults when absent). With
// tokenizerDir "" no tokenizer files are written.
//
// The folder is built in a temporary sibling and then renamed into place when dir does
// not exist yet; otherwise each file is renamed into dir in turn, so every file of dir
// is at any moment either the old one or the complete new one.
func SaveHFAs(dir string, m *Model, cfg Config, tokenizerDir string, dtype torch.DType) (err error) {
	dir = filepath.Clean(dir)
	if st, err := os.Stat(dir); err == nil && !st.IsDir() {
		return fmt.Errorf("save %s: exists and is not a folder", dir)
	}
	parent := filepath.Dir(dir)
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return fmt.Errorf("save %s: %w", dir, err)
	}
	tmp, err := os.MkdirTemp(parent, atomicfile.TempPattern(filepath.Base(dir)))
	if err != nil {
		return fmt.Errorf("save %s: %w", dir, err)
	}
	defer os.RemoveAll(tmp) // gone after the rename; removes the debris on failure
	wrap := func(err error) error { return fmt.Errorf("save %s: %w", dir, err) }

	if err := writeConfig(filepath.Join(tmp, ConfigFile), cfg, dtype); err != nil {
		return wrap(err)
	}
	if err := saveWeights(filepath.Join(tmp, SafetensorsFile), m, dtype, false); err != nil {
		return wrap(err)
	}
	if tokenizerDir != "" {
		if err := writeTokenizerFiles(tmp, tokenizerDir, cfg); err != nil {
			return wrap(err)
		}
	}
	if err := os.Chmod(tmp, 0o755); err != nil {
		return wrap(err)
	}
	if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
		if err := os.Rename(tmp, dir); err != nil {
			return wrap(err)
		}
		return nil
	}
	entries, err := os.ReadDir(tmp)
	if err != nil {
		return wrap(err)
	}
	for _, e := range entries {
		if err := os.Rename(filepath.Join(tmp, e.Name()), filepath.Join(dir, e.Name())); err != nil {
			return wrap(err)
		}
	}
	return nil
}

// writeConfig saves cfg with its torch_dtype set to dtype.
func writeConfig(path string, cfg Config, dtype torch.DType) error {
	if err := cfg.Save(path); err != nil {
		return err
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(data, &obj); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	obj["torch_dtype"], _ = json.Marshal(dtype.String())
	return atomicfile.WriteJSON(path, obj)
}

// writeTokenizerFiles copies the tokenizer files of src into dst and writes HF's
// defaults for the small JSON files src lacks.
func writeTokenizerFiles(dst, src string, cfg Config) error {
	hasJSON := isFile(filepath.Join(src, tokenizerJSON))
	for i, name := range tokenizerFiles {
		from := filepath.Join(src, name)
		if !isFile(from) {
			if i < 2 && !hasJSON {
				return fmt.Errorf("tokenizer folder %s has no %s (nor %s)", src, name, tokenizerJSON)
			}
			continue
		}
		if err := copyFile(filepath.Join(dst, name), from); err != nil {
			return err
		}
	}
	defaults := map[string]any{
		"special_tokens_map.json": map[string]any{
			"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>",
			"pad_token": "<|endoftext|>", "unk_token": "<|endoftext|>",
		},
		"tokenizer_config.json": map[string]any{
			"tokenizer_class": "CLIPTokenizer", "model_max_length": cfg.Text.MaxPositionEmbeddings,
			"do_lower_case": true, "errors": "replace",
			"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>",
			"pad_token": "<|endoftext|>", "unk_token": "<|endoftext|>",
		},
		PreprocessorFile: preprocessorConfig(cfg.Vision.ImageSize),
	}
	for name, v := range defaults {
		if isFile(filepath.Join(dst, name)) {
			continue
		}
		if err := atomicfile.WriteJSON(filepath.Join(dst, name), v); err != nil {
			return err
		}
	}
	return nil
}

// preprocessorConfig is transformers' CLIPImageProcessor configuration at size s, the
// preprocessing package dataset implements.
func preprocessorConfig(s int64) map[string]any {
	return map[string]any{
		"image_processor_type": "CLIPImageProcessor",
		"do_convert_rgb":       true,
		"do_resize":            true,
		"size":                 map[string]int64{"shortest_edge": s},
		"resample":             3, // PIL bicubic
		"do_center_crop":       true,
		"crop_size":            map[string]int64{"height": s, "width": s},
		"do_rescale":           true,
		"rescale_factor":       1.0 / 255,
		"do_normalize":         true,
		"image_mean":           []float64{0.48145466, 0.4578275, 0.40821073},
		"image_std":            []float64{0.26862954, 0.26130258, 0.27577711},
	}
}

// copyFile copies src to dst (a new file in a temporary folder).
func copyFile(dst, src string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return fmt.Errorf("copying %s: %w", src, err)
	}
	return out.Close()
}
