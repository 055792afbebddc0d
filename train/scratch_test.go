package train

import (
	"os"
	"reflect"
	"strings"
	"testing"

	"goclip/clip"
	"goclip/dataset"
	"goclip/torch"
)

// TestNewScratchModel: the architecture takes the tokenizer's vocabulary and special
// ids and the context length asked for, and the seed alone decides the weights.
func TestNewScratchModel(t *testing.T) {
	f := synthData(t, 24, "base")
	cfg := tinyConfig(t, f.tok)
	cfg.Text.VocabSize, cfg.Text.EOSTokenID = 7, 3 // overwritten by the tokenizer's
	build := func(seed uint64, ctx int) *clip.Model {
		m, err := NewScratchModel(cfg, f.tok, ctx, seed, torch.CPU)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(m.Free)
		return m
	}
	m := build(5, 16)
	tc := m.Config.Text
	if tc.VocabSize != int64(f.tok.VocabSize()) || tc.EOSTokenID != int64(f.tok.EndID()) || tc.BOSTokenID != int64(f.tok.StartID()) || tc.MaxPositionEmbeddings != 16 {
		t.Fatalf("text config %+v, want vocabulary %d, start %d, end %d, 16 positions", tc, f.tok.VocabSize(), f.tok.StartID(), f.tok.EndID())
	}
	if got := build(5, 0).Config.Text.MaxPositionEmbeddings; got != cfg.Text.MaxPositionEmbeddings {
		t.Fatalf("context length 0 gave %d positions, want the architecture's %d", got, cfg.Text.MaxPositionEmbeddings)
	}
	if a, b := snapshot(m), snapshot(build(5, 16)); !reflect.DeepEqual(a, b) {
		t.Fatal("the same seed gave different weights")
	}
	if maxDiff(snapshot(m), snapshot(build(6, 16))) == 0 {
		t.Fatal("another seed gave the same weights")
	}
	bad := cfg
	bad.Text.NumAttentionHeads = 3 // does not divide the width 64
	if _, err := NewScratchModel(bad, f.tok, 0, 1, torch.CPU); err == nil {
		t.Fatal("an invalid architecture was accepted")
	}
}

// TestScratchTokenizer: a new run trains a vocabulary of the size asked on the training
// captions and saves it in RUN/tokenizer/ (on the main rank only); a resume loads that
// one, and a resume without it, or shards without --tokenizer, are errors naming the
// flag.
func TestScratchTokenizer(t *testing.T) {
	f := synthData(t, 24, "base")
	run := t.TempDir()
	var log strings.Builder
	v := ScratchVocabulary{Run: run, Data: f.ds, Size: 600, Log: &log}
	if _, err := ScratchTokenizer(ScratchVocabulary{Run: run, Resume: true}); err == nil || !strings.Contains(err.Error(), "--resume") {
		t.Fatalf("resuming without RUN/tokenizer/ gave %v", err)
	}
	if _, err := ScratchTokenizer(ScratchVocabulary{Run: run, Streamed: true}); err == nil || !strings.Contains(err.Error(), "--tokenizer") {
		t.Fatalf("shards without a vocabulary gave %v", err)
	}
	tok, err := ScratchTokenizer(v) // not saved
	if err != nil {
		t.Fatal(err)
	}
	if tok.VocabSize() > 600 || !strings.Contains(log.String(), "training a 600-token BPE vocabulary") {
		t.Fatalf("%d tokens; log %q", tok.VocabSize(), log.String())
	}
	if _, err := os.Stat(RunDir(run).Tokenizer()); err == nil {
		t.Fatal("RUN/tokenizer/ written without Save")
	}
	v.Save = true
	if tok, err = ScratchTokenizer(v); err != nil {
		t.Fatal(err)
	}
	back, err := ScratchTokenizer(ScratchVocabulary{Run: run, Resume: true})
	if err != nil {
		t.Fatal(err)
	}
	caption := f.ds.Split(dataset.Train)[0].Captions[0]
	a, _ := tok.Batch([]string{caption}, 24)
	b, _ := back.Batch([]string{caption}, 24)
	if back.VocabSize() != tok.VocabSize() || !reflect.DeepEqual(a, b) {
		t.Fatalf("the resumed tokenizer differs: %d tokens (%v), saved %d (%v)", back.VocabSize(), b, tok.VocabSize(), a)
	}
	loaded, err := ScratchTokenizer(ScratchVocabulary{Run: t.TempDir(), Path: RunDir(run).Tokenizer()})
	if err != nil || loaded.VocabSize() != tok.VocabSize() {
		t.Fatalf("--tokenizer %s: %v", RunDir(run).Tokenizer(), err)
	}
}
