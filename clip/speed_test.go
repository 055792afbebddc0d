package clip

import (
	"errors"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"goclip/internal/testutil"
	"goclip/torch"
)

// speedModel is a seeded tiny CLIP (float32, CPU) with the given pooling rule and
// attention dropout.
func speedModel(t *testing.T, eos int64, dropout float64) *Model {
	t.Helper()
	cfg, _ := Preset("tiny")
	cfg.Text.EOSTokenID = eos
	cfg.Vision.AttentionDropout, cfg.Text.AttentionDropout = dropout, dropout
	torch.ManualSeed(7)
	m, err := New(cfg, torch.CPU)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// captions are rows of T ids: start 49406, 1 to maxBody random ids below 49406, the end
// id 49407, then pad (0, or the end id as transformers' CLIP tokenizer pads). It returns
// the ids and the longest row's length.
func captions(r *rand.Rand, rows, t, maxBody int, pad int64) ([]int64, int) {
	ids := make([]int64, rows*t)
	longest := 0
	for i := range rows {
		row := ids[i*t : (i+1)*t]
		n := 1 + r.IntN(maxBody)
		row[0] = 49406
		for j := 1; j <= n; j++ {
			row[j] = int64(r.IntN(49406))
		}
		row[n+1] = 49407
		for j := n + 2; j < t; j++ {
			row[j] = pad
		}
		longest = max(longest, n+2)
	}
	return ids, longest
}

// gradsOf runs f (which returns a scalar loss) with autograd, back-propagates it (with
// FinishBackward), and returns the loss's inputs' outputs and every parameter's gradient
// as float64 slices (nil for none), clearing the gradients.
func gradsOf(t *testing.T, m *Model, f func() (out, loss *torch.Tensor)) ([]float64, map[string][]float64) {
	t.Helper()
	s := torch.NewScope()
	defer s.Close()
	var out []float64
	grads := map[string][]float64{}
	if err := torch.Try(func() {
		o, loss := f()
		out = o.Float64s()
		loss.Backward()
		m.FinishBackward()
		for _, p := range m.NamedParameters() {
			if g := p.T.Grad(); g != nil {
				grads[p.Name] = g.Float64s()
			}
			p.T.ZeroGrad()
		}
	}); err != nil {
		t.Fatal(err)
	}
	return out, grads
}

// sameGrads compares two gradient sets: over all parameters together, max |a-b| /
// max |b| within tol (1e-6: fp32 rounding), and per parameter within 10·tol, with the
// same parameters present. The per-parameter bound is looser because some gradients are
// sums that cancel (layer-norm biases), where the same rounding of the inputs weighs
// more, and the rounding of libtorch's vectorised kernels depends on how buffers happen
// to be aligned. k_proj.bias is zero in exact arithmetic (adding a constant to every key
// leaves the softmax unchanged): it holds rounding noise only, so its difference is
// measured against the set's largest gradient.
func sameGrads(t *testing.T, what string, got, want map[string][]float64, tol float64) {
	t.Helper()
	if len(got) != len(want) || len(want) == 0 {
		t.Errorf("%s: %d gradients, want %d", what, len(got), len(want))
	}
	largest, largestDiff := 0.0, 0.0
	for _, w := range want {
		for _, v := range w {
			largest = max(largest, math.Abs(v))
		}
	}
	worst, at := 0.0, ""
	for name, w := range want {
		g, ok := got[name]
		if !ok || len(g) != len(w) {
			t.Errorf("%s: no gradient of the right size for %s", what, name)
			continue
		}
		diff, scale := 0.0, 0.0
		for i := range w {
			diff = max(diff, math.Abs(g[i]-w[i]))
			scale = max(scale, math.Abs(w[i]))
		}
		largestDiff = max(largestDiff, diff)
		if strings.HasSuffix(name, "k_proj.bias") {
			scale = largest
		}
		if e := diff / scale; e > worst || e != e {
			worst, at = e, name
		}
	}
	all := largestDiff / largest
	t.Logf("%s: gradients rel err %.3g overall, worst %.3g (%s)", what, all, worst, at)
	if all > tol || all != all {
		t.Errorf("%s: gradients rel err %.3g > %g", what, all, tol)
	}
	if worst > 10*tol || worst != worst {
		t.Errorf("%s: gradient of %s rel err %.3g > %g", what, at, worst, 10*tol)
	}
}

// TestTextIDsTrimExact checks that the text tower at the batch's longest caption gives
// the untrimmed model's embeddings and gradients (fp32, 1e-6 relative) on captions of
// mixed lengths, for both pooling rules and both paddings, and that the off switch keeps
// every position.
func TestTextIDsTrimExact(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for _, c := range []struct {
		name     string
		eos, pad int64
	}{{"argmax, zero padding", 2, 0}, {"eos_token_id, zero padding", 49407, 0}, {"eos_token_id, end-id padding", 49407, 49407}} {
		t.Run(c.name, func(t *testing.T) {
			base := torch.Live()
			m := speedModel(t, c.eos, 0)
			defer m.Free()
			const rows, ctx = 6, 77
			ids, longest := captions(r, rows, ctx, 20, c.pad)
			s := torch.NewScope()
			defer s.Close()
			trimmed := textIDs(t, m, ids, rows)
			if got := trimmed.Shape(); got[0] != rows || got[1] != int64(longest) {
				t.Fatalf("TextIDs shape %v, want [%d %d]", got, rows, longest)
			}
			full := torch.FromInt64(ids, rows, ctx)
			weights := torch.Randn([]int64{rows, m.Config.ProjectionDim}, torch.Float32, torch.CPU)
			run := func(x *torch.Tensor) ([]float64, map[string][]float64) {
				return gradsOf(t, m, func() (*torch.Tensor, *torch.Tensor) {
					e := m.EncodeText(x)                // [B, P]
					return e, e.Mul(weights).Sum(false) // []
				})
			}
			wantOut, wantGrads := run(full)
			gotOut, gotGrads := run(trimmed)
			e := testutil.RelErr(gotOut, wantOut)
			t.Logf("embeddings rel err %.3g (%d of %d positions)", e, longest, ctx)
			if e > 1e-6 || e != e {
				t.Errorf("trimmed embeddings rel err %.3g > 1e-6", e)
			}
			sameGrads(t, "trimmed", gotGrads, wantGrads, 1e-6)

			m.SetSpeed(Speed{FullText: true})
			kept := textIDs(t, m, ids, rows)
			if kept.Size(1) != ctx || !kept.Equal(full) {
				t.Errorf("FullText: TextIDs gave %v, want the ids unchanged", kept.Shape())
			}
			s.Close()
			m.Free()
			if d := torch.Live() - base; d != 0 {
				t.Errorf("%d tensors leaked", d)
			}
		})
	}
}

// TestTextIDsErrors checks that a slice that is not rows of equal length is an error
// naming the ids and rows (not a panic), and that a row without an end token keeps the
// position the pooling rule reads.
func TestTextIDsErrors(t *testing.T) {
	m := speedModel(t, 49407, 0)
	defer m.Free()
	for _, c := range []struct {
		ids  []int64
		rows int
		want string
	}{{make([]int64, 7), 2, "7 ids do not make 2 rows"}, {nil, 0, "0 ids do not make 0 rows"}, {make([]int64, 4), -1, "4 ids do not make -1 rows"}} {
		cut, l, err := m.TextIDs(c.ids, c.rows)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%d ids in %d rows: ids %v, length %d, error %v; want an error containing %q", len(c.ids), c.rows, cut, l, err, c.want)
		}
	}
	// No end id: the first-eos rule pools at 0, argmax at the largest id.
	row := []int64{49406, 5, 9, 3, 0, 0}
	if p := m.TextModel.PoolPosition(row); p != 0 {
		t.Errorf("first-eos rule without an end id: position %d, want 0 (as transformers)", p)
	}
	m.TextModel.EOSTokenID = 2
	if p := m.TextModel.PoolPosition([]int64{5, 9, 3, 9, 0}); p != 1 {
		t.Errorf("argmax rule: position %d, want 1 (the first maximum)", p)
	}
}

// TestGradCheckpointingExact checks that checkpointed encoders give the plain step's
// loss and gradients (1e-6 relative in fp32; bf16 autocast compared with plain bf16
// autocast at the same bound, since the recomputation repeats the same operations), with
// attention dropout 0.1 in training mode (the replay restores the generator, so the
// draws agree and later draws are unchanged), for the whole model and through a
// second, discarded forward whose output gets no gradient. One intra-op thread, as in
// the parity test: the comparison is then of the same operations in the same order.
func TestGradCheckpointingExact(t *testing.T) {
	threads := torch.Threads()
	torch.SetThreads(1)
	defer torch.SetThreads(threads)
	for _, bf16 := range []bool{false, true} {
		name := "fp32"
		if bf16 {
			name = "bf16 autocast"
		}
		t.Run(name, func(t *testing.T) {
			base := torch.Live()
			m := speedModel(t, 49407, 0.1)
			defer m.Free()
			r := rand.New(rand.NewPCG(3, 4))
			ids, _ := captions(r, 4, 77, 20, 0)
			s := torch.NewScope()
			defer s.Close()
			x := textIDs(t, m, ids, 4)
			cfg := m.Config.Vision
			pixels := torch.Randn([]int64{4, 3, cfg.ImageSize, cfg.ImageSize}, torch.Float32, torch.CPU)
			step := func(sp Speed) ([]float64, map[string][]float64, []float64) {
				m.SetSpeed(sp)
				torch.ManualSeed(11)
				out, grads := gradsOf(t, m, func() (loss, lossAgain *torch.Tensor) {
					f := func() {
						m.EncodeText(x) // a forward whose output is dropped
						loss = ContrastiveLoss(m.Forward(pixels, x))
					}
					if bf16 {
						torch.Autocast(torch.CPU, torch.BFloat16, f)
					} else {
						f()
					}
					return loss, loss
				})
				return out, grads, torch.Rand([]int64{8}, torch.Float32, torch.CPU).Float64s()
			}
			wantLoss, wantGrads, wantNext := step(Speed{})
			gotLoss, gotGrads, gotNext := step(Speed{GradCheckpointing: true})
			if e := testutil.RelErr(gotLoss, wantLoss); e > 1e-6 || e != e {
				t.Errorf("loss %v, plain %v", gotLoss, wantLoss)
			}
			sameGrads(t, "checkpointed", gotGrads, wantGrads, 1e-6)
			if testutil.RelErr(gotNext, wantNext) != 0 {
				t.Error("the generator's draws after the step differ from the plain step's")
			}
			for _, e := range []*Encoder{m.VisionModel.Encoder, m.TextModel.Encoder} {
				if len(e.tapes) != 0 {
					t.Errorf("%d tapes left after FinishBackward", len(e.tapes))
				}
			}
			s.Close()
			m.Free()
			if d := torch.Live() - base; d != 0 {
				t.Errorf("%d tensors leaked", d)
			}
		})
	}
}

// TestGradCheckpointingLockedTower checks that a tower with no trainable parameter and
// an input without gradient (a locked tower) runs without a tape, while the trainable
// tower is checkpointed and still gets the plain gradients.
func TestGradCheckpointingLockedTower(t *testing.T) {
	m := speedModel(t, 49407, 0)
	defer m.Free()
	for _, p := range m.VisionModel.namedParameters("vision_model") {
		p.T.SetRequiresGrad(false)
	}
	s := torch.NewScope()
	defer s.Close()
	r := rand.New(rand.NewPCG(5, 6))
	ids, _ := captions(r, 3, 77, 20, 0)
	x := textIDs(t, m, ids, 3)
	cfg := m.Config.Vision
	pixels := torch.Randn([]int64{3, 3, cfg.ImageSize, cfg.ImageSize}, torch.Float32, torch.CPU)
	step := func(sp Speed) map[string][]float64 {
		m.SetSpeed(sp)
		_, grads := gradsOf(t, m, func() (*torch.Tensor, *torch.Tensor) {
			loss := ContrastiveLoss(m.Forward(pixels, x))
			if sp.GradCheckpointing && (len(m.VisionModel.Encoder.tapes) != 0 || len(m.TextModel.Encoder.tapes) != 1) {
				t.Errorf("tapes: vision %d (want 0, locked), text %d (want 1)", len(m.VisionModel.Encoder.tapes), len(m.TextModel.Encoder.tapes))
			}
			return loss, loss
		})
		return grads
	}
	want := step(Speed{})
	sameGrads(t, "locked vision tower", step(Speed{GradCheckpointing: true}), want, 1e-6)
}

// textIDs is the ids tensor [rows, L] of m.TextIDs, made in the current scope.
func textIDs(t *testing.T, m *Model, ids []int64, rows int) *torch.Tensor {
	t.Helper()
	cut, l, err := m.TextIDs(ids, rows)
	if err != nil {
		t.Fatal(err)
	}
	return torch.FromInt64(cut, int64(rows), int64(l)) // [rows, L]
}

// TestGradCheckpointingStateError: a generator state that cannot be restored in the
// replay (here a tape's state replaced by 3 bytes) is libtorch's own *torch.Error of
// set_rng_state, recovered by the caller's torch.Try, not a wrapper made up on the way;
// the generator is left as it was and the model steps again afterwards.
func TestGradCheckpointingStateError(t *testing.T) {
	m := speedModel(t, 49407, 0)
	defer m.Free()
	m.SetSpeed(Speed{GradCheckpointing: true})
	s := torch.NewScope()
	defer s.Close()
	r := rand.New(rand.NewPCG(7, 8))
	ids, _ := captions(r, 2, 77, 20, 0)
	x := textIDs(t, m, ids, 2)
	before := torch.RNGState(torch.CPU).Int64s()
	err := torch.Try(func() {
		loss := m.EncodeText(x).Sum(false) // []
		tapes := m.TextModel.Encoder.tapes
		if len(tapes) != 1 {
			t.Fatalf("%d text tapes, want 1", len(tapes))
		}
		tapes[0].rng[len(tapes[0].rng)-1] = torch.FromUint8([]uint8{1, 2, 3}, 3)
		loss.Backward()
		m.FinishBackward()
	})
	var te *torch.Error
	if !errors.As(err, &te) || te.Op != "set_rng_state" {
		t.Fatalf("replay with a bad generator state: %v (%T), want the *torch.Error of set_rng_state", err, err)
	}
	if after := torch.RNGState(torch.CPU).Int64s(); !slices.Equal(after, before) {
		t.Error("the generator state changed across the failed replay")
	}
	for _, p := range m.NamedParameters() {
		p.T.ZeroGrad()
	}
	gradsOf(t, m, func() (*torch.Tensor, *torch.Tensor) {
		e := m.EncodeText(x) // [B, P]
		return e, e.Sum(false)
	})
}
