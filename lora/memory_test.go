package lora

import (
	"errors"
	"testing"

	"goclip/torch"
)

// A torch error while merging (here a LoRA A of the wrong width, so that W + B@A cannot
// be added) comes back as an error from MergedStateDict and from Merge, with every
// tensor made on the way freed: torch.Live() returns to its baseline.
func TestMergeFaultFreesTensors(t *testing.T) {
	m := tinyModel(t, 5)
	defer m.Free()
	a, err := Inject(m, Config{R: 4, Alpha: 8, Targets: qkv})
	if err != nil {
		t.Fatal(err)
	}
	mods := a.Modules()
	l := mods[len(mods)-1].Layer // the last: the copies of the others are made first
	good := l.A
	bad := torch.Zeros([]int64{good.Size(0), good.Size(1) + 1}, torch.Float32, torch.CPU).Owned() // [r, in+1]
	defer bad.Free()
	base := torch.Live()
	l.A = bad
	var te *torch.Error
	if _, _, err := a.MergedStateDict(); !errors.As(err, &te) {
		t.Fatalf("MergedStateDict with a bad lora_A returned %v, want a *torch.Error", err)
	}
	if live := torch.Live(); live != base {
		t.Fatalf("torch.Live() is %d after the failed MergedStateDict, %d before", live, base)
	}
	if err := a.Merge(); !errors.As(err, &te) {
		t.Fatalf("Merge with a bad lora_A returned %v, want a *torch.Error", err)
	}
	if err := a.Unmerge(); err != nil { // the layers merged before the fault
		t.Fatal(err)
	}
	if live := torch.Live(); live != base {
		t.Fatalf("torch.Live() is %d after the failed Merge, %d before", live, base)
	}
	l.A = good
	sd, release, err := a.MergedStateDict()
	if err != nil || len(sd) == 0 {
		t.Fatalf("MergedStateDict after the fault: %v (%d tensors)", err, len(sd))
	}
	release()
	if live := torch.Live(); live != base {
		t.Fatalf("torch.Live() is %d after MergedStateDict and release, %d before", live, base)
	}
}
