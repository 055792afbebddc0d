package lora

import (
	"fmt"
	"math"
	"math/bits"
	"strings"

	"goclip/clip"
	"goclip/internal/numfmt"
)

// linearModule is a linear layer of a CLIP architecture: its HF module name and the
// shape of its weight [out, in].
type linearModule struct {
	name    string
	out, in int64
}

// linearModules lists the linear layers of New(cfg) from clip.ParamShapes, without
// allocating: every 2-D ".weight" outside the embeddings. (A test holds this list equal
// to the names and shapes of Model.Projections.)
func linearModules(cfg clip.Config) []linearModule {
	var ls []linearModule
	for _, p := range clip.ParamShapes(cfg) {
		name, ok := strings.CutSuffix(p.Name, ".weight")
		if !ok || len(p.Shape) != 2 || strings.Contains(name, ".embeddings.") {
			continue
		}
		ls = append(ls, linearModule{name, p.Shape[0], p.Shape[1]})
	}
	return ls
}

// CountConfig is what peft reports for the model New(cfg) with LoRA layers per lc: all
// parameters (the base model's plus every lora_A [r, in] and lora_B [out, r]) and the
// trainable ones (the LoRA matrices and the modules to save), computed from the configs
// alone. After Inject, nn.Count over the model's NamedParameters gives the same numbers
// (Adapter.Counts). It fails as Inject fails: an invalid lc, or a target that selects
// no linear layer.
func CountConfig(cfg clip.Config, lc Config) (total, trainable int64, err error) {
	m, err := lc.matcher()
	if err != nil {
		return 0, 0, err
	}
	// The base count validates cfg first, which bounds the layers listed below.
	base, err := clip.ParamCount(cfg)
	if err != nil {
		return 0, 0, err
	}
	var names, selected []string
	var added int64
	for _, l := range linearModules(cfg) {
		names = append(names, l.name)
		if m.selects(l.name) {
			selected = append(selected, l.name)
			n, ok := mulCount(int64(lc.R), l.in+l.out)
			if ok {
				added, ok = addCount(added, n)
			}
			if !ok {
				return 0, 0, fmt.Errorf("LoRA parameter count overflows (r = %d)", lc.R)
			}
		}
	}
	if err := checkSelection(lc, names, selected); err != nil {
		return 0, 0, err
	}
	if err := checkModulesToSave(lc, selected); err != nil {
		return 0, 0, err
	}
	trainable = added
	for _, p := range clip.ParamShapes(cfg) {
		for _, mod := range lc.modulesToSave() {
			if p.Name == mod || strings.HasPrefix(p.Name, mod+".") {
				trainable += p.Numel() // at most base: no overflow past added+base
			}
		}
	}
	total, ok := addCount(base, added)
	if !ok {
		return 0, 0, fmt.Errorf("LoRA parameter count overflows (r = %d)", lc.R)
	}
	return total, trainable, nil
}

// mulCount and addCount are a*b and a+b for non-negative counts; ok is false when the
// result overflows int64.
func mulCount(a, b int64) (int64, bool) {
	hi, lo := bits.Mul64(uint64(a), uint64(b))
	return int64(lo), a >= 0 && b >= 0 && hi == 0 && lo <= math.MaxInt64
}

func addCount(a, b int64) (int64, bool) {
	return a + b, a >= 0 && b >= 0 && a <= math.MaxInt64-b
}

// FormatCounts is peft's print_trainable_parameters line:
// "trainable params: 5,898,240 || all params: 155,518,977 || trainable%: 3.7926".
func FormatCounts(total, trainable int64) string {
	pct := 0.0
	if total > 0 {
		pct = 100 * float64(trainable) / float64(total)
	}
	return fmt.Sprintf("trainable params: %s || all params: %s || trainable%%: %.4f",
		numfmt.Thousands(trainable), numfmt.Thousands(total), pct)
}
