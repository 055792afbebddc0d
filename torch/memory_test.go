package torch

import (
	"os"
	"strconv"
	"strings"
	"testing"
)

func rssBytes(t *testing.T) int64 {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		t.Skip("no /proc/self/statm: RSS cannot be measured here")
	}
	f := strings.Fields(string(b))
	pages, _ := strconv.ParseInt(f[1], 10, 64)
	return pages * int64(os.Getpagesize())
}

func TestScopeFreesAndKeeps(t *testing.T) {
	base := Live()
	outer := NewScope()
	a := Ones([]int64{2}, Float32, CPU)
	var kept *Tensor
	func() {
		inner := NewScope()
		defer inner.Close()
		b := a.AddScalar(1)
		kept = inner.Keep(b.MulScalar(2))
		_ = b.Exp()
	}()
	if kept.Freed() || !a.AddScalar(0).Equal(a) {
		t.Fatal("kept tensor was freed with the inner scope")
	}
	if got := kept.Float32s()[0]; got != 4 {
		t.Fatalf("kept value %v", got)
	}
	outer.Close()
	outer.Close() // idempotent
	if !kept.Freed() || !a.Freed() {
		t.Fatal("outer scope did not free its tensors")
	}
	if Live() != base {
		t.Fatalf("live tensors %d, baseline %d", Live(), base)
	}
	own := Ones([]int64{1}, Float32, CPU) // no scope: the caller owns it
	if Live() != base+1 {
		t.Fatal("live counter did not count a new tensor")
	}
	own.Free()
	own.Free()
	if Live() != base {
		t.Fatal("double Free changed the live counter")
	}
}

// 10,000 scoped training steps of a small MLP: live tensors return to the baseline and
// the resident set grows by less than 20 MB.
func TestScopedTrainingStepsDoNotLeak(t *testing.T) {
	steps := 10000
	if testing.Short() {
		steps = 1000
	}
	ManualSeed(3)
	w1 := Randn([]int64{32, 16}, Float32, CPU).MulScalar(0.1).Owned().SetRequiresGrad(true)
	w2 := Randn([]int64{4, 32}, Float32, CPU).MulScalar(0.1).Owned().SetRequiresGrad(true)
	x := Randn([]int64{8, 16}, Float32, CPU).Owned()
	y := RandInt(0, 4, []int64{8}, CPU).Owned()
	opt := NewAdamW([][]*Tensor{{w1, w2}}, []float64{0.01}, 0.9, 0.999, 1e-8)
	defer func() { opt.Free(); w1.Free(); w2.Free(); x.Free(); y.Free() }()
	step := func() float64 {
		s := NewScope()
		defer s.Close()
		loss := CrossEntropy(Linear(Linear(x, w1, nil).Gelu(), w2, nil), y)
		loss.Backward()
		ClipGradNorm(opt.Params(), 1.0)
		if err := opt.Update(1e-2); err != nil {
			t.Fatal(err)
		}
		opt.ZeroGrad()
		return loss.Item()
	}
	first := step()
	for i := 0; i < 200; i++ { // warm up allocator caches before the baseline
		step()
	}
	base, rss0 := Live(), rssBytes(t)
	var last float64
	for i := 0; i < steps; i++ {
		last = step()
	}
	if Live() != base {
		t.Fatalf("live tensors %d after %d steps, baseline %d", Live(), steps, base)
	}
	if grow := rssBytes(t) - rss0; grow > 20<<20 {
		t.Fatalf("RSS grew by %d MB over %d steps", grow>>20, steps)
	}
	if !(last < first) {
		t.Fatalf("loss did not fall: %v -> %v", first, last)
	}
}
