package train

import (
	"testing"
	"time"
)

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
