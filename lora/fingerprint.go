package lora

// Fingerprints tie an adapter to the base weights it was trained on, and a merged model
// to the adapters merged into it:
//
//   - adapter_model.safetensors' metadata holds MetaBaseFingerprint, a hash of a fixed
//     sample of the base model's weights (Fingerprint), taken when the adapter was
//     injected; Load compares it with the model it is given.
//   - a merged model's config.json lists, under MergedKey, the fingerprint of every
//     adapter merged into it (and of its base), so that the same adapter is not applied
//     twice (MarkMerged, MergedInto).

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"goclip/clip"
	"goclip/internal/atomicfile"
	"goclip/nn"
	"goclip/torch"
)

// MetaBaseFingerprint is the adapter_model.safetensors metadata key of the base
// model's fingerprint.
const MetaBaseFingerprint = "goclip.base_fingerprint"

// MergedKey is the config.json key of a merged model's list of merged adapters.
const MergedKey = "goclip_merged_adapters"

// fingerprintSamples is how many values of each tensor a fingerprint reads.
const fingerprintSamples = 16

// Fingerprint hashes the names, shapes and a fixed sample of the values (16 evenly
// spaced elements, as float32) of the tensors ps, in name order: "v1:" and 32 hex
// digits. It reads a few values per tensor, so it costs little even for ViT-B/16 on a
// GPU. Weights converted to another dtype give another fingerprint.
func Fingerprint(ps []nn.Named) (string, error) {
	sorted := slices.Clone(ps)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].Name < sorted[j].Name })
	h := sha256.New()
	var buf [8]byte
	var at string // the tensor in hand, named when libtorch fails on it
	err := torch.Try(func() {
		s := torch.NewScope()
		defer s.Close()
		torch.NoGrad(func() {
			for _, p := range sorted {
				at = p.Name
				h.Write([]byte(p.Name))
				h.Write([]byte{0})
				shape := p.T.Shape()
				for _, d := range shape {
					binary.LittleEndian.PutUint64(buf[:], uint64(d))
					h.Write(buf[:])
				}
				h.Write([]byte{0xff})
				n := p.T.Numel()
				if n == 0 {
					continue
				}
				k := min(n, fingerprintSamples)
				idx := make([]int64, k)
				for j := range idx {
					if k > 1 {
						idx[j] = int64(j) * (n - 1) / (k - 1)
					}
				}
				ix := torch.FromInt64(idx, k).ToDevice(p.T.Device(), false)
				vals := p.T.Reshape(-1).IndexSelect(0, ix).Float32s()
				for _, v := range vals {
					binary.LittleEndian.PutUint32(buf[:4], math.Float32bits(v))
					h.Write(buf[:4])
				}
			}
		})
	})
	if err != nil {
		return "", fmt.Errorf("lora: fingerprint: %s: %w", at, err)
	}
	return "v1:" + hex.EncodeToString(h.Sum(nil)[:16]), nil
}

// baseParams are the parameters of m that an adapter of cfg leaves as they are: every
// parameter but LoRA matrices and the modules to save (which the adapter trains).
func baseParams(m *clip.Model, cfg Config) []nn.Named {
	saved := cfg.modulesToSave()
	var out []nn.Named
	for _, p := range m.NamedParameters() {
		if strings.HasSuffix(p.Name, ".lora_A.weight") || strings.HasSuffix(p.Name, ".lora_B.weight") {
			continue
		}
		skip := false
		for _, s := range saved {
			if p.Name == s || strings.HasPrefix(p.Name, s+".") {
				skip = true
			}
		}
		if !skip {
			out = append(out, p)
		}
	}
	return out
}

// BaseFingerprint is the fingerprint of the base weights the adapter was injected into,
// taken at Inject (before any training or merge).
func (a *Adapter) BaseFingerprint() string { return a.base }

// AdapterFingerprint is the fingerprint of the adapter's own tensors (StateDict).
func (a *Adapter) AdapterFingerprint() (string, error) {
	sd := a.StateDict()
	ps := make([]nn.Named, 0, len(sd))
	for k, t := range sd {
		ps = append(ps, nn.Named{Name: k, T: t})
	}
	return Fingerprint(ps)
}

// MergedAdapter is one element of a merged model's MergedKey list.
type MergedAdapter struct {
	Adapter string `json:"adapter"`        // the adapter's AdapterFingerprint
	Base    string `json:"base,omitempty"` // the base it was merged into
	Path    string `json:"path,omitempty"` // the adapter folder, for messages
}

// MergedInto reads the MergedKey list in the config.json of the model at path (an HF
// or run folder, or a weights file with its config beside it); none when path is "",
// has no config, or its config has no such key.
func MergedInto(path string) ([]MergedAdapter, error) {
	if path == "" {
		return nil, nil
	}
	src, err := clip.FindCheckpoint(path)
	if err != nil || src.Config == "" {
		return nil, nil
	}
	configPath := src.Config
	data, err := os.ReadFile(configPath)
	if err != nil {
		return nil, fmt.Errorf("lora: %w", err)
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(data, &obj); err != nil {
		return nil, fmt.Errorf("lora: %s: %w", configPath, err)
	}
	raw, ok := obj[MergedKey]
	if !ok || string(raw) == "null" {
		return nil, nil
	}
	var list []MergedAdapter
	if err := json.Unmarshal(raw, &list); err != nil {
		return nil, fmt.Errorf("lora: %s: %s: %w", configPath, MergedKey, err)
	}
	return list, nil
}

// MarkMerged records in configPath (a merged model's config.json) that the adapters
// of list are merged into its weights (nothing when list is empty).
func MarkMerged(configPath string, list []MergedAdapter) error {
	if len(list) == 0 {
		return nil
	}
	data, err := os.ReadFile(configPath)
	if err != nil {
		return fmt.Errorf("lora: %w", err)
	}
	var obj map[string]json.RawMessage // the other entries kept byte for byte (1.0 stays 1.0)
	if err := json.Unmarshal(data, &obj); err != nil {
		return fmt.Errorf("lora: %s: %w", configPath, err)
	}
	if obj[MergedKey], err = json.Marshal(list); err != nil {
		return err
	}
	return atomicfile.WriteJSON(configPath, obj)
}

// MergedEntry describes the adapter for MarkMerged; call it before the adapter is
// merged and unloaded. dir is the adapter's folder ("" when it has none yet).
func (a *Adapter) MergedEntry(dir string) (MergedAdapter, error) {
	fp, err := a.AdapterFingerprint()
	if err != nil {
		return MergedAdapter{}, err
	}
	if dir != "" {
		if abs, err := filepath.Abs(dir); err == nil {
			dir = abs
		}
	}
	return MergedAdapter{Adapter: fp, Base: a.base, Path: dir}, nil
}
