package cudatest

import (
	"context"
	"math"
	"path/filepath"
	"testing"
	"time"

	"goclip/clip"
	"goclip/dataset"
	"goclip/torch"
	"goclip/train"
)

// TestCopyAsync: copies on the copy stream arrive intact once waited on, and their
// memory is not handed to a later copy while the compute stream still reads it: 40
// rounds queue copy, wait, a slow-ish product and the free of the inputs without any
// host synchronisation, and only then read every result.
func TestCopyAsync(t *testing.T) {
	needCUDA(t)
	checkLeaks(t)
	s := torch.NewScope()
	defer s.Close()
	const rounds, n = 40, 1 << 16
	var sums []*torch.Tensor
	var want []float64
	for r := range rounds {
		u8 := make([]uint8, n)
		ids := make([]int64, 64)
		var sum float64
		for i := range u8 {
			u8[i] = uint8((i*7 + r*13) % 251)
			sum += float64(u8[i])
		}
		for i := range ids {
			ids[i] = int64(r*1000 + i)
			sum += float64(ids[i])
		}
		outs, c := torch.CopyAsync(dev, torch.PinnedUint8(u8, n), torch.FromInt64(ids, 64).PinMemory())
		c.Wait(outs...)
		if outs[0].Device() != dev || outs[0].DType() != torch.Uint8 || outs[1].DType() != torch.Int64 {
			t.Fatalf("round %d: copies are %v and %v", r, outs[0], outs[1])
		}
		x := outs[0].To(torch.Float32).View(256, 256)
		x = x.Matmul(x).MulScalar(0) // keeps the compute stream busy after the copy
		sums = append(sums, outs[0].To(torch.Float64).Sum(false).Add(outs[1].To(torch.Float64).Sum(false)).Add(x.Sum(false).To(torch.Float64)))
		outs[0].Free() // back to the allocator while the kernels above may still run
		outs[1].Free()
		want = append(want, sum)
	}
	for r, v := range sums {
		if got := v.Item(); got != want[r] {
			t.Fatalf("round %d: sum %v, want %v", r, got, want[r])
		}
	}
	if err := torch.Try(func() { torch.CopyAsync(torch.CPU, torch.FromUint8([]uint8{1}, 1)) }); err == nil {
		t.Fatal("CopyAsync to the CPU did not fail")
	}
}

// TestDeviceInputCUDA: a short fp32 training run on CUDA gives the same losses with the
// device input path (uint8 batches copied ahead on the copy stream, normalised on the
// GPU) as with the host path, and logs both runs' step rates. The first step's loss is
// equal to 1e-6 relative (the same inputs and weights); later ones to 1e-4 (CUDA's
// atomic-add backward kernels are not bitwise reproducible run to run).
func TestDeviceInputCUDA(t *testing.T) {
	needCUDA(t)
	ds, tok, cfg := tinySynthRun(t)
	run := func(host bool) ([]float64, time.Duration) {
		torch.ManualSeed(5)
		m, err := clip.New(cfg, dev)
		if err != nil {
			t.Fatal(err)
		}
		defer m.Free()
		var losses []float64
		var began time.Time
		opts := train.Options{Out: filepath.Join(t.TempDir(), "run"), MaxSteps: 12, BatchSize: 32, LR: 1e-3, Warmup: 2,
			LogEvery: 4, Workers: 4, Precision: clip.FP32, HostInput: host, SkipExport: true,
			AfterStep: func(step int, loss float64) {
				if step == 2 { // the first two steps warm up the allocator and cuBLAS
					began = time.Now()
				}
				losses = append(losses, loss)
			}}
		job := train.Job{Model: m, Tokenizer: tok, Train: ds.Split(dataset.Train)}
		if _, err := train.Run(context.Background(), job, opts); err != nil {
			t.Fatal(err)
		}
		return losses, time.Since(began) / 10
	}
	host, hostStep := run(true)
	devIn, devStep := run(false)
	t.Logf("step time (data loading included), host path %v, device path %v", hostStep, devStep)
	if len(host) != 12 || len(devIn) != 12 {
		t.Fatalf("steps: host path %d, device path %d", len(host), len(devIn))
	}
	for i := range host {
		tol := 1e-4
		if i == 0 {
			tol = 1e-6
		}
		if d := math.Abs(devIn[i]-host[i]) / math.Abs(host[i]); !(d <= tol) {
			t.Fatalf("step %d: loss %v on the device path, %v on the host path (relative %.2g > %g)", i+1, devIn[i], host[i], d, tol)
		}
	}
}
