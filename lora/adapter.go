package lora

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"goclip/clip"
	"goclip/nn"
	"goclip/torch"
)

// Module is one LoRA layer of an Adapter and the HF name of the slot it stands in.
type Module struct {
	Name  string // e.g. "vision_model.encoder.layers.0.self_attn.q_proj"
	Layer *Linear
	slot  *nn.Projection
}

// Adapter is the set of LoRA layers injected into one model, with the modules trained
// whole beside them (modules_to_save).
type Adapter struct {
	Config    Config
	model     *clip.Model
	modules   []Module
	trainable []nn.Named
	grads     []savedGrad // requires_grad of the model's parameters before Inject
	base      string      // Fingerprint of the base weights at Inject
}

type savedGrad struct {
	t  *torch.Tensor
	on bool
}

// Inject puts a LoRA layer (see NewLinear) into every projection slot of m that cfg
// selects, sets requires_grad off on every other parameter of the model (the base
// model is frozen: only Trainable goes to the optimizer) and on for the LoRA matrices
// and the modules to save. Slots are matched by full HF module name, as peft matches
// target_modules (see Config). It fails, changing nothing, when cfg is invalid, when it
// selects no linear layer or one of its target names selects none (the error names the
// targets and examples of the model's module names), or when a selected slot already
// holds a LoRA layer.
func Inject(m *clip.Model, cfg Config) (*Adapter, error) {
	if m == nil {
		return nil, errors.New("lora: inject: no model (nil *clip.Model)")
	}
	match, err := cfg.matcher()
	if err != nil {
		return nil, err
	}
	var names, selected []string
	var slots []nn.Slot
	for _, s := range m.Projections() {
		names = append(names, s.Name)
		if !match.selects(s.Name) {
			continue
		}
		if _, ok := (*s.Ptr).(*nn.Linear); !ok {
			return nil, fmt.Errorf("lora: %s is not a plain linear layer (%T): is an adapter already injected?", s.Name, *s.Ptr)
		}
		slots = append(slots, s)
		selected = append(selected, s.Name)
	}
	if err := checkSelection(cfg, names, selected); err != nil {
		return nil, err
	}
	if err := checkModulesToSave(cfg, selected); err != nil {
		return nil, err
	}

	base, err := Fingerprint(baseParams(m, cfg))
	if err != nil {
		return nil, err
	}
	a := &Adapter{Config: cfg, model: m, base: base}
	var at string // the parameter or module in hand, named when libtorch fails on it
	err = torch.Try(func() {
		for _, p := range m.NamedParameters() {
			at = p.Name
			a.grads = append(a.grads, savedGrad{p.T, p.T.RequiresGrad()})
		}
		for _, s := range slots {
			at = s.Name
			l := NewLinear((*s.Ptr).(*nn.Linear), cfg.R, cfg.Alpha, cfg.Dropout, cfg.RSLoRA)
			a.modules = append(a.modules, Module{Name: s.Name, Layer: l, slot: s.Ptr})
		}
	})
	if err != nil {
		for _, mod := range a.modules {
			mod.Layer.freeLoRA()
		}
		return nil, fmt.Errorf("lora: creating the LoRA layers: %s: %w", at, err)
	}
	for _, mod := range a.modules {
		*mod.slot = mod.Layer
	}
	err = torch.Try(func() {
		own := a.ownSet()
		for _, p := range m.NamedParameters() {
			at = p.Name
			on := own[p.T]
			p.T.SetRequiresGrad(on)
			if on {
				a.trainable = append(a.trainable, p)
			}
		}
	})
	if err != nil {
		a.Unload()
		return nil, fmt.Errorf("lora: freezing the base model: %s: %w", at, err)
	}
	return a, nil
}

// ownSet is the set of tensors the adapter trains: every lora_A and lora_B, and the
// parameters of the modules to save.
func (a *Adapter) ownSet() map[*torch.Tensor]bool {
	own := map[*torch.Tensor]bool{}
	for _, mod := range a.modules {
		own[mod.Layer.A], own[mod.Layer.B] = true, true
	}
	for _, p := range a.saved() {
		own[p.T] = true
	}
	return own
}

// saved lists the parameters of the modules to save, in model order, by HF key.
func (a *Adapter) saved() []nn.Named {
	var ps []nn.Named
	ms := a.Config.modulesToSave()
	for _, p := range a.model.NamedParameters() {
		for _, m := range ms {
			if p.Name == m || strings.HasPrefix(p.Name, m+".") {
				ps = append(ps, p)
			}
		}
	}
	return ps
}

// Trainable lists the tensors to optimise, by their names in the model's
// NamedParameters and in that order: every lora_A and lora_B, and the parameters of
// the modules to save.
func (a *Adapter) Trainable() []nn.Named { return slices.Clone(a.trainable) }

// Modules lists the LoRA layers in the model's projection order.
func (a *Adapter) Modules() []Module { return slices.Clone(a.modules) }

// Model is the model the adapter was injected into.
func (a *Adapter) Model() *clip.Model { return a.model }

// Counts is nn.Count over the model's NamedParameters: every parameter (base and LoRA)
// and those that require grad. It equals CountConfig for the same configs. It fails,
// naming the parameter, only on a model whose tensors were freed.
func (a *Adapter) Counts() (total, trainable int64, err error) {
	for _, p := range a.model.NamedParameters() {
		var n, g int64
		if err := torch.Try(func() { n, g = nn.Count([]nn.Named{p}) }); err != nil {
			return 0, 0, fmt.Errorf("lora: counting parameters: %s: %w", p.Name, err)
		}
		total, trainable = total+n, trainable+g
	}
	return total, trainable, nil
}

// Merge adds every layer's update to its base weight (W += scaling * B @ A, outside
// autograd); the forward pass then skips the LoRA branches. Layers already merged are
// left alone.
func (a *Adapter) Merge() error { return a.eachLayer("merging", (*Linear).Merge) }

// Unmerge subtracts every merged layer's update from its base weight again.
func (a *Adapter) Unmerge() error { return a.eachLayer("unmerging", (*Linear).Unmerge) }

// eachLayer runs f on every LoRA layer in order; a tensor failure stops it with an
// error naming the module (the layers before it are done).
func (a *Adapter) eachLayer(what string, f func(*Linear)) error {
	for _, m := range a.modules {
		if err := torch.Try(func() { f(m.Layer) }); err != nil {
			return fmt.Errorf("lora: %s %s: %w", what, m.Name, err)
		}
	}
	return nil
}

// Merged reports whether every layer is merged.
func (a *Adapter) Merged() bool {
	for _, m := range a.modules {
		if !m.Layer.Merged() {
			return false
		}
	}
	return len(a.modules) > 0
}

// MergedStateDict is the state dict of the merged model, HF CLIPModel keys only (no
// LoRA keys): the weights that MergeAndUnload leaves in the model (what a LoRA run's
// model.pt and model/ hold, and `goclip convert --adapter DIR --merge` writes), without
// changing the model. Each adapted weight is W + scaling * B @ A, a new tensor (or the
// base weight itself where the layer is merged); every other entry is the model's own
// tensor. Call release when done: it frees the new tensors only.
func (a *Adapter) MergedStateDict() (sd map[string]*torch.Tensor, release func(), err error) {
	var copies []*torch.Tensor
	release = func() {
		for _, t := range copies {
			t.Free()
		}
	}
	skip := map[*torch.Tensor]bool{}
	layerOf := map[*torch.Tensor]*Linear{}
	for _, m := range a.modules {
		skip[m.Layer.A], skip[m.Layer.B] = true, true
		layerOf[m.Layer.Layer.Weight] = m.Layer
	}
	sd = map[string]*torch.Tensor{}
	var at string // the parameter in hand, named when libtorch fails on it
	err = torch.Try(func() {
		for _, p := range a.model.NamedParameters() {
			at = p.Name
			if skip[p.T] {
				continue
			}
			t := p.T
			if l := layerOf[p.T]; l != nil && !l.Merged() {
				torch.WithScope(func() { // frees the delta even when Add fails
					torch.NoGrad(func() { t = p.T.Add(l.Delta()).Owned() }) // [out, in]
				})
				copies = append(copies, t)
			}
			sd[p.Name] = t
		}
	})
	if err != nil {
		release()
		return nil, nil, fmt.Errorf("lora: merging: %s: %w", at, err)
	}
	return sd, release, nil
}

// Unload takes the adapter out of the model: each slot gets its base layer back
// (unmerged first where merged), lora_A and lora_B are freed, and every parameter's
// requires_grad is as before Inject. The adapter is empty afterwards.
func (a *Adapter) Unload() error {
	if err := a.Unmerge(); err != nil {
		return err
	}
	return a.unload()
}

// MergeAndUnload merges every layer into its base weight and then takes the adapter out
// (see Unload): the model is a plain CLIP with the adapted weights, which clip's save
// functions write with HF keys. The adapter is empty afterwards.
func (a *Adapter) MergeAndUnload() error {
	if err := a.Merge(); err != nil {
		return err
	}
	return a.unload()
}

func (a *Adapter) unload() error {
	for _, m := range a.modules {
		*m.slot = m.Layer.Layer
		m.Layer.freeLoRA()
	}
	a.modules, a.trainable = nil, nil
	return torch.Try(func() {
		for _, g := range a.grads {
			if !g.t.Freed() {
				g.t.SetRequiresGrad(g.on)
			}
		}
	})
}
