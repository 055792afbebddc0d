package train

import (
	"bytes"
	"context"
	"encoding/json"
	"math"
	"os"
	"strings"
	"testing"

	"goclip/dataset"
)

// TestEvaluateBase: a fine-tune's baseline is Evaluate's result on the test split,
// written to RUN/eval_base.json and reported; a run folder that holds it already (a
// resumed run) and a job without a test split evaluate nothing.
func TestEvaluateBase(t *testing.T) {
	f := synthSplit(t, 40, "base", 4, 12)
	m := newModel(t, tinyConfig(t, f.tok), 3)
	test := f.ds.Split(dataset.Test)
	job := Job{Model: m, Tokenizer: f.tok, Test: test}
	var log bytes.Buffer
	opts := Options{Out: t.TempDir(), EvalBatchSize: 5, Workers: 2, Log: &log}
	want, err := Evaluate(context.Background(), m, f.tok, test, EvalOptions{BatchSize: 5, Workers: 2})
	if err != nil {
		t.Fatal(err)
	}
	got, err := EvaluateBase(context.Background(), job, opts)
	if err != nil || got == nil {
		t.Fatalf("EvaluateBase: %v, %v", got, err)
	}
	path := RunDir(opts.Out).EvalBase()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var saved EvalResult
	if err := json.Unmarshal(data, &saved); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	for _, r := range []*EvalResult{got, &saved} {
		if math.Abs(r.Loss-want.Loss) > 1e-6 || r.ImageToText != want.ImageToText || r.TextToImage != want.TextToImage || r.Images != want.Images || r.Captions != want.Captions {
			t.Fatalf("base evaluation %+v, want Evaluate's %+v", *r, want)
		}
	}
	if !strings.Contains(log.String(), "evaluating the base model on the test split (12 images)") || !strings.Contains(log.String(), "base: ") {
		t.Errorf("log %q does not report the base evaluation", log.String())
	}
	if err := os.WriteFile(path, []byte(`{"loss": 9}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if again, err := EvaluateBase(context.Background(), job, opts); err != nil || again != nil {
		t.Fatalf("with eval_base.json present: %v, %v; want no evaluation", again, err)
	}
	if kept, _ := os.ReadFile(path); string(kept) != `{"loss": 9}` {
		t.Fatalf("eval_base.json was rewritten: %s", kept)
	}
	none := Options{Out: t.TempDir(), Workers: 2}
	if r, err := EvaluateBase(context.Background(), Job{Model: m, Tokenizer: f.tok}, none); err != nil || r != nil {
		t.Fatalf("without a test split: %v, %v", r, err)
	}
	if _, err := os.Stat(RunDir(none.Out).EvalBase()); err == nil {
		t.Fatal("eval_base.json written without a test split")
	}
}
