package clip

import (
	"fmt"
	"slices"
	"sort"
	"strings"

	"goclip/torch"
)

// StateDict maps every HF key of NamedParameters to the parameter itself (the model's
// own tensors, not copies: the model still owns them, so do not Free them).
func (m *Model) StateDict() map[string]*torch.Tensor {
	sd := make(map[string]*torch.Tensor)
	for _, p := range m.NamedParameters() {
		sd[p.Name] = p.T
	}
	return sd
}

// ShapeMismatch is a state-dict entry whose shape differs from the parameter's.
type ShapeMismatch struct {
	Key              string
	Expected, Actual []int64
}

// StateDictError lists everything wrong with a state dict at once, by key.
type StateDictError struct {
	Missing    []string        // parameters with no entry
	Unexpected []string        // entries with no parameter
	Mismatched []ShapeMismatch // entries of the wrong shape
	// Shapes, where set, holds the shape of each Missing key (the parameter's) and of
	// each Unexpected key (the entry's); Error writes them after the names.
	Shapes map[string][]int64
}

// SetShape records the shape of a Missing key (the parameter's) or an Unexpected key
// (the entry's), for Error.
func (e *StateDictError) SetShape(key string, shape []int64) {
	if e.Shapes == nil {
		e.Shapes = map[string][]int64{}
	}
	e.Shapes[key] = shape
}

// withShape is key followed by its shape in e.Shapes, when known.
func (e *StateDictError) withShape(key string) string {
	if s, ok := e.Shapes[key]; ok {
		return fmt.Sprintf("%s %v", key, s)
	}
	return key
}

// named is keys with their shapes, comma-separated.
func (e *StateDictError) named(keys []string) string {
	out := make([]string, len(keys))
	for i, k := range keys {
		out[i] = e.withShape(k)
	}
	return strings.Join(out, ", ")
}

func (e *StateDictError) Error() string {
	var parts []string
	if len(e.Missing) > 0 {
		parts = append(parts, fmt.Sprintf("%d missing keys: %s", len(e.Missing), e.named(e.Missing)))
	}
	if len(e.Unexpected) > 0 {
		parts = append(parts, fmt.Sprintf("%d unexpected keys: %s", len(e.Unexpected), e.named(e.Unexpected)))
	}
	if len(e.Mismatched) > 0 {
		ms := make([]string, len(e.Mismatched))
		for i, m := range e.Mismatched {
			ms[i] = fmt.Sprintf("%s: expected %v, got %v", m.Key, m.Expected, m.Actual)
		}
		parts = append(parts, fmt.Sprintf("%d shape mismatches: %s", len(ms), strings.Join(ms, "; ")))
	}
	return "state dict does not match the model: " + strings.Join(parts, "; ")
}

// LoadStateDict copies sd's values into the parameters (under NoGrad, converting dtype
// and device). Keys are HF CLIPModel keys; "*.position_ids" buffers are accepted and
// ignored. Unless every parameter has an entry of its shape and every other entry is a
// position_ids buffer, nothing is copied and a *StateDictError names every missing key,
// every unexpected key and every shape mismatch with both shapes.
func (m *Model) LoadStateDict(sd map[string]*torch.Tensor) error {
	params := m.NamedParameters()
	known := make(map[string]bool, len(params))
	serr := &StateDictError{}
	var at string // the key in hand, named when libtorch fails on it (a freed tensor)
	err := torch.Try(func() {
		for _, p := range params {
			known[p.Name] = true
			at = p.Name
			src, ok := sd[p.Name]
			if !ok || src == nil {
				serr.Missing = append(serr.Missing, p.Name)
				continue
			}
			if want, got := p.T.Shape(), src.Shape(); !slices.Equal(want, got) {
				serr.Mismatched = append(serr.Mismatched, ShapeMismatch{p.Name, want, got})
			}
		}
	})
	if err != nil {
		return fmt.Errorf("state dict: %s: %w", at, err)
	}
	for k := range sd {
		if !known[k] && k != "position_ids" && !strings.HasSuffix(k, ".position_ids") {
			serr.Unexpected = append(serr.Unexpected, k)
		}
	}
	sort.Strings(serr.Unexpected)
	if len(serr.Missing)+len(serr.Unexpected)+len(serr.Mismatched) > 0 {
		return serr
	}
	err = torch.Try(func() {
		torch.NoGrad(func() {
			for _, p := range params {
				at = p.Name
				p.T.CopyFrom(sd[p.Name])
			}
		})
	})
	if err != nil {
		return fmt.Errorf("state dict: %s: %w", at, err)
	}
	return nil
}
