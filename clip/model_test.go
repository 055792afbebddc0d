package clip

import (
	"math"
	"path/filepath"
	"strings"
	"testing"

	"goclip/internal/tensortest"
	"goclip/internal/testutil"
	"goclip/nn"
	"goclip/torch"
)

// fixture returns the path of a file of the reference model folder
// ../shared/fixtures/clip-tiny-openai (see testutil.Fixtures).
func fixture(t *testing.T, name string) string {
	t.Helper()
	return testutil.Fixtures(t, "clip-tiny-openai", name)
}

// readNpy reads a float or int64 .npy file into a CPU tensor of its shape (floats as

// relErr is max |a-b| / max |b| (the reference b's scale), after checking the shapes.
func relErr(t *testing.T, name string, a, b *torch.Tensor) float64 {
	t.Helper()
	as, bs := a.Shape(), b.Shape()
	if len(as) != len(bs) || a.Numel() != b.Numel() {
		t.Fatalf("%s: shape %v, reference %v", name, as, bs)
	}
	for i := range as {
		if as[i] != bs[i] {
			t.Fatalf("%s: shape %v, reference %v", name, as, bs)
		}
	}
	return testutil.RelErr(a.Float64s(), b.Float64s())
}

// loadTinyOpenAI builds the fixture model and loads its weights.
func loadTinyOpenAI(t *testing.T) *Model {
	t.Helper()
	cfg, err := LoadConfig(fixture(t, "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	sd, err := torch.LoadTensors(fixture(t, "model.safetensors"), torch.CPU)
	if err != nil {
		t.Fatal(err)
	}
	defer torch.FreeMap(sd)
	m, err := New(cfg, torch.CPU)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.LoadStateDict(sd); err != nil {
		m.Free()
		t.Fatal(err)
	}
	return m
}

// TestModelParityOpenAI compares outputs, loss and gradients with OpenAI's reference
// CLIP on the tiny fixture, in float32, with the default speed-ups (trimmed captions,
// fused q/k/v), without them, and with gradient checkpointing. Norm: max |ours - ref| /
// max |ref|.
func TestModelParityOpenAI(t *testing.T) {
	for name, sp := range map[string]Speed{
		"default":      {},
		"plain":        {FullText: true, SeparateQKV: true},
		"checkpointed": {GradCheckpointing: true},
	} {
		t.Run(name, func(t *testing.T) { testParityOpenAI(t, sp) })
	}
}

func testParityOpenAI(t *testing.T, sp Speed) {
	threads := torch.Threads()
	torch.SetThreads(1)
	defer torch.SetThreads(threads)
	base := torch.Live()
	m := loadTinyOpenAI(t)
	m.SetSpeed(sp)
	s := torch.NewScope()
	pixels := tensortest.ReadNpy(t, fixture(t, "pixel_values.npy"))
	full := tensortest.ReadNpy(t, fixture(t, "input_ids.npy"))
	cut, l, err := m.TextIDs(full.Int64s(), int(full.Size(0)))
	if err != nil {
		t.Fatal(err)
	}
	ids := torch.FromInt64(cut, full.Size(0), int64(l)) // [B, L]
	if trimmed := ids.Size(1) < full.Size(1); trimmed == sp.FullText {
		t.Fatalf("TextIDs gave %v from %v with %+v", ids.Shape(), full.Shape(), sp)
	}

	outputs := map[string]*torch.Tensor{}
	if err := torch.Try(func() {
		outputs["vision_pooled"] = m.VisionPooled(pixels)
		outputs["text_pooled"] = m.TextPooled(ids)
		outputs["image_embeds"] = m.EncodeImage(pixels)
		outputs["text_embeds"] = m.EncodeText(ids)
		logits := m.Forward(pixels, ids)
		outputs["logits_per_image"] = logits
		loss := ContrastiveLoss(logits)
		outputs["loss"] = loss
		loss.Backward()
		m.FinishBackward()
	}); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"vision_pooled", "image_embeds", "text_pooled", "text_embeds", "logits_per_image", "loss"} {
		e := relErr(t, name, outputs[name], tensortest.ReadNpy(t, fixture(t, name+".npy")))
		t.Logf("%-18s rel err %.3g", name, e)
		if e > 1e-5 {
			t.Errorf("%s: relative error %.3g > 1e-5", name, e)
		}
	}

	grads, _ := filepath.Glob(filepath.Join(testutil.Fixtures(t, "clip-tiny-openai"), "grad__*.npy"))
	if len(grads) == 0 {
		t.Fatal("no grad__*.npy fixtures")
	}
	sd := m.StateDict()
	for _, g := range grads {
		key := strings.TrimSuffix(strings.TrimPrefix(filepath.Base(g), "grad__"), ".npy")
		p, ok := sd[key]
		if !ok {
			t.Errorf("gradient fixture for unknown parameter %s", key)
			continue
		}
		grad := p.Grad()
		if grad == nil {
			t.Errorf("%s: no gradient", key)
			continue
		}
		e := relErr(t, "grad "+key, grad, tensortest.ReadNpy(t, g))
		t.Logf("grad %-55s rel err %.3g", key, e)
		if e > 1e-4 {
			t.Errorf("grad %s: relative error %.3g > 1e-4", key, e)
		}
	}
	s.Close()
	m.Free()
	if d := torch.Live() - base; d != 0 {
		t.Errorf("%d tensors leaked", d)
	}
}

// TestModelParameterNames checks the HF keys, and that they agree with ParamShapes.
func TestModelParameterNames(t *testing.T) {
	cfg, _ := Preset("tiny")
	cfg.Vision.NumHiddenLayers, cfg.Text.NumHiddenLayers = 1, 2
	m, err := New(cfg, torch.CPU)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Free()
	got := map[string][]int64{}
	for _, p := range m.NamedParameters() {
		if _, dup := got[p.Name]; dup {
			t.Errorf("duplicate name %s", p.Name)
		}
		got[p.Name] = p.T.Shape()
		if !p.T.RequiresGrad() {
			t.Errorf("%s does not require grad", p.Name)
		}
	}
	for _, k := range []string{
		"vision_model.embeddings.class_embedding",
		"vision_model.embeddings.patch_embedding.weight",
		"vision_model.embeddings.position_embedding.weight",
		"vision_model.pre_layrnorm.weight",
		"vision_model.encoder.layers.0.self_attn.q_proj.weight",
		"vision_model.encoder.layers.0.self_attn.out_proj.bias",
		"vision_model.encoder.layers.0.mlp.fc2.weight",
		"vision_model.post_layernorm.bias",
		"text_model.embeddings.token_embedding.weight",
		"text_model.encoder.layers.1.layer_norm2.weight",
		"text_model.final_layer_norm.bias",
		"visual_projection.weight",
		"text_projection.weight",
		"logit_scale",
	} {
		if _, ok := got[k]; !ok {
			t.Errorf("missing parameter %s", k)
		}
	}
	shapes := ParamShapes(cfg)
	if len(shapes) != len(got) {
		t.Errorf("ParamShapes lists %d parameters, the model has %d", len(shapes), len(got))
	}
	for _, ps := range shapes {
		if g, ok := got[ps.Name]; !ok || !equalShape(g, ps.Shape) {
			t.Errorf("%s: model shape %v, ParamShapes %v", ps.Name, g, ps.Shape)
		}
	}
	total, trainable := nn.Count(m.NamedParameters())
	if n, err := ParamCount(cfg); err != nil || total != n || trainable != total {
		t.Errorf("Count = %d (%d trainable), ParamCount = %d (%v)", total, trainable, n, err)
	}
	if ls := got["logit_scale"]; len(ls) != 0 {
		t.Errorf("logit_scale shape %v, want [] (HF's 0-dim)", ls)
	}
}

func equalShape(a, b []int64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// towerCounts splits a parameter list: the vision tower with visual_projection, the text
// tower with text_projection and logit_scale.
func towerCounts(ps []nn.Named) (vision, text int64) {
	for _, p := range ps {
		if strings.HasPrefix(p.Name, "vision_model.") || p.Name == "visual_projection.weight" {
			vision += p.T.Numel()
		} else {
			text += p.T.Numel()
		}
	}
	return vision, text
}

// TestModelParamCountViTB16 allocates vit-b-16 and seed-scratch (about 600 MB each) and
// checks their counts against openai/clip-vit-base-patch16's.
func TestModelParamCountViTB16(t *testing.T) {
	if testing.Short() {
		t.Skip("allocates two 150M-parameter models")
	}
	for _, name := range []string{"vit-b-16", "seed-scratch"} {
		cfg, err := Preset(name)
		if err != nil {
			t.Fatal(err)
		}
		if n, _ := ParamCount(cfg); n != 149_620_737 {
			t.Errorf("%s: ParamCount %d, want 149,620,737", name, n)
		}
		m, err := New(cfg, torch.CPU)
		if err != nil {
			t.Fatal(err)
		}
		ps := m.NamedParameters()
		total, trainable := nn.Count(ps)
		v, txt := towerCounts(ps)
		m.Free()
		if total != 149_620_737 || trainable != total {
			t.Errorf("%s: total %d trainable %d, want 149,620,737", name, total, trainable)
		}
		if v != 86_192_640 || txt != 63_428_097 {
			t.Errorf("%s: vision %d text %d, want 86,192,640 and 63,428,097", name, v, txt)
		}
	}
}

// TestModelInit checks the from-scratch initialisation's statistics.
func TestModelInit(t *testing.T) {
	torch.ManualSeed(1)
	cfg, _ := Preset("tiny")
	m, err := New(cfg, torch.CPU)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Free()
	d := float64(cfg.Vision.HiddenSize)
	l := float64(cfg.Vision.NumHiddenLayers)
	dt := float64(cfg.Text.HiddenSize)
	want := map[string]float64{
		"vision_model.embeddings.class_embedding":                 math.Pow(d, -0.5),
		"vision_model.embeddings.patch_embedding.weight":          0.02,
		"vision_model.embeddings.position_embedding.weight":       0.02,
		"vision_model.encoder.layers.0.self_attn.q_proj.weight":   math.Pow(d, -0.5) * math.Pow(2*l, -0.5),
		"vision_model.encoder.layers.1.self_attn.v_proj.weight":   math.Pow(d, -0.5) * math.Pow(2*l, -0.5),
		"vision_model.encoder.layers.0.self_attn.out_proj.weight": math.Pow(d, -0.5),
		"vision_model.encoder.layers.0.mlp.fc1.weight":            math.Pow(2*d, -0.5),
		"vision_model.encoder.layers.0.mlp.fc2.weight":            math.Pow(d, -0.5) * math.Pow(2*l, -0.5),
		"text_model.embeddings.token_embedding.weight":            0.02,
		"text_model.embeddings.position_embedding.weight":         0.02,
		"text_model.encoder.layers.0.mlp.fc1.weight":              math.Pow(2*dt, -0.5),
		"visual_projection.weight":                                math.Pow(d, -0.5),
		"text_projection.weight":                                  math.Pow(dt, -0.5),
	}
	sd := m.StateDict()
	for k, std := range want {
		x := sd[k].Float64s()
		var s, ss float64
		for _, v := range x {
			s += v
			ss += v * v
		}
		n := float64(len(x))
		mean := s / n
		got := math.Sqrt(ss/n - mean*mean)
		tol := 4 / math.Sqrt(2*n) // about 4 standard errors of a sample std
		if math.Abs(got/std-1) > tol || math.Abs(mean) > 4*std/math.Sqrt(n) {
			t.Errorf("%s: mean %.4g std %.4g, want 0 and %.4g (n=%d)", k, mean, got, std, len(x))
		}
	}
	for _, p := range m.NamedParameters() {
		name := p.Name
		var want float64 = -1
		switch {
		case strings.HasSuffix(name, ".bias"):
			want = 0
		case strings.Contains(name, "norm") || strings.Contains(name, "layrnorm"):
			want = 1
		case name == "logit_scale":
			want = cfg.LogitScaleInitValue
		}
		if want < 0 {
			continue
		}
		for _, v := range p.T.Float64s() {
			if math.Abs(v-want) > 1e-6 {
				t.Errorf("%s: value %g, want %g", name, v, want)
				break
			}
		}
	}
}

// TestModelLoadStateDictErrors checks that every problem is reported in one error.
func TestModelLoadStateDictErrors(t *testing.T) {
	cfg, _ := Preset("tiny")
	m, err := New(cfg, torch.CPU)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Free()
	s := torch.NewScope()
	defer s.Close()
	sd := map[string]*torch.Tensor{}
	for _, p := range m.NamedParameters() {
		sd[p.Name] = torch.Zeros(p.T.Shape(), torch.Float64, torch.CPU) // converted on copy
	}
	sd["text_model.embeddings.position_ids"] = torch.Arange(0, 77, 1, torch.Int64, torch.CPU).Unsqueeze(0)
	sd["vision_model.embeddings.position_ids"] = torch.Arange(0, 65, 1, torch.Int64, torch.CPU).Unsqueeze(0)
	if err := m.LoadStateDict(sd); err != nil {
		t.Fatalf("complete state dict: %v", err)
	}
	if v := m.LogitScale.Item(); v != 0 {
		t.Errorf("logit_scale %g after loading zeros", v)
	}
	if m.LogitScale.DType() != torch.Float32 {
		t.Errorf("parameter dtype changed to %v", m.LogitScale.DType())
	}

	delete(sd, "text_projection.weight")
	delete(sd, "vision_model.pre_layrnorm.bias")
	sd["text_model.extra.weight"] = torch.Zeros([]int64{2}, torch.Float32, torch.CPU)
	sd["visual_projection.weight"] = torch.Zeros([]int64{3, 4}, torch.Float32, torch.CPU)
	sd["logit_scale"] = torch.Ones([]int64{1}, torch.Float32, torch.CPU)
	err = m.LoadStateDict(sd)
	serr, ok := err.(*StateDictError)
	if !ok {
		t.Fatalf("error %v (%T), want *StateDictError", err, err)
	}
	msg := err.Error()
	t.Log(msg)
	for _, want := range []string{
		"text_projection.weight", "vision_model.pre_layrnorm.bias", "text_model.extra.weight",
		"visual_projection.weight: expected [64 128], got [3 4]", "logit_scale: expected [], got [1]",
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("error lacks %q", want)
		}
	}
	if len(serr.Missing) != 2 || len(serr.Unexpected) != 1 || len(serr.Mismatched) != 2 {
		t.Errorf("missing %v unexpected %v mismatched %v", serr.Missing, serr.Unexpected, serr.Mismatched)
	}
	if v := m.LogitScale.Item(); v != 0 {
		t.Errorf("a failed load changed logit_scale to %g", v)
	}
}

// TestModelStateDictAliases checks that StateDict returns the parameters themselves.
func TestModelStateDictAliases(t *testing.T) {
	cfg, _ := Preset("tiny")
	m, err := New(cfg, torch.CPU)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Free()
	sd := m.StateDict()
	if len(sd) != len(m.NamedParameters()) {
		t.Fatalf("%d entries, %d parameters", len(sd), len(m.NamedParameters()))
	}
	sd["logit_scale"].Fill(1.5)
	if v := m.LogitScale.Item(); v != 1.5 {
		t.Errorf("write through StateDict not seen: %g", v)
	}
}

// TestModelTextPooling checks both pooling rules.
func TestModelTextPooling(t *testing.T) {
	cfg, _ := Preset("tiny")
	cfg.Text.VocabSize = 100
	cfg.Text.EOSTokenID = 7
	m, err := New(cfg, torch.CPU)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Free()
	m.SetTrain(false)
	s := torch.NewScope()
	defer s.Close()
	// Row 0: the end token 7 first at position 3, a larger id 9 later; row 1: 7 at 1 and 4.
	ids := torch.FromInt64([]int64{5, 6, 8, 7, 9, 0, 5, 7, 8, 9, 7, 0}, 2, 6)
	pooled := m.TextPooled(ids)
	// The hidden state at a position depends on the prefix only (causal), so pooling at
	// position p equals pooling a sequence cut after p.
	for row, pos := range []int64{3, 1} {
		cut := ids.Narrow(0, int64(row), 1).Narrow(1, 0, pos+1)
		ref := m.TextModel.FinalLayerNorm.Forward(
			m.TextModel.Encoder.Forward(m.TextModel.Embeddings.Forward(cut)).Select(1, pos)) // [1, D]
		if e := relErr(t, "pooled", pooled.Narrow(0, int64(row), 1), ref); e > 1e-5 {
			t.Errorf("first-eos pooling row %d: rel err %g", row, e)
		}
	}
	m.TextModel.EOSTokenID = 2 // legacy: argmax(ids)
	pooled = m.TextPooled(ids)
	for row, pos := range []int64{4, 3} {
		cut := ids.Narrow(0, int64(row), 1).Narrow(1, 0, pos+1)
		ref := m.TextModel.FinalLayerNorm.Forward(
			m.TextModel.Encoder.Forward(m.TextModel.Embeddings.Forward(cut)).Select(1, pos))
		if e := relErr(t, "pooled", pooled.Narrow(0, int64(row), 1), ref); e > 1e-5 {
			t.Errorf("argmax pooling row %d: rel err %g", row, e)
		}
	}
}

// TestModelProjections checks the slots and that a replacement is used everywhere.
func TestModelProjections(t *testing.T) {
	cfg, _ := Preset("tiny")
	m, err := New(cfg, torch.CPU)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Free()
	slots := m.Projections()
	want := 6*int(cfg.Vision.NumHiddenLayers+cfg.Text.NumHiddenLayers) + 2
	if len(slots) != want {
		t.Errorf("%d slots, want %d", len(slots), want)
	}
	params := map[string]bool{}
	for _, p := range m.NamedParameters() {
		params[p.Name] = true
	}
	names := map[string]bool{}
	for _, sl := range slots {
		names[sl.Name] = true
		if !params[sl.Name+".weight"] {
			t.Errorf("slot %s has no %s.weight parameter", sl.Name, sl.Name)
		}
	}
	for _, n := range []string{"vision_model.encoder.layers.0.self_attn.q_proj", "text_model.encoder.layers.1.self_attn.v_proj",
		"text_model.encoder.layers.1.mlp.fc2", "visual_projection", "text_projection"} {
		if !names[n] {
			t.Errorf("no slot %s", n)
		}
	}

	// Swap text q_proj of layer 0 for a wrapper and check Forward uses it.
	s := torch.NewScope()
	defer s.Close()
	ids := torch.FromInt64([]int64{49406, 320, 1929, 49407, 0, 0}, 1, 6)
	before := m.EncodeText(ids)
	for _, sl := range slots {
		if sl.Name == "text_model.encoder.layers.0.self_attn.q_proj" {
			*sl.Ptr = &scaled{Linear: (*sl.Ptr).Base(), by: 3}
		}
	}
	after := m.EncodeText(ids)
	if relErr(t, "swap", after, before) < 1e-4 {
		t.Error("replacing q_proj did not change the text embedding")
	}
	if _, ok := m.TextModel.Encoder.Layers[0].SelfAttn.Q.(*scaled); !ok {
		t.Error("slot pointer does not reach the field")
	}
}

// scaled is a test Projection: its base layer's output times a constant.
type scaled struct {
	*nn.Linear
	by float64
}

func (s *scaled) Forward(x *torch.Tensor) *torch.Tensor { return s.Linear.Forward(x).MulScalar(s.by) }

// TestModelFreeAndErrors checks Free, memory accounting and a bad input's error.
func TestModelFreeAndErrors(t *testing.T) {
	base := torch.Live()
	cfg, _ := Preset("tiny")
	m, err := New(cfg, torch.CPU)
	if err != nil {
		t.Fatal(err)
	}
	err = torch.Try(func() {
		s := torch.NewScope()
		defer s.Close()
		m.EncodeImage(torch.Zeros([]int64{2, 3, 32, 32}, torch.Float32, torch.CPU)) // wrong size
	})
	if err == nil {
		t.Error("a wrongly sized image gave no error")
	}
	s := torch.NewScope()
	torch.NoGrad(func() {
		logits := m.Forward(torch.Zeros([]int64{2, 3, 64, 64}, torch.Float32, torch.CPU),
			torch.FromInt64([]int64{49406, 320, 49407, 49406, 49407, 0}, 2, 3))
		if sh := logits.Shape(); sh[0] != 2 || sh[1] != 2 {
			t.Errorf("logits shape %v", sh)
		}
	})
	s.Close()
	m.Free()
	m.Free()
	if d := torch.Live() - base; d != 0 {
		t.Errorf("%d tensors leaked", d)
	}
	bad := cfg
	bad.Text.HiddenAct = "swish"
	if _, err := New(bad, torch.CPU); err == nil || !strings.Contains(err.Error(), "text_config.hidden_act") {
		t.Errorf("New with a bad config: %v", err)
	}
}

// TestLogits checks Logits of Normalized embeddings against the definition computed in
// float64 here: exp(s)·cos(x_i, y_j), logits_per_text the transpose of
// logits_per_image, and Normalized giving float32 rows of unit norm from float64 input.
func TestLogits(t *testing.T) {
	s := torch.NewScope()
	defer s.Close()
	const n, m, p = 3, 5, 4
	x := make([]float64, n*p)
	y := make([]float64, m*p)
	for i := range x {
		x[i] = math.Sin(float64(3*i+1)) * float64(1+i%3)
	}
	for i := range y {
		y[i] = math.Cos(float64(5*i+2)) * float64(1+i%2)
	}
	scale := 2.3
	xn := Normalized(torch.FromFloat64(x, n, p)) // [N, P]
	yn := Normalized(torch.FromFloat64(y, m, p)) // [M, P]
	if xn.DType() != torch.Float32 {
		t.Fatalf("Normalized dtype %v, want float32", xn.DType())
	}
	perImage := Logits(xn, yn, torch.Scalar(float32(scale))) // [N, M]
	perText := Logits(yn, xn, torch.Scalar(float32(scale)))  // [M, N]
	if sh := perImage.Shape(); len(sh) != 2 || sh[0] != n || sh[1] != m {
		t.Fatalf("logits shape %v, want [%d %d]", sh, n, m)
	}
	got, gotT := perImage.Float32s(), perText.Float32s()
	for i := range n {
		for j := range m {
			var xy, xx, yy float64
			for k := range p {
				xy += x[i*p+k] * y[j*p+k]
				xx += x[i*p+k] * x[i*p+k]
				yy += y[j*p+k] * y[j*p+k]
			}
			want := math.Exp(scale) * xy / math.Sqrt(xx*yy)
			if d := math.Abs(float64(got[i*m+j]) - want); d > 1e-5*math.Exp(scale) {
				t.Errorf("logits[%d][%d] = %g, want %g", i, j, got[i*m+j], want)
			}
			if math.Abs(float64(gotT[j*n+i]-got[i*m+j])) > 1e-6*math.Exp(scale) {
				t.Errorf("logits_per_text[%d][%d] = %g, logits_per_image[%d][%d] = %g", j, i, gotT[j*n+i], i, j, got[i*m+j])
			}
		}
	}
	norms := xn.Mul(xn).Sum(false, 1).Float32s() // [N]
	for i, v := range norms {
		if math.Abs(float64(v)-1) > 1e-6 {
			t.Errorf("row %d of Normalized: norm² %g", i, v)
		}
	}
}
