package train

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"goclip/dataset"
	"goclip/lora"
)

// TestLossFalls: six epochs of the tiny model on synthetic data lower the training loss
// by more than 0.3.
func TestLossFalls(t *testing.T) {
	f := synthData(t, 120, "base")
	m := newModel(t, tinyConfig(t, f.tok), 1)
	start := time.Now()
	res, err := runJob(t, f, m, Options{Out: t.TempDir(), Epochs: 6, BatchSize: 16, LR: 1e-3, Warmup: 5, LogEvery: 3})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%d steps in %v; train losses %.3f; val %v", res.Steps, time.Since(start), res.TrainLosses, res.Val)
	first, last := res.TrainLosses[0], res.TrainLosses[len(res.TrainLosses)-1]
	if !(last < first-0.3) {
		t.Fatalf("training loss did not fall: first %.4f, last %.4f", first, last)
	}
}

// TestLoRAImprovesShiftedRecall trains a small base model on the base domain, then
// LoRA-fine-tunes it on the shifted domain: recall on the shifted test split must rise.
func TestLoRAImprovesShiftedRecall(t *testing.T) {
	base := synthData(t, 120, "base")
	shifted := synthSplit(t, 200, "shifted", 8, 32)
	cfg := tinyConfig(t, base.tok)
	m := newModel(t, cfg, 8)
	if _, err := runJob(t, base, m, Options{Out: t.TempDir(), Epochs: 3, BatchSize: 16, LR: 1e-3, Warmup: 3}); err != nil {
		t.Fatal(err)
	}
	test := shifted.ds.Split(dataset.Test)
	before, err := Evaluate(context.Background(), m, base.tok, test, EvalOptions{Workers: 2})
	if err != nil {
		t.Fatal(err)
	}
	a, err := lora.Inject(m, lora.Config{R: 8, Alpha: 16, Targets: []string{"q_proj", "k_proj", "v_proj"}})
	if err != nil {
		t.Fatal(err)
	}
	total, trainable, err := a.Counts()
	if err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	job := Job{Model: m, Tokenizer: base.tok, Train: shifted.ds.Split(dataset.Train), Val: shifted.ds.Split(dataset.Val),
		Test: test, LoRA: &LoRA{Adapter: a, BaseModel: "base"}}
	res, err := Run(context.Background(), job, Options{Out: out, Epochs: 5, BatchSize: 16, LR: 5e-3, Warmup: 3, Workers: 2})
	if err != nil {
		t.Fatal(err)
	}
	after := *res.Test
	score := func(r EvalResult) float64 {
		return r.ImageToText.R1 + r.ImageToText.R5 + r.TextToImage.R1 + r.TextToImage.R5
	}
	t.Logf("%s", lora.FormatCounts(total, trainable))
	t.Logf("shifted test before: %s", before)
	t.Logf("shifted test after:  %s", after)
	if !(score(after) > score(before)) || !(after.Loss < before.Loss) {
		t.Fatalf("LoRA fine-tune did not improve the shifted domain: before %s, after %s", before, after)
	}
	for _, name := range []string{"adapter/adapter_config.json", "adapter/adapter_model.safetensors", "model.pt", "eval.json"} {
		if _, err := os.Stat(filepath.Join(out, name)); err != nil {
			t.Errorf("run folder: %v", err)
		}
	}
}
