package train

import (
	"testing"

	"goclip/clip"
)

// TestGradCheckpointingStep checks gradient checkpointing through the trainer's own
// step (FinishBackward after each backward): two steps with --grad-checkpointing, alone
// and with two micro-batches, leave the parameters where the plain single-batch steps
// do (max difference 1e-5, TestGradAccumEqualsLargerBatch's bound), and the losses agree.
func TestGradCheckpointingStep(t *testing.T) {
	f := synthData(t, 120, "base")
	cfg := microConfig(t, f.tok)
	var ref map[string][]float32
	var refLosses []float64
	for _, c := range []struct {
		accum int
		speed clip.Speed
	}{{1, clip.Speed{}}, {1, clip.Speed{GradCheckpointing: true}}, {2, clip.Speed{GradCheckpointing: true}}} {
		m := newModel(t, cfg, 5)
		m.SetSpeed(c.speed)
		tr, err := newTrainer(Job{Model: m}, Options{GradAccum: c.accum, WeightDecay: 0.1, ClipGrad: 1})
		if err != nil {
			t.Fatal(err)
		}
		in := randomInputs(cfg, 8, 21)
		var losses []float64
		for range 2 {
			res, err := tr.step(in, 1e-3)
			if err != nil || res.outcome != stepDone {
				t.Fatalf("%+v: outcome %v err %v", c, res.outcome, err)
			}
			losses = append(losses, res.loss)
		}
		in.free()
		tr.free()
		got := snapshot(m)
		if ref == nil {
			ref, refLosses = got, losses
			continue
		}
		d := maxDiff(ref, got)
		t.Logf("accum %d %+v: losses %v (plain %v), max parameter difference %.3g", c.accum, c.speed, losses, refLosses, d)
		if d > 1e-5 {
			t.Errorf("accum %d %+v: parameters differ from the plain step by %g", c.accum, c.speed, d)
		}
		for i := range losses {
			if diff := losses[i] - refLosses[i]; diff > 1e-5 || diff < -1e-5 {
				t.Errorf("accum %d %+v: step %d loss %v, plain %v", c.accum, c.speed, i, losses[i], refLosses[i])
			}
		}
	}
}
