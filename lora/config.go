package lora

import (
	"fmt"
	"math"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// The towers a Config can restrict injection to.
const (
	TowerVision = "vision" // vision_model.* and visual_projection
	TowerText   = "text"   // text_model.* and text_projection
)

// AllLinear as the only entry of Config.Targets selects every linear layer of both
// towers, the projections included, as peft's target_modules="all-linear" does for
// CLIPModel (which has no output embedding for peft to leave out).
const AllLinear = "all-linear"

// ProjectionModules are the modules that TrainProjections trains whole and saves (as
// peft's modules_to_save): both projections into the joint space and the temperature.
var ProjectionModules = []string{"visual_projection", "text_projection", "logit_scale"}

// Config says where LoRA layers go and how they are shaped: peft's LoraConfig for what
// peft has (r, lora_alpha, lora_dropout, target_modules, use_rslora,
// layers_to_transform, modules_to_save), plus a tower restriction.
type Config struct {
	R       int     // rank r
	Alpha   float64 // lora_alpha; the update is scaled by Alpha/R (Alpha/sqrt(R) with RSLoRA)
	Dropout float64 // lora_dropout, on the LoRA branch's input in training mode, in [0, 1)
	// Targets are module names matched as peft matches a list of target_modules: a
	// module is selected when its full name equals an entry or ends with "." + entry
	// ("q_proj", "self_attn.q_proj", "visual_projection"). Unlike peft, every entry must
	// select at least one module. []string{AllLinear} selects every linear layer.
	Targets []string
	// TargetRegex, instead of Targets, selects the modules whose full name the regular
	// expression matches entirely (peft's target_modules given as one string, which
	// Python's re.fullmatch applies; here Go's RE2 syntax).
	TargetRegex string
	RSLoRA      bool     // use_rslora: scale by Alpha/sqrt(R)
	Towers      []string // "vision", "text"; empty: both
	// Layers are encoder layer indices (peft's layers_to_transform); empty: all. A module
	// without a layer index (visual_projection) is then never selected, as in peft.
	Layers []int
	// TrainProjections also trains visual_projection, text_projection and logit_scale
	// whole, and saves them as peft's modules_to_save.
	TrainProjections bool
	// ModulesToSave names modules (of ProjectionModules) trained whole and saved, as
	// peft's modules_to_save; TrainProjections adds all of ProjectionModules.
	ModulesToSave []string
}

// Validate reports every invalid field at once.
func (c Config) Validate() error {
	var errs []string
	bad := func(format string, args ...any) { errs = append(errs, fmt.Sprintf(format, args...)) }
	if c.R <= 0 {
		bad("r must be positive, got %d", c.R)
	}
	if math.IsNaN(c.Alpha) || math.IsInf(c.Alpha, 0) || c.Alpha <= 0 {
		bad("lora_alpha must be a positive number, got %g", c.Alpha)
	}
	if !(c.Dropout >= 0 && c.Dropout < 1) {
		bad("lora_dropout must be in [0, 1), got %g", c.Dropout)
	}
	switch {
	case len(c.Targets) == 0 && c.TargetRegex == "":
		bad("no target modules (give target names, e.g. q_proj,k_proj,v_proj, or a regular expression)")
	case len(c.Targets) > 0 && c.TargetRegex != "":
		bad("give target names or a target regular expression, not both")
	}
	for _, t := range c.Targets {
		if t == "" || strings.HasPrefix(t, ".") || strings.HasSuffix(t, ".") {
			bad("target module %q is not a module name", t)
		}
	}
	if c.TargetRegex != "" {
		if _, err := regexp.Compile(c.TargetRegex); err != nil {
			bad("target regular expression %q: %v", c.TargetRegex, err)
		}
		if len(c.Layers) > 0 {
			bad("layers cannot be combined with a target regular expression (as in peft: put the layers in the expression)")
		}
	}
	for _, t := range c.Towers {
		if t != TowerVision && t != TowerText {
			bad("unknown tower %q (want %s or %s)", t, TowerVision, TowerText)
		}
	}
	for _, l := range c.Layers {
		if l < 0 {
			bad("layer index %d is negative", l)
		}
	}
	for _, m := range c.ModulesToSave {
		if !slices.Contains(ProjectionModules, m) {
			bad("modules_to_save: %q is not supported (want some of %s)", m, strings.Join(ProjectionModules, ", "))
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("invalid LoRA config: %s", strings.Join(errs, "; "))
	}
	return nil
}

// Scaling is the factor of the update, Alpha/R or Alpha/sqrt(R).
func (c Config) Scaling() float64 { return Scaling(c.R, c.Alpha, c.RSLoRA) }

// modulesToSave is the effective modules_to_save list, in ProjectionModules order.
func (c Config) modulesToSave() []string {
	var ms []string
	for _, m := range ProjectionModules {
		if c.TrainProjections || slices.Contains(c.ModulesToSave, m) {
			ms = append(ms, m)
		}
	}
	return ms
}

// matcher decides, from a module's full HF name, whether a LoRA layer goes there.
type matcher struct {
	c  Config
	re *regexp.Regexp // fullmatch form of TargetRegex, or nil
}

func (c Config) matcher() (*matcher, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	m := &matcher{c: c}
	if c.TargetRegex != "" {
		m.re = regexp.MustCompile(`^(?:` + c.TargetRegex + `)$`)
	}
	return m, nil
}

// layerIndex is the encoder layer index in a module name ("...layers.3.self_attn.q_proj"
// is 3), or -1.
func layerIndex(name string) int {
	parts := strings.Split(name, ".")
	for i := len(parts) - 2; i >= 1; i-- {
		if parts[i-1] == "layers" {
			if n, err := strconv.Atoi(parts[i]); err == nil {
				return n
			}
		}
	}
	return -1
}

// towerRestricted reports whether Towers leaves one tower out.
func (c Config) towerRestricted() bool {
	return len(c.Towers) > 0 && !(slices.Contains(c.Towers, TowerVision) && slices.Contains(c.Towers, TowerText))
}

// tower is the tower a module belongs to.
func tower(name string) string {
	switch {
	case strings.HasPrefix(name, "vision_model.") || name == "visual_projection":
		return TowerVision
	case strings.HasPrefix(name, "text_model.") || name == "text_projection":
		return TowerText
	}
	return ""
}

// selects reports whether the module with this full name gets a LoRA layer.
func (m *matcher) selects(name string) bool {
	c := m.c
	if c.towerRestricted() && !slices.Contains(c.Towers, tower(name)) {
		return false
	}
	if m.re != nil {
		if !m.re.MatchString(name) {
			return false
		}
	} else if !c.allLinear() && !slices.ContainsFunc(c.Targets, func(t string) bool { return name == t || strings.HasSuffix(name, "."+t) }) {
		return false
	}
	if len(c.Layers) > 0 && !slices.Contains(c.Layers, layerIndex(name)) {
		return false
	}
	return true
}

// allLinear reports whether Targets is []string{AllLinear}.
func (c Config) allLinear() bool { return len(c.Targets) == 1 && c.Targets[0] == AllLinear }

// targetsString names the targets in messages.
func (c Config) targetsString() string {
	s := ""
	if c.TargetRegex != "" {
		s = fmt.Sprintf("target regular expression %q", c.TargetRegex)
	} else {
		s = "target modules " + strings.Join(c.Targets, ",")
	}
	if len(c.Towers) > 0 {
		s += " in tower(s) " + strings.Join(c.Towers, ",")
	}
	if len(c.Layers) > 0 {
		s += fmt.Sprintf(" in layers %v", c.Layers)
	}
	return s
}

// checkSelection fails when the targets select no linear layer, or when an entry of a
// target list selects none (a typo would otherwise go unnoticed; peft only fails when
// nothing at all matches). names are all the model's linear layers, selected those
// chosen. The error names the targets and gives example module names: the first module
// of each distinct last name component.
func checkSelection(c Config, names, selected []string) error {
	what := ""
	switch {
	case len(selected) == 0:
		what = c.targetsString()
	case c.TargetRegex == "" && !c.allLinear():
		var missing []string
		for _, t := range c.Targets {
			if !slices.ContainsFunc(selected, func(n string) bool { return n == t || strings.HasSuffix(n, "."+t) }) {
				missing = append(missing, t)
			}
		}
		if len(missing) == 0 {
			return nil
		}
		c.Targets = missing
		what = c.targetsString()
	default:
		return nil
	}
	var ex, lasts []string
	seen := map[string]bool{}
	for _, n := range names {
		last := n[strings.LastIndexByte(n, '.')+1:]
		if !seen[last] {
			seen[last] = true
			ex = append(ex, n)
			lasts = append(lasts, last)
		}
	}
	hint := ""
	if c.TargetRegex == "" {
		var guesses []string
		for _, t := range c.Targets {
			switch g := nearest(t[strings.LastIndexByte(t, '.')+1:], lasts); {
			case g != "" && len(c.Targets) == 1:
				guesses = append(guesses, g)
			case g != "":
				guesses = append(guesses, fmt.Sprintf("%s for %s", g, t))
			}
		}
		if len(guesses) > 0 {
			hint = " (did you mean " + strings.Join(guesses, ", ") + "?)"
		}
	}
	return fmt.Errorf("lora: %s match no linear layer of the model%s; its linear layers are named like %s",
		what, hint, strings.Join(ex, ", "))
}

// nearest is the candidate closest to s by edit distance, when it is close: at most a
// third of the longer name's letters differ.
func nearest(s string, candidates []string) string {
	best, bestD := "", -1
	for _, c := range candidates {
		d := editDistance(s, c)
		if d*3 <= max(len(s), len(c)) && (bestD < 0 || d < bestD) {
			best, bestD = c, d
		}
	}
	return best
}

// editDistance is the Levenshtein distance of a and b (byte-wise).
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// checkModulesToSave rejects a module that would be both a LoRA layer and trained whole.
func checkModulesToSave(c Config, selected []string) error {
	for _, m := range c.modulesToSave() {
		if slices.Contains(selected, m) {
			return fmt.Errorf("lora: %s is both a LoRA target and in modules_to_save", m)
		}
	}
	return nil
}
