package train

import (
	"math"
	"math/rand/v2"
	"testing"

	"goclip/clip"
	"goclip/torch"
)

func TestScheduleValues(t *testing.T) {
	s := Schedule{Kind: Cosine, Base: 1e-3, MinLR: 1e-5, Warmup: 10, Total: 110}
	if err := s.Validate(); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		step int
		want float64
	}{
		{0, 1e-4},     // first warmup step: base/warmup
		{4, 5e-4},     // (4+1)/10
		{9, 1e-3},     // warmup ends at the base rate
		{10, 1e-3},    // cosine starts at the base rate
		{60, 5.05e-4}, // half way: min + (base-min)/2
		{110, 1e-5},   // the end: min
		{500, 1e-5},   // beyond the end: min
	}
	for _, c := range cases {
		if got := s.At(c.step); math.Abs(got-c.want) > 1e-12 {
			t.Errorf("cosine At(%d) = %g, want %g", c.step, got, c.want)
		}
	}
	// A quarter of the decay: min + (base-min)(1+cos(pi/4))/2.
	if got, want := s.At(35), 1e-5+(1e-3-1e-5)*0.5*(1+math.Cos(math.Pi/4)); math.Abs(got-want) > 1e-12 {
		t.Errorf("cosine At(35) = %g, want %g", got, want)
	}
	c := Schedule{Kind: Constant, Base: 2e-4, Warmup: 4, Total: 100}
	for step, want := range map[int]float64{0: 5e-5, 3: 2e-4, 50: 2e-4, 99: 2e-4} {
		if got := c.At(step); math.Abs(got-want) > 1e-15 {
			t.Errorf("constant At(%d) = %g, want %g", step, got, want)
		}
	}
	if (Schedule{Kind: "linear", Base: 1}).Validate() == nil {
		t.Error("unknown schedule kind accepted")
	}
}

func TestLossScaler(t *testing.T) {
	s := NewLossScaler(1024)
	s.GrowthInterval = 3
	if !s.Update(false) || !s.Update(false) || s.Scale != 1024 {
		t.Fatalf("scale changed before the interval: %g", s.Scale)
	}
	if s.Update(true) || s.Scale != 512 || s.Skipped != 1 || s.Good != 0 {
		t.Fatalf("overflow: scale %g skipped %d good %d, want 512 1 0", s.Scale, s.Skipped, s.Good)
	}
	for i := 0; i < 3; i++ {
		s.Update(false)
	}
	if s.Scale != 1024 || s.Good != 0 {
		t.Fatalf("after the growth interval: scale %g good %d, want 1024 0", s.Scale, s.Good)
	}
	d := NewLossScaler(DefaultInitScale)
	if d.GrowthInterval != 2000 || d.Backoff != 0.5 || d.Growth != 2 || d.Scale != 65536 {
		t.Fatalf("defaults %+v", d)
	}
}

// TestForcedOverflow runs real steps with a loss scale that overflows float32: the step
// is skipped, the parameters are untouched and the scale is halved.
func TestForcedOverflow(t *testing.T) {
	f := synthData(t, 120, "base")
	m := newModel(t, microConfig(t, f.tok), 3)
	tr, err := newTrainer(Job{Model: m}, Options{LR: 1e-2})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.free()
	tr.scaler = NewLossScaler(1e39) // inf in float32
	in := randomInputs(m.Config, 4, 11)
	defer in.free()
	before := snapshot(m)
	res, err := tr.step(in, 1e-2)
	if err != nil {
		t.Fatal(err)
	}
	if res.outcome != stepOverflow || tr.scaler.Scale != 5e38 || tr.scaler.Skipped != 1 || tr.opt.Step != 0 {
		t.Fatalf("outcome %v, scale %g, skipped %d, optimizer step %d; want overflow, 5e38, 1, 0",
			res.outcome, tr.scaler.Scale, tr.scaler.Skipped, tr.opt.Step)
	}
	if d := maxDiff(before, snapshot(m)); d != 0 {
		t.Fatalf("a skipped step changed the parameters by %g", d)
	}
	// A finite scale steps, and the update is the unscaled one.
	tr.scaler = NewLossScaler(1024)
	tr.scaler.GrowthInterval = 1
	if res, err = tr.step(in, 1e-2); err != nil || res.outcome != stepDone {
		t.Fatalf("outcome %v err %v", res.outcome, err)
	}
	if tr.scaler.Scale != 2048 {
		t.Fatalf("scale %g after a good step with interval 1, want 2048", tr.scaler.Scale)
	}
	if maxDiff(before, snapshot(m)) == 0 {
		t.Fatal("a good step changed nothing")
	}
}

func TestWeightDecayGroups(t *testing.T) {
	f := synthData(t, 120, "base")
	m := newModel(t, microConfig(t, f.tok), 1)
	decay, noDecay := ParamGroups(m.NamedParameters())
	in := func(list []string, name string) bool {
		for _, n := range list {
			if n == name {
				return true
			}
		}
		return false
	}
	var d, nd []string
	for _, p := range decay {
		d = append(d, p.Name)
	}
	for _, p := range noDecay {
		nd = append(nd, p.Name)
	}
	for _, name := range []string{
		"vision_model.encoder.layers.0.self_attn.q_proj.weight", "text_model.encoder.layers.0.mlp.fc1.weight",
		"visual_projection.weight", "text_projection.weight", "vision_model.embeddings.patch_embedding.weight",
	} {
		if !in(d, name) {
			t.Errorf("%s should decay", name)
		}
	}
	for _, name := range []string{
		"logit_scale", "vision_model.embeddings.class_embedding", "vision_model.embeddings.position_embedding.weight",
		"text_model.embeddings.token_embedding.weight", "text_model.embeddings.position_embedding.weight",
		"vision_model.pre_layrnorm.weight", "vision_model.encoder.layers.0.layer_norm1.weight",
		"text_model.final_layer_norm.weight", "text_model.encoder.layers.0.self_attn.q_proj.bias",
		"vision_model.post_layernorm.bias",
	} {
		if !in(nd, name) {
			t.Errorf("%s should not decay", name)
		}
	}
	if len(d)+len(nd) != len(m.NamedParameters()) {
		t.Errorf("groups hold %d+%d parameters, the model %d", len(d), len(nd), len(m.NamedParameters()))
	}
	// The optimizer gets the decay only on the first group.
	tr, err := newTrainer(Job{Model: m}, Options{WeightDecay: 0.2})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.free()
	if tr.opt.Groups[0].WeightDecay != 0.2 || tr.opt.Groups[1].WeightDecay != 0 || len(tr.opt.Groups[0].Params) != len(d) {
		t.Fatalf("optimizer groups: decay %g/%g, %d params", tr.opt.Groups[0].WeightDecay, tr.opt.Groups[1].WeightDecay, len(tr.opt.Groups[0].Params))
	}
}

// TestGradAccumEqualsLargerBatch: one step on a batch of 8 in 1, 2 and 4 micro-batches
// gives the same parameters (fp32).
func TestGradAccumEqualsLargerBatch(t *testing.T) {
	f := synthData(t, 120, "base")
	cfg := microConfig(t, f.tok)
	var ref map[string][]float32
	for _, accum := range []int{1, 2, 4} {
		m := newModel(t, cfg, 5)
		tr, err := newTrainer(Job{Model: m}, Options{GradAccum: accum, WeightDecay: 0.1, ClipGrad: 1})
		if err != nil {
			t.Fatal(err)
		}
		in := randomInputs(cfg, 8, 21)
		var losses []float64
		for i := 0; i < 2; i++ {
			res, err := tr.step(in, 1e-3)
			if err != nil || res.outcome != stepDone {
				t.Fatalf("accum %d: outcome %v err %v", accum, res.outcome, err)
			}
			losses = append(losses, res.loss)
		}
		in.free()
		tr.free()
		got := snapshot(m)
		if ref == nil {
			ref = got
			t.Logf("accum 1: losses %v", losses)
			continue
		}
		d := maxDiff(ref, got)
		t.Logf("accum %d: losses %v, max parameter difference from one batch %.3g", accum, losses, d)
		if d > 1e-5 {
			t.Fatalf("accum %d: parameters differ from the single batch by %g", accum, d)
		}
	}
}

// TestRetrievalHandChecked checks recalls and the pair loss on embeddings small enough
// to rank by hand.
func TestRetrievalHandChecked(t *testing.T) {
	s := torch.NewScope()
	defer s.Close()
	// Three images on the axes of the plane (cosine 1 with themselves, 0 with the other
	// axis, -1 with the opposite direction).
	img := torch.FromFloat32([]float32{
		1, 0, // image 0
		0, 1, // image 1
		-1, 0, // image 2
	}, 3, 2)
	// Two captions per image. Caption 1 (of image 0) points at image 1; caption 3 (of
	// image 1) points at image 2; the rest point at their own image (scaled: cosine
	// ignores the norm).
	txt := torch.FromFloat32([]float32{
		2, 0.1, // c0 of image 0: nearest image 0
		0.1, 1, // c1 of image 0: nearest image 1
		0.2, 3, // c2 of image 1: nearest image 1
		-1, -0.1, // c3 of image 1: nearest image 2
		-1, 0.3, // c4 of image 2: nearest image 2
		-1, 0.2, // c5 of image 2: nearest image 2
	}, 6, 2)
	owner := []int{0, 0, 1, 1, 2, 2}
	i2t, t2i, err := Retrieval(img, txt, owner)
	if err != nil {
		t.Fatal(err)
	}
	// Image 0's nearest caption is c0 (its own): hit at rank 1. Image 1's nearest is c2
	// (its own). Image 2's nearest is c3 (cos .995, image 1's), then c5, c4: own caption
	// at rank 2. So R@1 = 2/3, R@5 = R@10 = 1.
	if math.Abs(i2t.R1-2.0/3) > 1e-9 || i2t.R5 != 1 || i2t.R10 != 1 {
		t.Errorf("image->text %+v, want R@1 2/3, R@5 1, R@10 1", i2t)
	}
	// Captions: c0->0 hit, c1->1 (own 0 at rank 2), c2->1 hit, c3->2 (own 1 at rank 2),
	// c4, c5 -> 2 hits: R@1 = 4/6; with 3 images, R@5 = R@10 = 1.
	if math.Abs(t2i.R1-4.0/6) > 1e-9 || t2i.R5 != 1 || t2i.R10 != 1 {
		t.Errorf("text->image %+v, want R@1 2/3, R@5 1, R@10 1", t2i)
	}

	// Pair loss over batches of 2 pairs (the second batch partial): images 0,1 with
	// their first captions c0, c2, then image 2 with c4 alone (CE of one logit: 0).
	pair := torch.FromFloat32([]float32{2, 0.1, 0.2, 3, -1, 0.3}, 3, 2)
	scale := math.Log(10)
	got := pairLoss(img, pair, torch.Scalar(float32(scale)), 2)
	cos := func(a, b [2]float64) float64 {
		return (a[0]*b[0] + a[1]*b[1]) / math.Hypot(a[0], a[1]) / math.Hypot(b[0], b[1])
	}
	I := [][2]float64{{1, 0}, {0, 1}}
	T := [][2]float64{{2, 0.1}, {0.2, 3}}
	var l [2][2]float64
	for i := 0; i < 2; i++ {
		for j := 0; j < 2; j++ {
			l[i][j] = 10 * cos(I[i], T[j])
		}
	}
	ce := func(x [2]float64, k int) float64 { return math.Log(math.Exp(x[0])+math.Exp(x[1])) - x[k] }
	rows := (ce(l[0], 0) + ce(l[1], 1)) / 2
	cols := (ce([2]float64{l[0][0], l[1][0]}, 0) + ce([2]float64{l[0][1], l[1][1]}, 1)) / 2
	want := ((rows+cols)/2*2 + 0*1) / 3
	if math.Abs(got-want) > 1e-5 {
		t.Errorf("pair loss %.7f, want %.7f", got, want)
	}
}

// TestRetrievalMatchesDefinition compares Retrieval with a direct implementation of the
// definition on random embeddings with 5 captions per image.
func TestRetrievalMatchesDefinition(t *testing.T) {
	s := torch.NewScope()
	defer s.Close()
	rng := rand.New(rand.NewPCG(1, 2))
	const n, per, d = 37, 5, 8
	imgs := make([]float32, n*d)
	txts := make([]float32, n*per*d)
	var owner []int
	for i := range imgs {
		imgs[i] = float32(rng.NormFloat64())
	}
	for j := 0; j < n*per; j++ {
		owner = append(owner, j/per)
		for k := 0; k < d; k++ { // near its image, so that recalls are neither 0 nor 1
			txts[j*d+k] = imgs[(j/per)*d+k] + float32(1.5*rng.NormFloat64())
		}
	}
	i2t, t2i, err := Retrieval(torch.FromFloat32(imgs, n, d), torch.FromFloat32(txts, n*per, d), owner)
	if err != nil {
		t.Fatal(err)
	}

	cos := func(a, b []float32) float64 {
		var ab, aa, bb float64
		for k := range a {
			ab += float64(a[k]) * float64(b[k])
			aa += float64(a[k]) * float64(a[k])
			bb += float64(b[k]) * float64(b[k])
		}
		return ab / math.Sqrt(aa*bb)
	}
	// rankOf is the number of candidates strictly more similar than the best match.
	var wantI2T, wantT2I [3]float64
	for i := 0; i < n; i++ {
		best := math.Inf(-1)
		for j := 0; j < n*per; j++ {
			if owner[j] == i {
				best = math.Max(best, cos(imgs[i*d:(i+1)*d], txts[j*d:(j+1)*d]))
			}
		}
		better := 0
		for j := 0; j < n*per; j++ {
			if owner[j] != i && cos(imgs[i*d:(i+1)*d], txts[j*d:(j+1)*d]) > best {
				better++
			}
		}
		for r, k := range recallKs {
			if better < k {
				wantI2T[r] += 1.0 / n
			}
		}
	}
	for j := 0; j < n*per; j++ {
		own := cos(txts[j*d:(j+1)*d], imgs[owner[j]*d:(owner[j]+1)*d])
		better := 0
		for i := 0; i < n; i++ {
			if i != owner[j] && cos(txts[j*d:(j+1)*d], imgs[i*d:(i+1)*d]) > own {
				better++
			}
		}
		for r, k := range recallKs {
			if better < k {
				wantT2I[r] += 1.0 / float64(n*per)
			}
		}
	}
	got := [2][3]float64{{i2t.R1, i2t.R5, i2t.R10}, {t2i.R1, t2i.R5, t2i.R10}}
	want := [2][3]float64{wantI2T, wantT2I}
	t.Logf("image->text %+v, text->image %+v", i2t, t2i)
	for a := range got {
		for r := range got[a] {
			if math.Abs(got[a][r]-want[a][r]) > 1e-9 {
				t.Errorf("direction %d R@%d = %g, definition gives %g", a, recallKs[r], got[a][r], want[a][r])
			}
		}
	}
}

// TestNoTensorLeak runs many tiny steps and checks that torch.Live() does not grow.
func TestNoTensorLeak(t *testing.T) {
	f := synthData(t, 120, "base")
	cfg := microConfig(t, f.tok)
	cfg.Vision.ImageSize, cfg.Vision.PatchSize = 16, 8
	cfg.Vision.NumHiddenLayers, cfg.Text.NumHiddenLayers = 1, 1
	cfg.Text.MaxPositionEmbeddings = 8
	m := newModel(t, cfg, 9)
	steps := 2000
	if testing.Short() {
		steps = 300
	}
	for _, accum := range []int{1, 2} {
		tr, err := newTrainer(Job{Model: m}, Options{GradAccum: accum, ClipGrad: 1})
		if err != nil {
			t.Fatal(err)
		}
		tr.scaler = NewLossScaler(1024) // exercise the scaling path too
		in := randomInputs(cfg, 2, 3)
		for i := 0; i < 5; i++ { // warm up: gradients and moments exist from here on
			if _, err := tr.step(in, 1e-4); err != nil {
				t.Fatal(err)
			}
		}
		base := torch.Live()
		n := steps
		if accum > 1 {
			n = steps / 4
		}
		for i := 0; i < n; i++ {
			if _, err := tr.step(in, 1e-4); err != nil {
				t.Fatal(err)
			}
			if live := torch.Live(); live != base {
				t.Fatalf("accum %d: torch.Live() went from %d to %d at step %d", accum, base, live, i)
			}
		}
		// A failing step (bad shape) frees its tensors as well.
		bad := batchTensors{pixels: in.pixels, ids: torch.Zeros([]int64{2, 50}, torch.Int64, torch.CPU).Owned()}
		if _, err := tr.step(bad, 1e-4); err == nil {
			t.Fatal("mismatched batch gave no error")
		}
		bad.ids.Free()
		if live := torch.Live(); live != base {
			t.Fatalf("accum %d: a failed step left %d tensors", accum, live-base)
		}
		in.free()
		tr.free()
		t.Logf("accum %d: %d steps, torch.Live() steady at %d", accum, n, base)
	}
}

// microConfig is a smaller model still, for the step-level tests.
func microConfig(t testing.TB, tok interface {
	VocabSize() int
	StartID() int
	EndID() int
}) clip.Config {
	t.Helper()
	cfg, err := clip.Preset("tiny")
	if err != nil {
		t.Fatal(err)
	}
	cfg.Text.VocabSize = int64(tok.VocabSize())
	cfg.Text.BOSTokenID, cfg.Text.EOSTokenID, cfg.Text.PadTokenID = int64(tok.StartID()), int64(tok.EndID()), int64(tok.EndID())
	cfg.Text.MaxPositionEmbeddings = 12
	cfg.Vision.ImageSize, cfg.Vision.PatchSize = 16, 4
	cfg.Vision.HiddenSize, cfg.Text.HiddenSize = 32, 32
	cfg.Vision.IntermediateSize, cfg.Text.IntermediateSize = 64, 64
	cfg.Vision.NumAttentionHeads, cfg.Text.NumAttentionHeads = 2, 2
	cfg.ProjectionDim, cfg.Vision.ProjectionDim, cfg.Text.ProjectionDim = 16, 16, 16
	return cfg
}

// randomInputs is a batch of random pixels and ids ending with the end token.
func randomInputs(cfg clip.Config, b int64, seed uint64) batchTensors {
	torch.ManualSeed(seed)
	s := cfg.Vision.ImageSize
	T := cfg.Text.MaxPositionEmbeddings
	ids := make([]int64, b*T)
	rng := rand.New(rand.NewPCG(seed, 1))
	for i := int64(0); i < b; i++ {
		n := 2 + rng.Int64N(T-2)
		ids[i*T] = cfg.Text.BOSTokenID
		for j := int64(1); j < n; j++ {
			ids[i*T+j] = rng.Int64N(256)
		}
		ids[i*T+n] = cfg.Text.EOSTokenID
	}
	return batchTensors{
		pixels: torch.Randn([]int64{b, 3, s, s}, torch.Float32, torch.CPU).Owned(),
		ids:    torch.FromInt64(ids, b, T).Owned(),
	}
}

func (b batchTensors) free() {
	b.pixels.Free()
	b.ids.Free()
}

// snapshot copies every parameter to the host.
func snapshot(m *clip.Model) map[string][]float32 {
	out := map[string][]float32{}
	for _, p := range m.NamedParameters() {
		out[p.Name] = p.T.Float32s()
	}
	return out
}

// maxDiff is the largest absolute difference between two snapshots.
func maxDiff(a, b map[string][]float32) float64 {
	var d float64
	for k, va := range a {
		vb := b[k]
		for i := range va {
			d = math.Max(d, math.Abs(float64(va[i])-float64(vb[i])))
		}
	}
	return d
}
