package train

// The benchmark harness of goclip bench: timed training steps, or embedding passes, on
// random inputs already on the device (no data loading, no files), with the model FLOPs
// utilisation and the peak memory of the timed steps.

import (
	"bufio"
	"errors"
	"fmt"
	"math"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"goclip/clip"
	"goclip/nn"
	"goclip/torch"
)

// The benchmark modes.
const (
	BenchTrain = "train" // full training steps: forward, loss, backward, clipping, AdamW
	BenchEmbed = "embed" // projected image and text embeddings, no gradients, evaluation mode
)

// The optimizer settings of a benchmark step: Options' defaults (AdamW betas 0.9, 0.98,
// eps 1e-6, weight decay 0.1 on matrices, lr 5e-4) with gradient clipping at 1.
// bench/peer/clip_eager.py uses the same numbers.
const (
	benchLR          = 5e-4
	benchBeta1       = 0.9
	benchBeta2       = 0.98
	benchEps         = 1e-6
	benchWeightDecay = 0.1
	benchClipGrad    = 1.0
)

// BenchOptions say what Bench times.
type BenchOptions struct {
	Mode      string // BenchTrain or BenchEmbed
	BatchSize int    // image-text pairs per step
	Steps     int    // timed steps
	Warmup    int    // untimed steps first
	// CaptionLength is the tokens per caption, start and end included: captions of
	// that length padded to the context, cut by Model.TextIDs as training does. 0: random
	// ids at every context position.
	CaptionLength int
	Precision     clip.Precision
	// Trainable are the parameters a training step updates (nil: all of the model's).
	// LoRA marks them as adapters: a step then counts 2x forward FLOPs, not 3x.
	Trainable []nn.Named
	LoRA      bool
}

// BenchResult is what goclip bench prints.
type BenchResult struct {
	Mode          string   `json:"mode"`
	Device        string   `json:"device"`
	DeviceName    string   `json:"device_name"`
	Precision     string   `json:"precision"`
	Threads       int      `json:"threads"`
	BatchSize     int      `json:"batch_size"`
	Steps         int      `json:"steps"`
	StepMS        float64  `json:"step_ms"`
	StepMSMean    float64  `json:"step_ms_mean"`
	ImagesPerS    float64  `json:"images_per_s"`
	ImageMS       *float64 `json:"image_ms,omitempty"` // embed mode: per image batch
	TextMS        *float64 `json:"text_ms,omitempty"`  // embed mode: per text batch
	TextsPerS     *float64 `json:"texts_per_s,omitempty"`
	PeakMemoryMB  *float64 `json:"peak_memory_mb"` // null when the statistic failed
	MemoryKind    string   `json:"memory_kind"`
	MemoryError   string   `json:"memory_error,omitempty"`
	MFU           *float64 `json:"mfu"`
	GFLOPsPerStep float64  `json:"gflops_per_step"`
	Params        int64    `json:"params"`
	Trainable     int64    `json:"trainable"`
	Loss          float64  `json:"loss,omitempty"` // the last step's loss (train mode)
	Torch         string   `json:"torch"`
}

// String is the result as one line.
func (r BenchResult) String() string {
	mfu, mem := "n/a", "n/a"
	if r.MFU != nil {
		mfu = fmt.Sprintf("%.1f%%", 100**r.MFU)
	}
	if r.PeakMemoryMB != nil {
		mem = fmt.Sprintf("%.0f MB", *r.PeakMemoryMB)
	}
	return fmt.Sprintf("%s on %s (%s, %s, %d threads), batch %d: %.1f ms/step, %.1f images/s, peak %s memory %s, MFU %s, %.1f GFLOPs/step",
		r.Mode, r.Device, r.DeviceName, r.Precision, r.Threads, r.BatchSize, r.StepMS, r.ImagesPerS, r.MemoryKind, mem, mfu, r.GFLOPsPerStep)
}

// Validate reports the first option out of range, by the name of goclip bench's flag.
func (o BenchOptions) Validate() error {
	switch {
	case o.BatchSize < 1:
		return fmt.Errorf("--batch-size must be at least 1, got %d", o.BatchSize)
	case o.Steps < 1:
		return fmt.Errorf("--steps must be at least 1, got %d", o.Steps)
	case o.Warmup < 0:
		return fmt.Errorf("--warmup must be at least 0, got %d", o.Warmup)
	case o.Mode != BenchTrain && o.Mode != BenchEmbed:
		return fmt.Errorf("--mode %q: want %s or %s", o.Mode, BenchTrain, BenchEmbed)
	}
	return nil
}

// Bench times o.Steps steps of o.Mode on m, on m's device, after o.Warmup untimed ones.
// The inputs are pixels from N(0, 1) of shape [B, channels, image_size, image_size] and
// token ids (see BenchOptions.CaptionLength), drawn from torch's generator. A step is
// what Run does per batch: forward of both towers, the loss, backward, gradient
// clipping (max norm 1), AdamW (weight decay on matrices only) and the logit-scale
// clamp, over o.Trainable. In BenchEmbed mode the model is put in evaluation mode and
// the image and text batches are embedded and timed separately, each pass in its own
// scope.
//
// Model FLOPs per step are clip.Config.ImageFLOPs + TextFLOPs (at the trimmed caption
// length when the model's Speed trims text) per pair, times the batch, times 3 for a
// training step (backward = 2x forward) or 2 for a LoRA step (no weight gradients of the
// frozen base; the LoRA matrices' own FLOPs not counted). MFU is set on a known GPU
// (peakTFLOPs), against its dense bf16 peak whatever the precision.
//
// A memory statistic that fails (an allocator without statistics, a driver quirk)
// costs only PeakMemoryMB, which stays nil with MemoryError saying why; the timings stand.
func Bench(m *clip.Model, o BenchOptions) (res BenchResult, err error) {
	if err := o.Validate(); err != nil {
		return res, err
	}
	var benchErr error
	if err := torch.Try(func() { torch.WithScope(func() { res, benchErr = bench(m, o) }) }); err != nil {
		return res, err
	}
	return res, benchErr
}

// bench is Bench inside its scope; tensor errors panic.
func bench(m *clip.Model, o BenchOptions) (BenchResult, error) {
	dev, cfg, batch := m.Device(), m.Config, o.BatchSize
	if o.Trainable == nil {
		o.Trainable = m.NamedParameters()
	}
	total, _ := nn.Count(m.NamedParameters())
	trainable, _ := nn.Count(o.Trainable)
	res := BenchResult{Mode: o.Mode, Device: dev.String(), DeviceName: deviceName(dev), Precision: string(o.Precision),
		Threads: torch.Threads(), BatchSize: batch, Steps: o.Steps, Params: total, Trainable: trainable,
		Torch: torch.Version()}
	var textLen int64 // the text tower runs at the caption length when trimmed
	if o.CaptionLength > 0 && !m.Speed().FullText {
		textLen = int64(o.CaptionLength)
	}
	flops := (cfg.ImageFLOPs() + cfg.TextFLOPs(textLen)) * float64(batch)
	if o.Mode == BenchTrain {
		if o.LoRA {
			flops *= 2
		} else {
			flops *= 3
		}
	}
	res.GFLOPsPerStep = flops / 1e9

	s := cfg.Vision.ImageSize
	pixels := torch.Randn([]int64{int64(batch), cfg.Vision.NumChannels, s, s}, torch.Float32, dev) // [B, C, S, S]
	ids, err := benchIDs(m, batch, o.CaptionLength)                                                // [B, L]
	if err != nil {
		return res, err
	}
	var memErr error
	if dev.IsCUDA() {
		memErr = torch.ResetPeakMemory(dev)
	}

	if o.Mode == BenchEmbed {
		m.SetTrain(false)
		var imgMS, txtMS []float64
		for i := 0; i < o.Warmup+o.Steps; i++ {
			var ti, tt float64
			var err error
			torch.NoGrad(func() {
				// Each pass in its own scope, so that its activations are freed as
				// they would be in eval or embed.
				ti, err = timed(dev, func() { torch.WithScope(func() { o.Precision.Run(dev, func() { m.EncodeImage(pixels) }) }) })
				if err == nil {
					tt, err = timed(dev, func() { torch.WithScope(func() { o.Precision.Run(dev, func() { m.EncodeText(ids) }) }) })
				}
			})
			if err != nil {
				return res, err
			}
			if i >= o.Warmup {
				imgMS, txtMS = append(imgMS, ti), append(txtMS, tt)
			}
		}
		im, tm := median(imgMS), median(txtMS)
		tps := float64(batch) * 1000 / tm
		res.ImageMS, res.TextMS, res.TextsPerS = &im, &tm, &tps
		sum := make([]float64, len(imgMS))
		for i := range sum {
			sum[i] = imgMS[i] + txtMS[i]
		}
		res.StepMS, res.StepMSMean = median(sum), mean(sum)
		res.ImagesPerS = float64(batch) * 1000 / im
	} else {
		st, err := NewStepper(m, o.Trainable, Options{LR: benchLR, WeightDecay: benchWeightDecay,
			Beta1: benchBeta1, Beta2: benchBeta2, Eps: benchEps, ClipGrad: benchClipGrad, Precision: o.Precision})
		if err != nil {
			return res, err
		}
		defer st.Free()
		var ms []float64
		for i := 0; i < o.Warmup+o.Steps; i++ {
			var stepErr error
			t, err := timed(dev, func() { res.Loss, stepErr = st.Step(pixels, ids) })
			if err = errors.Join(stepErr, err); err != nil {
				return res, err
			}
			if i >= o.Warmup {
				ms = append(ms, t)
			}
		}
		res.StepMS, res.StepMSMean = median(ms), mean(ms)
		res.ImagesPerS = float64(batch) * 1000 / res.StepMS
	}

	res.setPeakMemory(dev, memErr)
	if peak := peakTFLOPs(res.DeviceName); dev.IsCUDA() && peak > 0 {
		mfu := flops / (res.StepMS / 1000) / (peak * 1e12)
		res.MFU = &mfu
	}
	return res, nil
}

// benchIDs are the token ids of a bench batch, on m's device: random at every context
// position, or captions of n tokens (start id, random ids below the end id, the end id,
// zero padding) cut by Model.TextIDs.
func benchIDs(m *clip.Model, batch, n int) (*torch.Tensor, error) {
	tc := m.Config.Text
	ctx := int(tc.MaxPositionEmbeddings)
	if n == 0 {
		return torch.RandInt(0, tc.VocabSize, []int64{int64(batch), int64(ctx)}, m.Device()), nil // [B, T]
	}
	if n < 2 || n > ctx {
		return nil, fmt.Errorf("--caption-length %d: want 2 to the context length %d", n, ctx)
	}
	end := tc.VocabSize - 1 // the largest id, for the argmax rule
	if tc.EOSTokenID != 2 {
		end = tc.EOSTokenID
	}
	body := torch.RandInt(0, end, []int64{int64(batch * (n - 2))}, torch.CPU).Int64s()
	ids := make([]int64, batch*ctx)
	for r := range batch {
		row := ids[r*ctx : (r+1)*ctx]
		row[0] = tc.BOSTokenID
		copy(row[1:n-1], body[r*(n-2):(r+1)*(n-2)])
		row[n-1] = end
	}
	cut, l, err := m.TextIDs(ids, batch)
	if err != nil {
		return nil, err
	}
	return torch.FromInt64(cut, int64(batch), int64(l)).ToDevice(m.Device(), false), nil // [B, L]
}

// timed runs f and returns its wall time in milliseconds, the device synchronised after.
func timed(dev torch.Device, f func()) (float64, error) {
	start := time.Now()
	f()
	if err := torch.Synchronize(dev); err != nil {
		return 0, err
	}
	return float64(time.Since(start).Nanoseconds()) / 1e6, nil
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

func mean(xs []float64) float64 {
	var t float64
	for _, x := range xs {
		t += x
	}
	return t / float64(len(xs))
}

// peakTFLOPs is a GPU's dense bf16 peak in TFLOPs by its CUDA name, 0 when unknown.
func peakTFLOPs(name string) float64 {
	n := strings.ToUpper(name)
	switch {
	case strings.Contains(n, "H100") && strings.Contains(n, "PCIE"):
		return 756
	case strings.Contains(n, "H100"), strings.Contains(n, "H200"):
		return 989
	case strings.Contains(n, "A100"):
		return 312
	}
	return 0
}

// deviceName is the CUDA device's name, or the CPU model from /proc/cpuinfo.
func deviceName(dev torch.Device) string {
	if dev.IsCUDA() {
		if p, err := torch.CUDAProperties(dev); err == nil {
			return p.Name
		}
		return "cuda"
	}
	if v := procField("/proc/cpuinfo", "model name"); v != "" {
		return v
	}
	return runtime.GOARCH
}

// setPeakMemory fills PeakMemoryMB and MemoryKind, or, when the statistic failed (or
// resetErr, the reset before the timed steps, did), leaves PeakMemoryMB null and says why
// in MemoryError; it returns that error.
func (r *BenchResult) setPeakMemory(dev torch.Device, resetErr error) error {
	peak, kind, err := peakMemory(dev)
	r.MemoryKind = kind
	if err = errors.Join(resetErr, err); err != nil {
		r.PeakMemoryMB, r.MemoryError = nil, err.Error()
		return err
	}
	r.PeakMemoryMB = &peak
	return nil
}

// peakMemory is the CUDA allocator's peak (cuda) or the process's peak RSS (cpu), in MB.
func peakMemory(dev torch.Device) (float64, string, error) {
	if dev.IsCUDA() {
		_, peak, err := torch.CUDAMemory(dev)
		return float64(peak) / (1 << 20), "cuda_allocator_peak", err
	}
	v := procField("/proc/self/status", "VmHWM") // "123456 kB"
	kb, err := strconv.ParseFloat(strings.TrimSpace(strings.TrimSuffix(v, "kB")), 64)
	if err != nil {
		return math.NaN(), "cpu_peak_rss_vmhwm", fmt.Errorf("reading VmHWM from /proc/self/status: %q", v)
	}
	return kb / 1024, "cpu_peak_rss_vmhwm", nil
}

// procField is the value of the first "key: value" line of a /proc file, "" if none.
func procField(path, key string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if ok && strings.TrimSpace(k) == key {
			return strings.TrimSpace(v)
		}
	}
	return ""
}
