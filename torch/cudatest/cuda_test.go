// Package cudatest holds goclip's CUDA tests: device round trips, autocast dtypes, fused
// AdamW against the CPU AdamW, SDPA against the spelled-out attention, and CLIP's
// fixture parity on the GPU. Without a CUDA device every test skips with a message;
// scripts/gpu-check.sh runs them on the GPU machine with GOCLIP_REQUIRE_CUDA=1, which
// turns those skips into failures (a shim built without CUDA must not pass there).
//
// Fixtures: GOCLIP_FIXTURES names the folder holding clip-tiny-openai/ (gpu-check.sh
// sets it to the copy it carries); otherwise ../../../shared/fixtures.
package cudatest

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"goclip/clip"
	"goclip/internal/tensortest"
	"goclip/internal/testutil"
	"goclip/torch"
)

func TestMain(m *testing.M) {
	// fp32 parity at 1e-4 needs exact float32 convolutions: cuDNN runs them in TF32 by
	// default (libtorch's allow_tf32 for cuDNN is on). NVIDIA's libraries read this
	// variable; set it before the first CUDA call unless the caller chose otherwise.
	if _, ok := os.LookupEnv("NVIDIA_TF32_OVERRIDE"); !ok {
		os.Setenv("NVIDIA_TF32_OVERRIDE", "0")
	}
	os.Exit(m.Run())
}

var dev = torch.CUDA(0)

// needCUDA skips the test without a usable CUDA device, or fails under
// GOCLIP_REQUIRE_CUDA=1.
func needCUDA(t *testing.T) {
	t.Helper()
	if torch.CUDAAvailable() {
		return
	}
	msg := fmt.Sprintf("no CUDA device (libtorch %s, shim built with CUDA: %v)", torch.Version(), torch.BuiltWithCUDA())
	if os.Getenv("GOCLIP_REQUIRE_CUDA") == "1" {
		t.Fatal(msg + " but GOCLIP_REQUIRE_CUDA=1")
	}
	t.Skip(msg + "; skipping")
}

// checkLeaks fails the test if tensors created after it was called are still alive at
// the end of the test.
func checkLeaks(t *testing.T) {
	base := torch.Live()
	t.Cleanup(func() {
		if d := torch.Live() - base; d != 0 {
			t.Errorf("%d tensors leaked", d)
		}
	})
}

func TestDeviceRoundTrip(t *testing.T) {
	needCUDA(t)
	checkLeaks(t)
	s := torch.NewScope()
	defer s.Close()
	if err := torch.CheckDevice(dev); err != nil {
		t.Fatal(err)
	}
	if err := torch.CheckDevice(torch.CUDA(torch.CUDADeviceCount())); err == nil {
		t.Error("CheckDevice accepted a device index past the last device")
	}
	if !torch.BuiltWithCUDA() {
		t.Error("CUDA is available but the shim was built without GOCLIP_WITH_CUDA: no memory statistics or device properties")
	}
	if p, err := torch.CUDAProperties(dev); err != nil {
		t.Errorf("properties: %v", err)
	} else {
		t.Logf("device %q, sm_%d%d, %d multiprocessors, %.1f GiB", p.Name, p.Major, p.Minor, p.MultiProcessorCount, float64(p.TotalMemory)/(1<<30))
		if p.Name == "" || p.TotalMemory <= 0 || p.MultiProcessorCount <= 0 || p.Major < 3 {
			t.Errorf("implausible properties %+v", p)
		}
	}

	vals := make([]float32, 4*5*6)
	for i := range vals {
		vals[i] = float32(i)*0.25 - 7
	}
	host := torch.FromFloat32(vals, 4, 5, 6)
	for _, tc := range []struct {
		name string
		src  *torch.Tensor
		nb   bool
	}{{"pageable", host, false}, {"pinned non-blocking", host.PinMemory(), true}} {
		g := tc.src.ToDevice(dev, tc.nb)
		if g.Device() != dev {
			t.Fatalf("%s: tensor on %v, want %v", tc.name, g.Device(), dev)
		}
		back := g.MulScalar(2).ToDevice(torch.CPU, tc.nb)
		if err := torch.Synchronize(dev); err != nil {
			t.Fatal(err)
		}
		got := back.Float32s()
		for i, v := range vals {
			if got[i] != 2*v {
				t.Fatalf("%s: element %d is %v, want %v", tc.name, i, got[i], 2*v)
			}
		}
	}
	// dtype conversion on the device, and raw bytes back
	bf := host.ToDeviceDType(dev, torch.BFloat16, false)
	if bf.DType() != torch.BFloat16 || !bf.Device().IsCUDA() {
		t.Fatalf("ToDeviceDType gave %v", bf)
	}
	if e := testutil.RelErr(f64(bf.Float32s()), f64(vals)); e > 1e-2 {
		t.Errorf("bf16 round trip relative error %.3g", e)
	}

	// the CUDA generator's state restores the same draws
	st := torch.RNGState(dev)
	a := torch.Randn([]int64{64}, torch.Float32, dev).Float32s()
	if err := torch.SetRNGState(dev, st); err != nil {
		t.Fatal(err)
	}
	b := torch.Randn([]int64{64}, torch.Float32, dev).Float32s()
	for i := range a {
		if a[i] != b[i] {
			t.Fatalf("draw %d after restoring the CUDA RNG state: %v, first time %v", i, b[i], a[i])
		}
	}
}

func f64(v []float32) []float64 {
	out := make([]float64, len(v))
	for i, x := range v {
		out[i] = float64(x)
	}
	return out
}

func TestMemoryStatistics(t *testing.T) {
	needCUDA(t)
	if !torch.BuiltWithCUDA() {
		t.Fatal("shim built without CUDA support: memory statistics unavailable")
	}
	if err := torch.Synchronize(dev); err != nil {
		t.Fatal(err)
	}
	if err := torch.ResetPeakMemory(dev); err != nil {
		t.Fatal(err)
	}
	before, _, err := torch.CUDAMemory(dev)
	if err != nil {
		t.Fatal(err)
	}
	const n = 64 << 20 // 64 Mi floats, 256 MiB
	x := torch.Zeros([]int64{n}, torch.Float32, dev)
	during, peak, _ := torch.CUDAMemory(dev)
	x.Free()
	after, peak2, _ := torch.CUDAMemory(dev)
	t.Logf("allocated before %d, with 256 MiB tensor %d (peak %d), after Free %d (peak %d)", before, during, peak, after, peak2)
	if during-before < 4*n || peak < during || after != before || peak2 < during {
		t.Errorf("memory statistics do not follow a 256 MiB allocation: before %d during %d after %d peak %d", before, during, after, peak2)
	}
}

func TestAutocastDTypes(t *testing.T) {
	needCUDA(t)
	checkLeaks(t)
	s := torch.NewScope()
	defer s.Close()
	x := torch.Randn([]int64{8, 16}, torch.Float32, dev)
	w := torch.Randn([]int64{32, 16}, torch.Float32, dev)
	bias := torch.Randn([]int64{32}, torch.Float32, dev)
	want := torch.Linear(x, w, bias)
	for _, dt := range []torch.DType{torch.BFloat16, torch.Float16} {
		var lin, mm, sm *torch.Tensor
		torch.Autocast(dev, dt, func() {
			lin = torch.Linear(x, w, bias)
			mm = x.Matmul(w.T())
			sm = lin.Softmax(-1) // softmax autocasts to float32
		})
		if lin.DType() != dt || mm.DType() != dt {
			t.Errorf("autocast %v: linear gave %v, matmul %v", dt, lin.DType(), mm.DType())
		}
		if sm.DType() != torch.Float32 {
			t.Errorf("autocast %v: softmax gave %v, want float32", dt, sm.DType())
		}
		if e := testutil.RelErr(f64(lin.Float32s()), f64(want.Float32s())); e > 2e-2 {
			t.Errorf("autocast %v: linear relative error %.3g", dt, e)
		}
		if out := torch.Linear(x, w, bias); out.DType() != torch.Float32 {
			t.Errorf("after the autocast region linear gave %v", out.DType())
		}
	}
	// parameters' gradients stay float32 under autocast
	p := torch.Randn([]int64{32, 16}, torch.Float32, dev).SetRequiresGrad(true)
	torch.Autocast(dev, torch.BFloat16, func() { torch.Linear(x, p, nil).Square().Mean(false).Backward() })
	if g := p.Grad(); g == nil || g.DType() != torch.Float32 {
		t.Errorf("gradient under autocast: %v, want a float32 tensor", g)
	}
	p.ZeroGrad()
}

// TestFusedAdamWMatchesCPU runs the same updates with the fused CUDA AdamW and the
// CPU AdamW (fused off) and compares parameters and moments. The fourth of seven updates
// has a NaN gradient and a non-zero foundInf: both skip it (the fused kernel on the
// device), so their step counters say 6 and the later bias corrections agree.
func TestFusedAdamWMatchesCPU(t *testing.T) {
	needCUDA(t)
	checkLeaks(t)
	s := torch.NewScope()
	defer s.Close()
	torch.ManualSeed(7)
	shapes := [][]int64{{33, 17}, {17}, {5, 3, 4}}
	var cpuPs, gpuPs []*torch.Tensor
	for _, sh := range shapes {
		p := torch.Randn(sh, torch.Float32, torch.CPU)
		cpuPs = append(cpuPs, p.Clone().SetRequiresGrad(true))
		gpuPs = append(gpuPs, p.ToDevice(dev, false).SetRequiresGrad(true))
	}
	cpu := torch.NewAdamW([][]*torch.Tensor{cpuPs[:2], cpuPs[2:]}, []float64{0.1, 0}, 0.9, 0.98, 1e-6)
	gpu := torch.NewAdamW([][]*torch.Tensor{gpuPs[:2], gpuPs[2:]}, []float64{0.1, 0}, 0.9, 0.98, 1e-6)
	defer cpu.Free()
	defer gpu.Free()
	cpu.Fused, gpu.Fused = false, true
	for step := 0; step < 7; step++ {
		var cpuFound, gpuFound *torch.Tensor // nil: a good step
		for i, sh := range shapes {
			g := torch.Randn(sh, torch.Float32, torch.CPU).MulScalar(float64(step + 1))
			if step == 3 {
				g = g.Div(torch.Zeros(nil, torch.Float32, torch.CPU)) // inf and NaN
				cpuFound, gpuFound = torch.Scalar(1), torch.Scalar(1).ToDevice(dev, false)
			}
			cpuPs[i].SetGrad(g)
			gpuPs[i].SetGrad(g.ToDevice(dev, false))
		}
		lr := 1e-2 / float64(step+1)
		if err := cpu.Update(lr, cpuFound); err != nil {
			t.Fatal(err)
		}
		if err := gpu.Update(lr, gpuFound); err != nil {
			t.Fatal(err)
		}
	}
	for gi := range cpu.Groups {
		for i := range cpu.Groups[gi].Params {
			for _, c := range []struct {
				name string
				a, b *torch.Tensor
			}{
				{"param", cpu.Groups[gi].Params[i], gpu.Groups[gi].Params[i]},
				{"exp_avg", cpu.Groups[gi].ExpAvg[i], gpu.Groups[gi].ExpAvg[i]},
				{"exp_avg_sq", cpu.Groups[gi].ExpAvgSq[i], gpu.Groups[gi].ExpAvgSq[i]},
			} {
				if e := testutil.RelErr(f64(c.b.Float32s()), f64(c.a.Float32s())); e > 1e-5 {
					t.Errorf("group %d %s %d: fused CUDA vs CPU relative error %.3g > 1e-5", gi, c.name, i, e)
				}
			}
		}
	}
	if cpu.Steps() != 6 || gpu.Steps() != 6 {
		t.Errorf("steps %d / %d, want 6 (one of 7 skipped)", cpu.Steps(), gpu.Steps())
	}
}

// TestSDPAMatchesManual compares scaled_dot_product_attention (flash, memory-efficient
// or cuDNN kernels) with the spelled-out attention, in float32 and bfloat16, with and
// without a causal mask and an additive mask. Norm: max |fused - manual| / max |manual|;
// both computed in the same dtype.
func TestSDPAMatchesManual(t *testing.T) {
	needCUDA(t)
	checkLeaks(t)
	s := torch.NewScope()
	defer s.Close()
	torch.ManualSeed(3)
	const b, h, tt, dh = 4, 8, 77, 64
	tols := map[torch.DType]float64{torch.Float32: 1e-4, torch.BFloat16: 2e-2, torch.Float16: 5e-3}
	for _, dt := range []torch.DType{torch.Float32, torch.BFloat16, torch.Float16} {
		q := torch.Randn([]int64{b, h, tt, dh}, torch.Float32, dev).To(dt)
		k := torch.Randn([]int64{b, h, tt, dh}, torch.Float32, dev).To(dt)
		v := torch.Randn([]int64{b, h, tt, dh}, torch.Float32, dev).To(dt)
		mask := torch.Randn([]int64{1, 1, tt, tt}, torch.Float32, dev).To(dt)
		for _, c := range []struct {
			name   string
			mask   *torch.Tensor
			causal bool
		}{{"plain", nil, false}, {"causal", nil, true}, {"additive mask", mask, false}} {
			fused := torch.Attention(q, k, v, c.mask, c.causal, 0, true)
			manual := torch.Attention(q, k, v, c.mask, c.causal, 0, false)
			if fused.DType() != dt {
				t.Errorf("%v %s: fused output is %v", dt, c.name, fused.DType())
			}
			e := testutil.RelErr(f64(fused.Float32s()), f64(manual.Float32s()))
			t.Logf("%-8v %-13s rel err %.3g", dt, c.name, e)
			if e > tols[dt] {
				t.Errorf("%v %s: SDPA vs manual relative error %.3g > %g", dt, c.name, e, tols[dt])
			}
		}
	}
	// gradients through the fused kernel match the manual ones (bf16 training path)
	q := torch.Randn([]int64{2, 4, 50, 64}, torch.BFloat16, dev).SetRequiresGrad(true)
	k := torch.Randn([]int64{2, 4, 50, 64}, torch.BFloat16, dev).SetRequiresGrad(true)
	v := torch.Randn([]int64{2, 4, 50, 64}, torch.BFloat16, dev).SetRequiresGrad(true)
	grads := func(fused bool) [][]float64 {
		for _, p := range []*torch.Tensor{q, k, v} {
			p.ZeroGrad()
		}
		torch.Attention(q, k, v, nil, true, 0, fused).To(torch.Float32).Square().Sum(false).Backward()
		return [][]float64{f64(q.Grad().Float32s()), f64(k.Grad().Float32s()), f64(v.Grad().Float32s())}
	}
	gf, gm := grads(true), grads(false)
	for i, name := range []string{"dq", "dk", "dv"} {
		if e := testutil.RelErr(gf[i], gm[i]); e > 3e-2 {
			t.Errorf("bf16 causal %s: fused vs manual relative error %.3g > 3e-2", name, e)
		}
	}
	for _, p := range []*torch.Tensor{q, k, v} {
		p.ZeroGrad()
	}
}

// ---- CLIP fixture parity on CUDA ----

func fixtures(t *testing.T) string { return testutil.Fixtures(t, "clip-tiny-openai") }

func loadFixtureModel(t *testing.T, dir string) *clip.Model {
	t.Helper()
	m, _, err := clip.LoadPretrained(dir, dev, torch.Float32)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// TestCLIPParityCUDA runs the tiny OpenAI fixture on the GPU: in float32 every output,
// the loss and the fixture's gradients agree with OpenAI's reference within 1e-4
// (max |ours - ref| / max |ref|; TF32 off, see TestMain); under bf16 autocast the
// outputs and the loss agree within 5e-2, bf16's 8-bit mantissa carried through two
// layers per tower (a stated, loose bound: it catches wrong kernels, not rounding).
func TestCLIPParityCUDA(t *testing.T) {
	needCUDA(t)
	dir := fixtures(t)
	checkLeaks(t)
	m := loadFixtureModel(t, dir)
	defer m.Free()
	s := torch.NewScope()
	defer s.Close()
	pixels := tensortest.ReadNpy(t, filepath.Join(dir, "pixel_values.npy")).ToDevice(dev, false)
	ids := tensortest.ReadNpy(t, filepath.Join(dir, "input_ids.npy")).ToDevice(dev, false)
	names := []string{"vision_pooled", "text_pooled", "image_embeds", "text_embeds", "logits_per_image", "loss"}
	run := func() map[string]*torch.Tensor {
		out := map[string]*torch.Tensor{}
		out["vision_pooled"] = m.VisionPooled(pixels)
		out["text_pooled"] = m.TextPooled(ids)
		out["image_embeds"] = m.EncodeImage(pixels)
		out["text_embeds"] = m.EncodeText(ids)
		out["logits_per_image"] = m.Forward(pixels, ids)
		out["loss"] = clip.ContrastiveLoss(out["logits_per_image"])
		return out
	}

	var fp32 map[string]*torch.Tensor
	if err := torch.Try(func() {
		fp32 = run()
		fp32["loss"].Backward()
	}); err != nil {
		t.Fatal(err)
	}
	for _, name := range names {
		e := testutil.RelErr(f64(fp32[name].Float32s()), f64(tensortest.ReadNpy(t, filepath.Join(dir, name+".npy")).Float32s()))
		t.Logf("fp32 %-18s rel err %.3g", name, e)
		if e > 1e-4 {
			t.Errorf("fp32 %s: relative error %.3g > 1e-4", name, e)
		}
		if !fp32[name].Device().IsCUDA() {
			t.Errorf("%s computed on %v", name, fp32[name].Device())
		}
	}
	grads, _ := filepath.Glob(filepath.Join(dir, "grad__*.npy"))
	sd := m.StateDict()
	for _, g := range grads {
		key := strings.TrimSuffix(strings.TrimPrefix(filepath.Base(g), "grad__"), ".npy")
		p, ok := sd[key]
		if !ok {
			t.Errorf("gradient fixture for unknown parameter %s", key)
			continue
		}
		grad := p.Grad()
		if grad == nil {
			t.Errorf("%s: no gradient", key)
			continue
		}
		e := testutil.RelErr(f64(grad.Float32s()), f64(tensortest.ReadNpy(t, g).Float32s()))
		t.Logf("fp32 grad %-55s rel err %.3g", key, e)
		if e > 1e-4 {
			t.Errorf("fp32 grad %s: relative error %.3g > 1e-4", key, e)
		}
		p.ZeroGrad()
	}

	var bf map[string]*torch.Tensor
	if err := torch.Try(func() {
		torch.NoGrad(func() { torch.Autocast(dev, torch.BFloat16, func() { bf = run() }) })
	}); err != nil {
		t.Fatal(err)
	}
	for _, name := range names {
		e := testutil.RelErr(f64(bf[name].Float32s()), f64(tensortest.ReadNpy(t, filepath.Join(dir, name+".npy")).Float32s()))
		t.Logf("bf16 %-18s rel err %.3g", name, e)
		if e > 5e-2 {
			t.Errorf("bf16 autocast %s: relative error %.3g > 5e-2", name, e)
		}
	}
}
