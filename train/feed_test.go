package train

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"goclip/dataset"
	"goclip/torch"
)

// The device input path normalises uint8 crops by table lookup: every value must be
// the float32 the host's NormalizeInto writes, bit for bit, for all 256 levels of each
// channel.
func TestFeedNormalizeBitwise(t *testing.T) {
	f := synthData(t, 40, "base")
	m := newModel(t, tinyConfig(t, f.tok), 1)
	live := torch.Live()
	fd, err := newFeed(nil, m)
	if err != nil {
		t.Fatal(err)
	}
	const n, s = 3, 16
	pix := make([]uint8, n*s*s*3)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range pix {
		pix[i] = uint8(rng.IntN(256))
	}
	for v := range 256 { // every level in every channel
		pix[3*v], pix[3*v+1], pix[3*v+2] = uint8(v), uint8(v), uint8(v)
	}
	want := make([]float32, n*3*s*s)
	for k := range n {
		dataset.NormalizeInto(want[k*3*s*s:(k+1)*3*s*s], pix[k*s*s*3:(k+1)*s*s*3])
	}
	var got []float32
	var shape []int64
	torch.WithScope(func() {
		fd.cur = &feedBatch{pix: torch.FromUint8(pix, n, s, s, 3), ids: torch.FromInt64([]int64{1, 2, 3}, n, 1)}
		in := fd.inputs()
		got, shape = in.pixels.Float32s(), in.pixels.Shape()
	})
	fd.cur = nil
	fd.lut.Free()
	fd.offs.Free()
	if !slices.Equal(shape, []int64{n, 3, s, s}) {
		t.Fatalf("pixels shape %v, want [%d 3 %d %d]", shape, n, s, s)
	}
	for i := range want {
		if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
			t.Fatalf("value %d: device %v, host %v", i, got[i], want[i])
		}
	}
	if d := torch.Live() - live; d != 0 {
		t.Fatalf("%d tensors leaked", d)
	}
}

// The default input path (uint8 batches, made one step ahead, normalised in the step)
// must give the host path's losses bit for bit (fp32, CPU): over two epochs (the
// read-ahead meets the epoch's end and the next StartAt), with augmentation and with
// gradient accumulation, and leave no tensor behind.
func TestDeviceInputLossesEqual(t *testing.T) {
	f := synthData(t, 48, "base")
	cfg := tinyConfig(t, f.tok)
	for _, c := range []struct {
		name  string
		accum int
		aug   dataset.AugmentOptions
	}{
		{"plain", 1, dataset.AugmentOptions{}},
		{"augment+accum", 2, dataset.DefaultAugment()},
	} {
		t.Run(c.name, func(t *testing.T) {
			run := func(host bool) []float64 {
				var losses []float64
				opts := Options{Out: t.TempDir(), Epochs: 2, BatchSize: 8, GradAccum: c.accum, LR: 1e-3, Warmup: 2,
					LogEvery: 3, WeightDecay: 0.1, ClipGrad: 1, Augment: c.aug, HostInput: host,
					AfterStep: func(_ int, loss float64) { losses = append(losses, loss) }}
				m := newModel(t, cfg, 3)
				live := torch.Live()
				if _, err := runJob(t, f, m, opts); err != nil {
					t.Fatal(err)
				}
				if d := torch.Live() - live; d != 0 {
					t.Fatalf("HostInput %v: %d tensors leaked", host, d)
				}
				return losses
			}
			host, dev := run(true), run(false)
			t.Logf("%d steps; host path %v; device path %v", len(host), host, dev)
			if len(host) < 8 || len(dev) != len(host) {
				t.Fatalf("steps: host path %d, device path %d", len(host), len(dev))
			}
			for i := range host {
				if math.Float64bits(host[i]) != math.Float64bits(dev[i]) {
					t.Fatalf("step %d: loss %v on the device path, %v on the host path", i+1, dev[i], host[i])
				}
			}
		})
	}
}
