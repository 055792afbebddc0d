package cudatest

import (
	"math/rand/v2"
	"testing"

	"goclip/clip"
	"goclip/clip/tokenizer"
	"goclip/dataset"
	"goclip/lora"
	"goclip/torch"
	"goclip/train"
)

// loraRun takes 50 LoRA steps (r 8 on q/k/v of the tiny preset, the training loop's own
// step) on one fixed random batch on d and returns the first and last losses.
func loraRun(t *testing.T, d torch.Device, prec clip.Precision) (first, last float64) {
	t.Helper()
	torch.ManualSeed(1)
	cfg, err := clip.Preset("tiny")
	if err != nil {
		t.Fatal(err)
	}
	m, err := clip.New(cfg, d)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Free()
	a, err := lora.Inject(m, lora.Config{R: 8, Alpha: 16, Targets: []string{"q_proj", "k_proj", "v_proj"}})
	if err != nil {
		t.Fatal(err)
	}
	st, err := train.NewStepper(m, a.Trainable(), train.Options{LR: 2e-3, ClipGrad: 1, Precision: prec})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Free()

	const b, ctx = 16, 16
	s := cfg.Vision.ImageSize
	rng := rand.New(rand.NewPCG(1, 2))
	ids := make([]int64, b*ctx) // [B, T]: random tokens, the end token at a random place
	for i := 0; i < b; i++ {
		end := 2 + rng.IntN(ctx-2)
		ids[i*ctx] = 49406
		for j := 1; j < end; j++ {
			ids[i*ctx+j] = int64(rng.IntN(49000))
		}
		ids[i*ctx+end] = int64(cfg.Text.EOSTokenID)
	}
	scope := torch.NewScope()
	defer scope.Close()
	pixels := torch.Randn([]int64{b, cfg.Vision.NumChannels, s, s}, torch.Float32, d) // [B, C, S, S]
	tokens := torch.FromInt64(ids, b, ctx).ToDevice(d, false)                         // [B, T]
	for step := 0; step < 50; step++ {
		loss, err := st.Step(pixels, tokens)
		if err != nil {
			t.Fatalf("step %d: %v", step, err)
		}
		if step == 0 {
			first = loss
		}
		last = loss
	}
	return first, last
}

// TestLoRARunLossFalls: 50 LoRA steps on a fixed batch lower the loss, on the CPU in fp32
// (the reference, also run in CI) and on CUDA in bf16 autocast.
func TestLoRARunLossFalls(t *testing.T) {
	t.Run("cpu-fp32", func(t *testing.T) {
		if testing.Short() {
			t.Skip("50 training steps")
		}
		first, last := loraRun(t, torch.CPU, clip.FP32)
		t.Logf("cpu fp32: loss %.4f -> %.4f", first, last)
		if !(last < 0.5*first) {
			t.Fatalf("loss %.4f -> %.4f after 50 LoRA steps: did not halve", first, last)
		}
	})
	t.Run("cuda-bf16", func(t *testing.T) {
		needCUDA(t)
		first, last := loraRun(t, dev, clip.BF16)
		t.Logf("cuda bf16: loss %.4f -> %.4f", first, last)
		if !(last < 0.5*first) {
			t.Fatalf("loss %.4f -> %.4f after 50 LoRA steps: did not halve", first, last)
		}
	})
}

// tinySynthRun is what the short CUDA training runs train on: 400 synthetic 96 px images,
// a BPE tokenizer of 600 fitted to their captions, and the tiny preset sized to it.
func tinySynthRun(t *testing.T) (*dataset.Dataset, *tokenizer.Tokenizer, clip.Config) {
	t.Helper()
	dir := t.TempDir()
	if _, err := dataset.Synthesize(dir, dataset.SynthOptions{Images: 400, Size: 96, Seed: 3}); err != nil {
		t.Fatal(err)
	}
	ds, err := dataset.Open(dir, dataset.Options{})
	if err != nil {
		t.Fatal(err)
	}
	tok, err := train.TrainTokenizer(ds.Split(dataset.Train), 600, nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := clip.Preset("tiny")
	if err != nil {
		t.Fatal(err)
	}
	return ds, tok, train.WithTokenizer(cfg, tok)
}
