package train

import (
	"reflect"
	"testing"

	"goclip/clip"
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
