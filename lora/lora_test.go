package lora

import (
	"bytes"
	"encoding/json"
	"errors"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"

	"goclip/clip"
	"goclip/internal/testutil"
	"goclip/nn"
	"goclip/torch"
)

var qkv = []string{"q_proj", "k_proj", "v_proj"}

func preset(t testing.TB, name string) clip.Config {
	t.Helper()
	cfg, err := clip.Preset(name)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// tinyModel is a seeded tiny CLIP on the CPU (float32).
func tinyModel(t testing.TB, seed uint64) *clip.Model {
	t.Helper()
	torch.ManualSeed(seed)
	m, err := clip.New(preset(t, "tiny"), torch.CPU)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// inputs are random pixels [2, 3, S, S] and ids [2, 8] ending in the end token.
func inputs(cfg clip.Config) (pixels, ids *torch.Tensor) {
	s := cfg.Vision.ImageSize
	pixels = torch.Randn([]int64{2, 3, s, s}, torch.Float32, torch.CPU)
	v := make([]int64, 16)
	for i := range v {
		v[i] = int64(1 + (i*7919)%49000)
	}
	v[0], v[8] = 49406, 49406
	v[7], v[15] = 49407, 49407
	ids = torch.FromInt64(v, 2, 8)
	return pixels, ids
}

// embed is the projected image and text embeddings, concatenated, under NoGrad.
func embed(m *clip.Model, pixels, ids *torch.Tensor) []float64 {
	var out []float64
	torch.NoGrad(func() {
		s := torch.NewScope()
		defer s.Close()
		out = append(m.EncodeImage(pixels).Float64s(), m.EncodeText(ids).Float64s()...)
	})
	return out
}

func inject(t testing.TB, m *clip.Model, cfg Config) *Adapter {
	t.Helper()
	a, err := Inject(m, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// randomizeB gives every lora_B random values (std 0.05), so that the update is not zero.
func randomizeB(a *Adapter) {
	torch.NoGrad(func() {
		for _, m := range a.Modules() {
			m.Layer.B.NormalInPlace(0, 0.05)
		}
	})
}

func TestCountConfigViTB16(t *testing.T) {
	cfg := preset(t, "vit-b-16")
	base, err := clip.ParamCount(cfg)
	if err != nil || base != 149620737 {
		t.Fatalf("vit-b-16 has %d parameters, want 149,620,737", base)
	}
	cases := []struct {
		name             string
		lc               Config
		total, trainable int64
	}{
		{"r64 qkv", Config{R: 64, Alpha: 128, Targets: qkv}, 155518977, 5898240},
		{"r8 q,v", Config{R: 8, Alpha: 16, Targets: []string{"q_proj", "v_proj"}}, base + 491520, 491520},
		{"vision", Config{R: 64, Alpha: 128, Targets: qkv, Towers: []string{"vision"}}, base + 3538944, 3538944},
		{"text", Config{R: 64, Alpha: 128, Targets: qkv, Towers: []string{"text"}}, base + 2359296, 2359296},
		{"both towers", Config{R: 64, Alpha: 128, Targets: qkv, Towers: []string{"text", "vision"}}, 155518977, 5898240},
		{"layer 0", Config{R: 64, Alpha: 128, Targets: qkv, Layers: []int{0}}, base + 491520, 491520},
		{"regex", Config{R: 64, Alpha: 128, TargetRegex: `.*self_attn\.[qkv]_proj`}, 155518977, 5898240},
		{"dotted target", Config{R: 64, Alpha: 128, Targets: []string{"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"}}, 155518977, 5898240},
		{"projections", Config{R: 64, Alpha: 128, Targets: qkv, TrainProjections: true}, 155518977, 5898240 + 512*768 + 512*512 + 1},
		{"visual_projection", Config{R: 4, Alpha: 8, Targets: []string{"visual_projection"}}, base + 4*(768+512), 4 * (768 + 512)},
	}
	for _, c := range cases {
		total, trainable, err := CountConfig(cfg, c.lc)
		if err != nil {
			t.Errorf("%s: %v", c.name, err)
			continue
		}
		if total != c.total || trainable != c.trainable {
			t.Errorf("%s: %d of %d trainable, want %d of %d", c.name, trainable, total, c.trainable, c.total)
		}
	}

	total, trainable, _ := CountConfig(cfg, Config{R: 64, Alpha: 128, Targets: qkv})
	want := "trainable params: 5,898,240 || all params: 155,518,977 || trainable%: 3.7926"
	if got := FormatCounts(total, trainable); got != want {
		t.Errorf("FormatCounts:\n got %s\nwant %s", got, want)
	}
	if got := FormatCounts(149620737, 149620737); got != "trainable params: 149,620,737 || all params: 149,620,737 || trainable%: 100.0000" {
		t.Errorf("FormatCounts, no LoRA: %s", got)
	}
	if got := FormatCounts(0, 0); got != "trainable params: 0 || all params: 0 || trainable%: 0.0000" {
		t.Errorf("FormatCounts(0, 0): %s", got)
	}
}

func TestConfigErrors(t *testing.T) {
	cfg := preset(t, "vit-b-16")
	_, _, err := CountConfig(cfg, Config{R: 8, Alpha: 16, Targets: []string{"qproj", "query"}})
	if err == nil {
		t.Fatal("targets that match nothing: no error")
	}
	for _, s := range []string{"qproj,query", "encoder.layers.0.self_attn.q_proj", "encoder.layers.0.mlp.fc1", "visual_projection"} {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("error %q does not name %q", err, s)
		}
	}
	bad := []struct {
		lc   Config
		want string
	}{
		{Config{R: 0, Alpha: 16, Targets: qkv}, "r must be positive"},
		{Config{R: 8, Alpha: 0, Targets: qkv}, "lora_alpha"},
		{Config{R: 8, Alpha: 16, Dropout: 1, Targets: qkv}, "lora_dropout"},
		{Config{R: 8, Alpha: 16}, "no target modules"},
		{Config{R: 8, Alpha: 16, Targets: qkv, TargetRegex: "q_proj"}, "not both"},
		{Config{R: 8, Alpha: 16, TargetRegex: "(q_proj"}, "regular expression"},
		{Config{R: 8, Alpha: 16, TargetRegex: ".*q_proj", Layers: []int{1}}, "layers cannot be combined"},
		{Config{R: 8, Alpha: 16, Targets: qkv, Towers: []string{"audio"}}, "unknown tower"},
		{Config{R: 8, Alpha: 16, Targets: qkv, ModulesToSave: []string{"classifier"}}, "modules_to_save"},
		{Config{R: 8, Alpha: 16, Targets: []string{"visual_projection"}, TrainProjections: true}, "both a LoRA target and in modules_to_save"},
		{Config{R: 8, Alpha: 16, TargetRegex: "q_proj"}, "match no linear layer"}, // fullmatch, not search
		{Config{R: 8, Alpha: 16, Targets: []string{"q_proj", "nope"}}, "target modules nope match no linear layer"},
		{Config{R: 8, Alpha: 16, Targets: []string{"q_proj", "visual_projection"}, Towers: []string{"text"}}, "target modules visual_projection in tower(s) text match no"},
	}
	for _, b := range bad {
		_, _, err := CountConfig(cfg, b.lc)
		if err == nil || !strings.Contains(err.Error(), b.want) {
			t.Errorf("%+v: error %v, want one containing %q", b.lc, err, b.want)
		}
	}
}

// TestLinearModulesMatchProjections holds the config-only list of linear layers equal to
// the model's projection slots, names and weight shapes.
func TestLinearModulesMatchProjections(t *testing.T) {
	m := tinyModel(t, 1)
	defer m.Free()
	got := map[string][2]int64{}
	for _, l := range linearModules(m.Config) {
		got[l.name] = [2]int64{l.out, l.in}
	}
	slots := m.Projections()
	if len(got) != len(slots) {
		t.Errorf("%d linear modules from the config, %d slots", len(got), len(slots))
	}
	for _, s := range slots {
		shape := (*s.Ptr).Base().Weight.Shape()
		if g, ok := got[s.Name]; !ok || g != [2]int64{shape[0], shape[1]} {
			t.Errorf("slot %s %v: config gives %v (present %v)", s.Name, shape, g, ok)
		}
	}
}

func TestInjectFreezesAndCounts(t *testing.T) {
	live := torch.Live()
	m := tinyModel(t, 2)
	lc := Config{R: 4, Alpha: 8, Targets: qkv, TrainProjections: true}
	a := inject(t, m, lc)

	total, trainable, err := a.Counts()
	if err != nil {
		t.Fatal(err)
	}
	wt, wtr, err := CountConfig(m.Config, lc)
	if err != nil {
		t.Fatal(err)
	}
	if total != wt || trainable != wtr {
		t.Errorf("nn.Count after Inject: %d of %d; CountConfig: %d of %d", trainable, total, wtr, wt)
	}

	names := map[string]bool{}
	for _, p := range a.Trainable() {
		names[p.Name] = true
		if !p.T.RequiresGrad() {
			t.Errorf("trainable %s does not require grad", p.Name)
		}
	}
	var order []string
	for _, p := range m.NamedParameters() {
		isLoRA := strings.HasSuffix(p.Name, ".lora_A.weight") || strings.HasSuffix(p.Name, ".lora_B.weight")
		isSaved := p.Name == "visual_projection.weight" || p.Name == "text_projection.weight" || p.Name == "logit_scale"
		if (isLoRA || isSaved) != names[p.Name] {
			t.Errorf("%s: trainable %v", p.Name, names[p.Name])
		}
		if p.T.RequiresGrad() != names[p.Name] {
			t.Errorf("%s: requires_grad %v", p.Name, p.T.RequiresGrad())
		}
		if names[p.Name] {
			order = append(order, p.Name)
		}
	}
	var got []string
	for _, p := range a.Trainable() {
		got = append(got, p.Name)
	}
	if !slices.Equal(got, order) {
		t.Errorf("Trainable order %v, want model order %v", got, order)
	}
	wantLayers := 3 * int(m.Config.Vision.NumHiddenLayers+m.Config.Text.NumHiddenLayers)
	if n := len(a.Modules()); n != wantLayers {
		t.Errorf("%d LoRA layers, want %d", n, wantLayers)
	}
	l := a.Modules()[0]
	if l.Name != "vision_model.encoder.layers.0.self_attn.q_proj" || l.Layer.Rank() != 4 || l.Layer.Scaling != 2 {
		t.Errorf("first layer %s rank %d scaling %g", l.Name, l.Layer.Rank(), l.Layer.Scaling)
	}
	bound := 1 / math.Sqrt(float64(m.Config.Vision.HiddenSize))
	var maxA float64
	for _, v := range l.Layer.A.Float64s() {
		maxA = math.Max(maxA, math.Abs(v))
	}
	if maxA > bound || maxA < 0.8*bound {
		t.Errorf("lora_A max |a| = %g, want just under %g (Kaiming-uniform, a=sqrt(5))", maxA, bound)
	}
	for _, v := range l.Layer.B.Float64s() {
		if v != 0 {
			t.Fatal("lora_B is not zero")
		}
	}

	if _, err := Inject(m, lc); err == nil || !strings.Contains(err.Error(), "already") {
		t.Errorf("second Inject: %v", err)
	}

	// Unload restores the plain model.
	if err := a.Unload(); err != nil {
		t.Fatal(err)
	}
	for _, s := range m.Projections() {
		if _, ok := (*s.Ptr).(*nn.Linear); !ok {
			t.Errorf("%s is %T after Unload", s.Name, *s.Ptr)
		}
	}
	for _, p := range m.NamedParameters() {
		if !p.T.RequiresGrad() {
			t.Errorf("%s does not require grad after Unload", p.Name)
		}
	}
	m.Free()
	if d := torch.Live() - live; d != 0 {
		t.Errorf("%d tensors leaked", d)
	}
}

// TestInjectedEqualsBase: with lora_B zero the injected model computes exactly the base
// model's outputs, in training mode with dropout too.
func TestInjectedEqualsBase(t *testing.T) {
	m := tinyModel(t, 3)
	defer m.Free()
	s := torch.NewScope()
	defer s.Close()
	px, ids := inputs(m.Config)
	before := embed(m, px, ids)
	inject(t, m, Config{R: 8, Alpha: 16, Dropout: 0.1, Targets: []string{"q_proj", "k_proj", "v_proj", "fc1", "visual_projection"}})
	after := embed(m, px, ids)
	for i := range before {
		if before[i] != after[i] {
			t.Fatalf("output %d: %v after Inject, %v before", i, after[i], before[i])
		}
	}
}

// TestTrainingStepChangesOnlyLoRA runs one AdamW step over Trainable and checks every
// base tensor bit for bit.
func TestTrainingStepChangesOnlyLoRA(t *testing.T) {
	m := tinyModel(t, 4)
	defer m.Free()
	a := inject(t, m, Config{R: 4, Alpha: 8, Dropout: 0.1, Targets: qkv})
	before := map[string][]byte{}
	for _, p := range m.NamedParameters() {
		before[p.Name] = p.T.Bytes()
	}
	var params []*torch.Tensor
	for _, p := range a.Trainable() {
		params = append(params, p.T)
	}
	opt := torch.NewAdamW([][]*torch.Tensor{params}, []float64{0.01}, 0.9, 0.999, 1e-8)
	defer opt.Free()

	err := torch.Try(func() {
		s := torch.NewScope()
		defer s.Close()
		px, ids := inputs(m.Config)
		clip.ContrastiveLoss(m.Forward(px, ids)).Backward()
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range m.NamedParameters() {
		g := p.T.Grad()
		isLoRA := strings.Contains(p.Name, ".lora_")
		if (g != nil) != isLoRA {
			t.Errorf("%s: has a gradient: %v", p.Name, g != nil)
		}
		g.Free()
	}
	if err := opt.Update(1e-3, nil); err != nil {
		t.Fatal(err)
	}
	changedB := 0
	for _, p := range m.NamedParameters() {
		same := bytes.Equal(before[p.Name], p.T.Bytes())
		switch {
		case strings.HasSuffix(p.Name, ".lora_B.weight"):
			if !same {
				changedB++
			}
		case strings.HasSuffix(p.Name, ".lora_A.weight"):
		default:
			if !same {
				t.Errorf("base tensor %s changed", p.Name)
			}
		}
	}
	if changedB != len(a.Modules()) {
		t.Errorf("%d of %d lora_B changed", changedB, len(a.Modules()))
	}
}

func TestMergeUnmerge(t *testing.T) {
	m := tinyModel(t, 5)
	defer m.Free()
	s := torch.NewScope()
	defer s.Close()
	px, ids := inputs(m.Config)
	base := embed(m, px, ids)
	a := inject(t, m, Config{R: 4, Alpha: 16, Targets: []string{"q_proj", "v_proj", "fc2", "text_projection"}})
	randomizeB(a)
	orig := map[string][]float64{}
	for _, p := range m.NamedParameters() {
		orig[p.Name] = p.T.Float64s()
	}
	unmerged := embed(m, px, ids)
	if testutil.RelErr(unmerged, base) < 1e-3 {
		t.Fatal("non-zero lora_B did not change the outputs")
	}

	sd, release, err := a.MergedStateDict()
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for k := range sd {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var want []string
	for _, p := range clip.ParamShapes(m.Config) {
		want = append(want, p.Name)
	}
	sort.Strings(want)
	if !slices.Equal(keys, want) {
		t.Errorf("merged state dict keys differ from the model's HF keys")
	}
	mergedCopy := sd["vision_model.encoder.layers.1.self_attn.q_proj.weight"].Float64s()

	if err := a.Merge(); err != nil {
		t.Fatal(err)
	}
	if !a.Merged() {
		t.Error("Merged() false after Merge")
	}
	merged := embed(m, px, ids)
	if e := testutil.RelErr(merged, unmerged); e > 1e-5 {
		t.Errorf("merged forward differs from unmerged: rel %.3g", e)
	} else {
		t.Logf("merged vs unmerged forward: rel %.3g", e)
	}
	w := m.VisionModel.Encoder.Layers[1].SelfAttn.Q.Base().Weight.Float64s()
	if e := testutil.RelErr(mergedCopy, w); e > 1e-6 {
		t.Errorf("MergedStateDict weight differs from the merged weight: rel %.3g", e)
	}
	release()

	if err := a.Unmerge(); err != nil {
		t.Fatal(err)
	}
	var worst float64
	for _, p := range m.NamedParameters() {
		e := testutil.RelErr(p.T.Float64s(), orig[p.Name])
		worst = math.Max(worst, e)
		if e > 1e-6 {
			t.Errorf("%s after merge+unmerge: rel %.3g", p.Name, e)
		}
	}
	t.Logf("merge+unmerge worst relative error %.3g", worst)
	if e := testutil.RelErr(embed(m, px, ids), unmerged); e > 1e-5 {
		t.Errorf("unmerged forward changed: rel %.3g", e)
	}

	// MergeAndUnload leaves a plain model that computes the merged outputs.
	if err := a.MergeAndUnload(); err != nil {
		t.Fatal(err)
	}
	for _, p := range m.NamedParameters() {
		if strings.Contains(p.Name, "lora_") {
			t.Fatalf("%s after MergeAndUnload", p.Name)
		}
	}
	if e := testutil.RelErr(embed(m, px, ids), merged); e > 1e-6 {
		t.Errorf("forward after MergeAndUnload differs from merged: rel %.3g", e)
	}
}

// baseCopy is an independent copy of the model's state dict.
func baseCopy(m *clip.Model) map[string]*torch.Tensor {
	sd := map[string]*torch.Tensor{}
	torch.NoGrad(func() {
		for _, p := range m.NamedParameters() {
			sd[p.Name] = p.T.Clone().Owned()
		}
	})
	return sd
}

// twin is a second model with the same weights as sd.
func twin(t *testing.T, sd map[string]*torch.Tensor) *clip.Model {
	t.Helper()
	m, err := clip.New(preset(t, "tiny"), torch.CPU)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.LoadStateDict(sd); err != nil {
		t.Fatal(err)
	}
	return m
}

func TestSaveLoadRoundTrip(t *testing.T) {
	m := tinyModel(t, 6)
	defer m.Free()
	sd := baseCopy(m)
	defer torch.FreeMap(sd)
	a := inject(t, m, Config{R: 4, Alpha: 8, Dropout: 0.05, Targets: qkv, RSLoRA: true, TrainProjections: true, Layers: []int{1}})
	randomizeB(a)
	torch.NoGrad(func() { m.LogitScale.Fill(3.5); m.VisualProjection.Base().Weight.MulScalarInPlace(1.5) })
	m.SetTrain(false)
	s := torch.NewScope()
	defer s.Close()
	px, ids := inputs(m.Config)
	want := embed(m, px, ids)

	dir := filepath.Join(t.TempDir(), "adapter")
	if err := a.Save(dir, "openai/clip-vit-base-patch16"); err != nil {
		t.Fatal(err)
	}
	var js map[string]any
	data, err := os.ReadFile(filepath.Join(dir, ConfigFile))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, &js); err != nil {
		t.Fatal(err)
	}
	for k, v := range map[string]any{"peft_type": "LORA", "r": 4.0, "lora_alpha": 8.0, "lora_dropout": 0.05, "bias": "none",
		"use_rslora": true, "init_lora_weights": true, "base_model_name_or_path": "openai/clip-vit-base-patch16",
		"task_type": nil, "inference_mode": true, "fan_in_fan_out": false, "use_dora": false, "revision": nil,
		"megatron_core": "megatron.core", "layers_pattern": nil, "layer_replication": nil, "auto_mapping": nil, "megatron_config": nil} {
		if js[k] != v {
			t.Errorf("adapter_config.json %s = %#v, want %#v", k, js[k], v)
		}
	}
	for k, v := range map[string]string{"target_modules": `["k_proj","q_proj","v_proj"]`, "layers_to_transform": "[1]",
		"modules_to_save": `["visual_projection","text_projection","logit_scale"]`, "rank_pattern": "{}", "alpha_pattern": "{}", "loftq_config": "{}"} {
		if b, _ := json.Marshal(js[k]); string(b) != v {
			t.Errorf("adapter_config.json %s = %s, want %s", k, b, v)
		}
	}

	file, err := torch.LoadTensors(filepath.Join(dir, WeightsFile), torch.CPU)
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for k := range file {
		keys = append(keys, k)
	}
	torch.FreeMap(file)
	sort.Strings(keys)
	wantKeys := []string{"base_model.model.logit_scale"}
	for _, tw := range []string{"text_model", "vision_model"} {
		for _, p := range []string{"k_proj", "q_proj", "v_proj"} {
			for _, ab := range []string{"A", "B"} {
				wantKeys = append(wantKeys, "base_model.model."+tw+".encoder.layers.1.self_attn."+p+".lora_"+ab+".weight")
			}
		}
	}
	wantKeys = append(wantKeys, "base_model.model.text_projection.weight", "base_model.model.visual_projection.weight")
	sort.Strings(wantKeys)
	if !slices.Equal(keys, wantKeys) {
		t.Errorf("adapter_model.safetensors keys\n got %v\nwant %v", keys, wantKeys)
	}

	m2 := twin(t, sd)
	defer m2.Free()
	b, err := Load(dir, m2)
	if err != nil {
		t.Fatal(err)
	}
	if !sameConfig(b.Config, a.Config) {
		t.Errorf("loaded config %+v, saved %+v", b.Config, a.Config)
	}
	got := embed(m2, px, ids)
	if e := testutil.RelErr(got, want); e != 0 {
		t.Errorf("loaded adapter's outputs differ: rel %.3g", e)
	}

	// A tower restriction is saved as a regular expression naming the modules.
	m3 := twin(t, sd)
	defer m3.Free()
	c := inject(t, m3, Config{R: 2, Alpha: 4, Targets: []string{"q_proj"}, Towers: []string{"text"}})
	dir3 := filepath.Join(t.TempDir(), "text-only")
	if err := c.Save(dir3, ""); err != nil {
		t.Fatal(err)
	}
	lc, baseModel, err := ReadConfig(dir3)
	if err != nil {
		t.Fatal(err)
	}
	if baseModel != "" || lc.TargetRegex != `text_model\.encoder\.layers\.0\.self_attn\.q_proj|text_model\.encoder\.layers\.1\.self_attn\.q_proj` {
		t.Errorf("text-only config read back as %+v, base %q", lc, baseModel)
	}
	if err := c.Unload(); err != nil {
		t.Fatal(err)
	}
	d, err := Load(dir3, m3)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, mod := range d.Modules() {
		names = append(names, mod.Name)
	}
	if !slices.Equal(names, []string{"text_model.encoder.layers.0.self_attn.q_proj", "text_model.encoder.layers.1.self_attn.q_proj"}) {
		t.Errorf("text-only adapter loaded into %v", names)
	}
}

// sameConfig compares what a Config means: targets as a set, the modules to save.
func sameConfig(a, b Config) bool {
	ta, tb := slices.Clone(a.Targets), slices.Clone(b.Targets)
	sort.Strings(ta)
	sort.Strings(tb)
	return a.R == b.R && a.Alpha == b.Alpha && a.Dropout == b.Dropout && a.RSLoRA == b.RSLoRA &&
		slices.Equal(ta, tb) && a.TargetRegex == b.TargetRegex && slices.Equal(a.Layers, b.Layers) &&
		slices.Equal(a.modulesToSave(), b.modulesToSave())
}

// peftConfigJSON is an adapter_config.json as peft 0.13's save_pretrained writes it.
const peftConfigJSON = `{
  "alpha_pattern": {},
  "auto_mapping": null,
  "base_model_name_or_path": "openai/clip-vit-base-patch16",
  "bias": "none",
  "fan_in_fan_out": false,
  "inference_mode": true,
  "init_lora_weights": true,
  "layer_replication": null,
  "layers_pattern": null,
  "layers_to_transform": null,
  "loftq_config": {},
  "lora_alpha": 8,
  "lora_dropout": 0.1,
  "megatron_config": null,
  "megatron_core": "megatron.core",
  "modules_to_save": null,
  "peft_type": "LORA",
  "r": 4,
  "rank_pattern": {},
  "revision": null,
  "target_modules": [
    "v_proj",
    "q_proj"
  ],
  "task_type": null,
  "use_dora": false,
  "use_rslora": false
}`

// writePEFT writes a peft-layout adapter for the tiny model by hand: lora weights of
// rank r under keys that still carry the adapter name ("lora_A.default.weight"), plus
// extra keys. It returns the tensors by canonical key.
func writePEFT(t *testing.T, dir, config string, r int64, pt bool, extra map[string]*torch.Tensor) map[string][]float64 {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, ConfigFile), []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := preset(t, "tiny")
	ts := map[string]*torch.Tensor{}
	vals := map[string][]float64{}
	for _, l := range linearModules(cfg) {
		if !strings.HasSuffix(l.name, ".q_proj") && !strings.HasSuffix(l.name, ".v_proj") {
			continue
		}
		for _, ab := range []struct {
			name  string
			shape []int64
		}{{"lora_A", []int64{r, l.in}}, {"lora_B", []int64{l.out, r}}} {
			x := torch.Randn(ab.shape, torch.Float32, torch.CPU).Owned()
			ts["base_model.model."+l.name+"."+ab.name+".default.weight"] = x
			vals["base_model.model."+l.name+"."+ab.name+".weight"] = x.Float64s()
		}
	}
	for k, v := range extra {
		ts[k] = v
	}
	defer torch.FreeMap(ts)
	var err error
	if pt {
		err = torch.SavePT(filepath.Join(dir, LegacyWeightsFile), ts)
	} else {
		err = torch.SaveSafetensors(filepath.Join(dir, WeightsFile), ts, map[string]string{"format": "pt"})
	}
	if err != nil {
		t.Fatal(err)
	}
	return vals
}

func TestLoadPEFTLayout(t *testing.T) {
	for _, pt := range []bool{false, true} {
		m := tinyModel(t, 7)
		dir := filepath.Join(t.TempDir(), "peft")
		vals := writePEFT(t, dir, peftConfigJSON, 4, pt, nil)
		a, err := Load(dir, m)
		if err != nil {
			t.Fatalf("pt=%v: %v", pt, err)
		}
		if a.Config.R != 4 || a.Config.Alpha != 8 || a.Config.Dropout != 0.1 || len(a.Modules()) != 8 {
			t.Errorf("pt=%v: loaded %+v with %d layers", pt, a.Config, len(a.Modules()))
		}
		got := a.StateDict()
		if len(got) != len(vals) {
			t.Errorf("pt=%v: %d tensors, file has %d", pt, len(got), len(vals))
		}
		for k, v := range vals {
			if g, ok := got[k]; !ok || testutil.RelErr(g.Float64s(), v) != 0 {
				t.Errorf("pt=%v: %s not loaded", pt, k)
			}
		}
		if s := a.Modules()[0].Layer.Scaling; s != 2 {
			t.Errorf("scaling %g, want 2", s)
		}
		m.Free()
	}
}

func TestLoadErrors(t *testing.T) {
	m := tinyModel(t, 8)
	defer m.Free()
	unchanged := func(what string) {
		t.Helper()
		for _, s := range m.Projections() {
			if _, ok := (*s.Ptr).(*nn.Linear); !ok {
				t.Fatalf("%s: %s left as %T", what, s.Name, *s.Ptr)
			}
		}
		for _, p := range m.NamedParameters() {
			if !p.T.RequiresGrad() {
				t.Fatalf("%s: %s left frozen", what, p.Name)
			}
		}
	}

	// Wrong rank, an unknown module and a missing tensor, reported together.
	dir := filepath.Join(t.TempDir(), "bad")
	extra := map[string]*torch.Tensor{
		"base_model.model.vision_model.encoder.layers.0.self_attn.qq_proj.lora_A.default.weight": torch.Zeros([]int64{2, 128}, torch.Float32, torch.CPU).Owned(),
	}
	writePEFT(t, dir, strings.Replace(peftConfigJSON, `"q_proj"`, `"q_proj", "k_proj"`, 1), 2, false, extra)
	_, err := Load(dir, m)
	if err == nil {
		t.Fatal("mismatched adapter loaded")
	}
	msg := err.Error()
	for _, s := range []string{
		"base_model.model.vision_model.encoder.layers.0.self_attn.q_proj.lora_A.default.weight: expected [4 128], got [2 128]",
		"unexpected keys: base_model.model.vision_model.encoder.layers.0.self_attn.qq_proj.lora_A.default.weight",
		"missing keys: base_model.model.text_model.encoder.layers.0.self_attn.k_proj.lora_A.weight",
	} {
		if !strings.Contains(msg, s) {
			t.Errorf("error does not say %q:\n%s", s, msg)
		}
	}
	var serr *clip.StateDictError
	if !errors.As(err, &serr) {
		t.Errorf("error %T is not a *clip.StateDictError", err)
	} else if len(serr.Mismatched) != 16 || len(serr.Missing) != 8 || len(serr.Unexpected) != 1 {
		t.Errorf("%d mismatched, %d missing, %d unexpected; want 16, 8, 1", len(serr.Mismatched), len(serr.Missing), len(serr.Unexpected))
	}
	unchanged("wrong rank")

	for _, c := range []struct{ from, to, want string }{
		{`"use_dora": false`, `"use_dora": true`, "use_dora true"},
		{`"fan_in_fan_out": false`, `"fan_in_fan_out": true`, "fan_in_fan_out true"},
		{`"bias": "none"`, `"bias": "all"`, `bias "all"`},
		{`"peft_type": "LORA"`, `"peft_type": "IA3"`, `peft_type "IA3"`},
		{`"init_lora_weights": true`, `"init_lora_weights": "pissa"`, "init_lora_weights"},
		{`"rank_pattern": {}`, `"rank_pattern": {"q_proj": 8}`, "rank_pattern"},
		{`"layer_replication": null`, `"layer_replication": [[0, 1]]`, "layer_replication"},
		{`"layers_pattern": null`, `"layers_pattern": "h"`, "layers_pattern"},
		{"\"v_proj\",\n    \"q_proj\"", `"query", "value"`, "query,value match no linear layer"},
		{"[\n    \"v_proj\",\n    \"q_proj\"\n  ]", `null`, "target_modules is missing"},
	} {
		if !strings.Contains(peftConfigJSON, c.from) {
			t.Fatalf("fixture has no %q", c.from)
		}
		dir := filepath.Join(t.TempDir(), "unsupported")
		writePEFT(t, dir, strings.Replace(peftConfigJSON, c.from, c.to, 1), 4, false, nil)
		_, err := Load(dir, m)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want one containing %q", c.to, err, c.want)
		}
		unchanged(c.to)
	}
	if _, err := Load(t.TempDir(), m); err == nil || !strings.Contains(err.Error(), ConfigFile) {
		t.Errorf("empty folder: %v", err)
	}
}

// TestGradientsFiniteDifferences checks d loss / d lora_A and d loss / d lora_B of a
// float64 LoRA layer against central differences.
func TestGradientsFiniteDifferences(t *testing.T) {
	torch.ManualSeed(9)
	s := torch.NewScope()
	defer s.Close()
	const in, out, r, n = 5, 4, 3, 6
	base := &nn.Linear{
		Weight: torch.Randn([]int64{out, in}, torch.Float64, torch.CPU).Owned(),
		Bias:   torch.Randn([]int64{out}, torch.Float64, torch.CPU).Owned(),
	}
	l := NewLinear(base, r, 7, 0, false)
	defer l.Free()
	if l.A.DType() != torch.Float64 {
		t.Fatalf("lora_A is %v, want the base's float64", l.A.DType())
	}
	torch.NoGrad(func() { l.B.NormalInPlace(0, 1) })
	x := torch.Randn([]int64{2, n / 2, in}, torch.Float64, torch.CPU)
	w := torch.Randn([]int64{2, n / 2, out}, torch.Float64, torch.CPU)
	loss := func() float64 { // sum(tanh(y) * w)
		var v float64
		torch.NoGrad(func() { v = l.Forward(x).Tanh().Mul(w).Sum(false).Item() })
		return v
	}
	l.Forward(x).Tanh().Mul(w).Sum(false).Backward()
	for _, p := range []struct {
		name string
		t    *torch.Tensor
	}{{"lora_A", l.A}, {"lora_B", l.B}} {
		grad := p.t.Grad().Float64s()
		vals := p.t.Float64s()
		shape := p.t.Shape()
		set := func(v []float64) {
			torch.NoGrad(func() { p.t.CopyFrom(torch.FromFloat64(v, shape...)) })
		}
		const h = 1e-6
		var worst float64
		for i := range vals {
			v := slices.Clone(vals)
			v[i] = vals[i] + h
			set(v)
			fp := loss()
			v[i] = vals[i] - h
			set(v)
			fm := loss()
			fd := (fp - fm) / (2 * h)
			worst = math.Max(worst, math.Abs(fd-grad[i])/math.Max(1, math.Abs(fd)))
		}
		set(vals)
		if worst > 1e-7 {
			t.Errorf("%s: gradient differs from central differences by %.3g", p.name, worst)
		}
		t.Logf("%s: worst |autograd - central difference| %.3g", p.name, worst)
	}
}

// TestViTB16Allocated allocates openai/clip-vit-base-patch16's architecture on the CPU
// and holds nn.Count after Inject equal to CountConfig.
func TestViTB16Allocated(t *testing.T) {
	if testing.Short() {
		t.Skip("allocates ~600 MB")
	}
	cfg := preset(t, "vit-b-16")
	m, err := clip.New(cfg, torch.CPU)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Free()
	lc := Config{R: 64, Alpha: 128, Targets: qkv}
	a := inject(t, m, lc)
	total, trainable, err := a.Counts()
	if err != nil {
		t.Fatal(err)
	}
	if total != 155518977 || trainable != 5898240 {
		t.Errorf("nn.Count after Inject: %s", FormatCounts(total, trainable))
	}
	t.Log(FormatCounts(total, trainable))
}

// TestNoLeaks runs the adapter's life cycle and checks that every tensor is freed.
func TestNoLeaks(t *testing.T) {
	live := torch.Live()
	func() {
		m := tinyModel(t, 10)
		defer m.Free()
		a := inject(t, m, Config{R: 2, Alpha: 4, Targets: qkv, TrainProjections: true})
		randomizeB(a)
		_, release, err := a.MergedStateDict()
		if err != nil {
			t.Fatal(err)
		}
		release()
		if err := a.Merge(); err != nil {
			t.Fatal(err)
		}
		if err := a.Unmerge(); err != nil {
			t.Fatal(err)
		}
		dir := filepath.Join(t.TempDir(), "a")
		if err := a.Save(dir, ""); err != nil {
			t.Fatal(err)
		}
		if err := a.Unload(); err != nil {
			t.Fatal(err)
		}
		// Merge and Unmerge rounded the base weights: their fingerprint moved.
		b, err := LoadWith(dir, m, LoadOptions{Force: true})
		if err != nil {
			t.Fatal(err)
		}
		if err := b.MergeAndUnload(); err != nil {
			t.Fatal(err)
		}
		// The model now holds the adapter merged: only --force applies it again.
		if _, err := LoadWith(dir, m, LoadOptions{Force: true}); err != nil { // left in the model, freed by m.Free
			t.Fatal(err)
		}
	}()
	if d := torch.Live() - live; d != 0 {
		t.Errorf("%d tensors leaked", d)
	}
}
