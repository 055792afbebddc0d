package torch

import (
	"errors"
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
		if err := opt.Update(1e-2, nil); err != nil {
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

// Closing a scope closes the scopes opened inside it that are still open, innermost
// first, frees what they own, and never panics; their own Close is then a no-op.
func TestScopeCloseUnwinds(t *testing.T) {
	base := Live()
	outer := NewScope()
	a := Ones([]int64{2}, Float32, CPU)
	mid := NewScope()
	b := a.AddScalar(1)
	inner := NewScope()
	c := b.MulScalar(3)
	kept := inner.Keep(c.AddScalar(1)) // moves to mid
	owned := c.Exp().Owned()           // the caller's
	if Live() != base+5 {
		t.Fatalf("live %d, want baseline %d + 5", Live(), base)
	}
	mid.Close() // out of order: inner is still open
	if !b.Freed() || !c.Freed() || !kept.Freed() {
		t.Fatal("closing mid did not free the tensors of mid and of inner, opened inside it")
	}
	if a.Freed() || owned.Freed() {
		t.Fatal("closing mid freed a tensor of outer or one taken out with Owned")
	}
	inner.Close() // already closed by mid's unwinding
	mid.Close()
	// outer is current again: a new tensor belongs to it.
	d := a.AddScalar(2)
	if got := d.Float32s()[0]; got != 3 {
		t.Fatalf("value %v", got)
	}
	outer.Close()
	if !a.Freed() || !d.Freed() {
		t.Fatal("outer did not free its tensors")
	}
	if owned.Freed() {
		t.Fatal("outer freed an Owned tensor")
	}
	owned.Free()
	if Live() != base {
		t.Fatalf("live tensors %d, baseline %d", Live(), base)
	}
	var zero Scope
	zero.Close() // never opened: nothing to do
	if e := Ones([]int64{1}, Float32, CPU); e.owner != nil {
		t.Fatal("a tensor made after every scope closed has an owner")
	} else {
		e.Free()
	}
}

// A *Error raised while inner scopes are open (their Close skipped, as a panic skips a
// Close that is not deferred) is recovered by Try after the enclosing deferred Close,
// which frees everything: the process lives and Live returns to its baseline.
func TestScopeUnwindsAfterTorchError(t *testing.T) {
	base := Live()
	err := Try(func() {
		s := NewScope()
		defer s.Close()
		x := Ones([]int64{2, 3}, Float32, CPU)
		for i := 0; i < 3; i++ {
			inner := NewScope()
			y := x.MulScalar(2)
			if i == 2 {
				y.Matmul(x) // [2, 3] @ [2, 3]: libtorch refuses
			}
			inner.Close()
		}
	})
	var te *Error
	if !errors.As(err, &te) || te.Op != "matmul" {
		t.Fatalf("got %v, want the matmul's *torch.Error", err)
	}
	if Live() != base {
		t.Fatalf("live tensors %d after the failure, baseline %d", Live(), base)
	}
	// The scope stack is empty again: a scope opened now has no parent.
	s := NewScope()
	defer s.Close()
	if s.parent != nil {
		t.Fatal("a scope left open by the failure is still on the stack")
	}
}

// WithScope frees what f makes when f returns and when it panics, and the panic goes on.
func TestWithScope(t *testing.T) {
	base := Live()
	var made, owned *Tensor
	WithScope(func() {
		made = Ones([]int64{4}, Float32, CPU).AddScalar(1) // two tensors
		owned = made.MulScalar(2).Owned()
	})
	if !made.Freed() || owned.Freed() || Live() != base+1 {
		t.Fatalf("after WithScope: made freed %v, owned freed %v, live %d (baseline %d)", made.Freed(), owned.Freed(), Live(), base)
	}
	owned.Free()
	err := Try(func() {
		WithScope(func() {
			made = Ones([]int64{4}, Float32, CPU)
			made.Reshape(3) // 4 elements into [3]
		})
	})
	if err == nil || !made.Freed() || Live() != base {
		t.Fatalf("a failing WithScope: error %v, tensor freed %v, live %d (baseline %d)", err, made.Freed(), Live(), base)
	}
}
