package lora

import (
	"math"
	"testing"

	"goclip/clip"
	"goclip/internal/testutil"
	"goclip/torch"
)

// loraStep is the contrastive loss of a batch and the gradients of the adapter's
// trainable tensors (by name), with the model's speed-ups set to sp; the gradients are
// cleared afterwards.
func loraStep(t *testing.T, m *clip.Model, a *Adapter, sp clip.Speed, pixels, ids *torch.Tensor) (float64, map[string][]float64) {
	t.Helper()
	m.SetSpeed(sp)
	s := torch.NewScope()
	defer s.Close()
	var loss float64
	grads := map[string][]float64{}
	if err := torch.Try(func() {
		l := clip.ContrastiveLoss(m.Forward(pixels, ids))
		loss = l.Item()
		l.Backward()
		m.FinishBackward()
		for _, p := range a.Trainable() {
			if g := p.T.Grad(); g != nil {
				grads[p.Name] = g.Float64s()
			}
			p.T.ZeroGrad()
		}
	}); err != nil {
		t.Fatal(err)
	}
	return loss, grads
}

// TestLoRASpeedupsExact checks, on a tiny CLIP with LoRA on q, k and v (B random, so
// the low-rank terms count), that the fused q/k/v product (terms added per slice) and
// gradient checkpointing (frozen embeddings: the replay stops at the first layer) give
// the separate form's loss and LoRA gradients within fp32 rounding (1e-6 of each
// tensor's largest value), and that after Merge (no low-rank term left) the fused
// forward still equals the separate one. State-dict keys keep HF's/peft's separate names.
func TestLoRASpeedupsExact(t *testing.T) {
	base := torch.Live()
	m := tinyModel(t, 5)
	defer m.Free()
	a := inject(t, m, Config{R: 4, Alpha: 8, Targets: qkv})
	randomizeB(a)
	s := torch.NewScope()
	defer s.Close()
	pixels, ids := inputs(m.Config)

	plain := clip.Speed{SeparateQKV: true, FullText: true}
	wantLoss, want := loraStep(t, m, a, plain, pixels, ids)
	if len(want) != len(a.Trainable()) {
		t.Fatalf("%d LoRA gradients of %d", len(want), len(a.Trainable()))
	}
	for name, sp := range map[string]clip.Speed{
		"fused":                  {},
		"checkpointed":           {SeparateQKV: true, GradCheckpointing: true},
		"fused and checkpointed": {GradCheckpointing: true},
	} {
		loss, got := loraStep(t, m, a, sp, pixels, ids)
		if math.Abs(loss-wantLoss) > 1e-6*math.Abs(wantLoss) {
			t.Errorf("%s: loss %v, separate %v", name, loss, wantLoss)
		}
		worst := 0.0
		for k, w := range want {
			g, ok := got[k]
			if !ok {
				t.Errorf("%s: no gradient for %s", name, k)
				continue
			}
			worst = max(worst, testutil.RelErr(g, w))
		}
		t.Logf("%s: loss %v, worst LoRA gradient rel err %.3g", name, loss, worst)
		if worst > 1e-6 || worst != worst {
			t.Errorf("%s: LoRA gradient rel err %.3g > 1e-6", name, worst)
		}
	}

	if err := a.Merge(); err != nil {
		t.Fatal(err)
	}
	m.SetSpeed(plain)
	sep := embed(m, pixels, ids)
	m.SetSpeed(clip.Speed{})
	if e := testutil.RelErr(embed(m, pixels, ids), sep); e > 1e-6 {
		t.Errorf("merged: fused embeddings rel err %.3g > 1e-6", e)
	}
	sd := m.StateDict()
	for _, k := range []string{"vision_model.encoder.layers.0.self_attn.q_proj.weight", "text_model.encoder.layers.1.self_attn.v_proj.bias"} {
		if _, ok := sd[k]; !ok {
			t.Errorf("state dict lacks %s", k)
		}
	}
	s.Close()

	m.Free()
	if d := torch.Live() - base; d != 0 {
		t.Errorf("%d tensors leaked", d)
	}
}
