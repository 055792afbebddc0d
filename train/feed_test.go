package train

import (
	"context"
	"io"
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"goclip/clip"
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

// The device input path (uint8 batches, made one step ahead, normalised in the step;
// forced on the CPU with feedOnCPU) must give the host path's losses bit for bit (fp32):
// over two epochs (the read-ahead meets the epoch's end and the next StartAt), with
// augmentation and with gradient accumulation, and leave no tensor behind.
func TestDeviceInputLossesEqual(t *testing.T) {
	feedOnCPU = true
	defer func() { feedOnCPU = false }()
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

// The step reads the next batch ahead once its forward is queued: after each step the
// feed holds the following batch with its tensors made, the last step of an epoch
// leaves the loader's io.EOF for Next, and StartAt and Close free everything.
func TestFeedReadsAheadInStep(t *testing.T) {
	f := synthData(t, 40, "base")
	cfg := tinyConfig(t, f.tok)
	m := newModel(t, cfg, 1)
	live := torch.Live()
	tr, err := newTrainer(Job{Model: m}, Options{LR: 1e-3})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.free()
	ctxLen := int(cfg.Text.MaxPositionEmbeddings)
	items := f.ds.Split(dataset.Train)[:24]
	loader := dataset.NewLoader(items, dataset.LoaderOptions{Size: int(cfg.Vision.ImageSize), BatchSize: 8, Workers: 2, Uint8: true,
		Tokenize: func(c string) []int64 { ids, _ := f.tok.Batch([]string{c}, ctxLen); return ids }})
	fd, err := newFeed(loader, m)
	if err != nil {
		t.Fatal(err)
	}
	tr.feed = fd
	ctx := context.Background()
	for epoch := range 2 {
		if err := fd.StartAt(dataset.Position{Epoch: epoch}); err != nil {
			t.Fatal(err)
		}
		for i := range 3 {
			b, err := fd.Next(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if b.Index != i || fd.ahead != nil {
				t.Fatalf("epoch %d: Next gave batch %d (want %d) with a batch already ahead %v", epoch, b.Index, i, fd.ahead != nil)
			}
			stats, err := tr.stepBatch(b, 1e-3)
			if err != nil {
				t.Fatal(err)
			}
			stats.Free()
			switch {
			case i < 2 && (fd.ahead == nil || fd.ahead.b.Index != i+1 || fd.ahead.pix.Freed()):
				t.Fatalf("epoch %d: after step %d the feed holds no batch %d ahead", epoch, i, i+1)
			case i == 2 && (fd.ahead != nil || fd.aheadErr != io.EOF):
				t.Fatalf("epoch %d: after the last step the feed holds %v, error %v; want io.EOF", epoch, fd.ahead != nil, fd.aheadErr)
			}
			b.Release()
		}
		if epoch == 0 {
			if _, err := fd.Next(ctx); err != io.EOF {
				t.Fatalf("after the epoch's last batch Next gave %v, want io.EOF", err)
			}
		}
	}
	if b, err := fd.Next(ctx); err != io.EOF { // the second epoch's io.EOF
		t.Fatalf("Next gave %v, %v; want io.EOF", b, err)
	}
	if err := fd.StartAt(dataset.Position{Epoch: 2}); err != nil {
		t.Fatal(err)
	}
	b, err := fd.Next(ctx)
	if err != nil {
		t.Fatal(err)
	}
	stats, err := tr.stepBatch(b, 1e-3) // leaves a batch ahead for Close to free
	if err != nil {
		t.Fatal(err)
	}
	stats.Free()
	if err := fd.Close(); err != nil {
		t.Fatal(err)
	}
	tr.free()
	if d := torch.Live() - live; d != 0 {
		t.Fatalf("%d tensors leaked", d)
	}
}

// BenchmarkNormalize32x224 compares the two normalisations of a batch of 32 crops of 224
// on this machine: the host's NormalizeInto (the loader's workers, one image each) and
// the feed's table lookup on the batch's device (here the CPU).
func BenchmarkNormalize32x224(b *testing.B) {
	const n, s = 32, 224
	pix := make([]uint8, n*s*s*3)
	for i := range pix {
		pix[i] = uint8(i * 31)
	}
	b.Run("host", func(b *testing.B) {
		dst := make([]float32, n*3*s*s)
		for b.Loop() {
			for k := range n {
				dataset.NormalizeInto(dst[k*3*s*s:(k+1)*3*s*s], pix[k*s*s*3:(k+1)*s*s*3])
			}
		}
	})
	b.Run("device", func(b *testing.B) {
		cfg, err := clip.Preset("tiny")
		if err != nil {
			b.Fatal(err)
		}
		m, err := clip.New(cfg, torch.CPU)
		if err != nil {
			b.Fatal(err)
		}
		defer m.Free()
		fd, err := newFeed(nil, m)
		if err != nil {
			b.Fatal(err)
		}
		defer func() { fd.lut.Free(); fd.offs.Free() }()
		torch.WithScope(func() {
			fd.cur = &feedBatch{pix: torch.FromUint8(pix, n, s, s, 3), ids: torch.FromInt64([]int64{1}, 1, 1)}
			for b.Loop() {
				torch.WithScope(func() { fd.inputs() })
			}
			fd.cur = nil
		})
	})
}
