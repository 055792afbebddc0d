package train

import (
	"math"
	"math/rand/v2"
	"testing"

	"goclip/clip"
	"goclip/torch"
)

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
