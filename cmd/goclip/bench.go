package main

// goclip bench: timed training steps (or embedding passes) on random inputs already on
// the device, for bench/run.sh and for GPU sizing. No data loading, no files written.

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"goclip/clip"
	"goclip/lora"
	"goclip/nn"
	"goclip/torch"
	"goclip/train"
)

// The optimizer settings of a benchmark step: train.Options' defaults (AdamW betas 0.9,
// 0.98, eps 1e-6, weight decay 0.1 on matrices, lr 5e-4) with gradient clipping at 1.
// bench/peer/clip_eager.py uses the same numbers.
const (
	benchLR          = 5e-4
	benchBeta1       = 0.9
	benchBeta2       = 0.98
	benchEps         = 1e-6
	benchWeightDecay = 0.1
	benchClipGrad    = 1.0
)

var benchCommand = &cli.Command{
	Name:      "bench",
	Usage:     "time training steps (or embedding passes) on random inputs",
	ArgsUsage: " ",
	Description: `Times CLIP training steps on random inputs that are already on the device: no
data loading, no files. A step is what goclip train does per batch: forward of both
towers, the symmetric contrastive loss, backward, gradient clipping (max norm 1), AdamW
(weight decay on matrices only) and the logit-scale clamp. With --lora-r only the LoRA
matrices are trained, as in goclip finetune.

--mode embed instead times the projected embeddings of a batch of images and of a
batch of texts separately, without gradients, in evaluation mode.

Inputs: pixels from N(0, 1) of shape [B, channels, image_size, image_size]; token ids
uniform in [0, vocab_size) of shape [B, max_position_embeddings], or with
--caption-length N captions of N tokens (start, N-2 random ids, end) padded to the
context, which --trim-text (the default) cuts to N positions as training does.

Output (--json prints it as one JSON object):
   step_ms          median milliseconds per step (train) or per image+text batch (embed)
   images_per_s     batch_size / median step time
   peak_memory_mb   the CUDA caching allocator's peak over the timed steps (cuda), or the
                    process's peak resident set, VmHWM (cpu); memory_kind says which;
                    null when the statistic could not be read (memory_error says why,
                    and the timings stand)
   mfu              model FLOPs utilisation on a known GPU (H100, H200, A100), else null:
                    model FLOPs per step / step time / the GPU's dense bf16 peak

Model FLOPs (2 per multiply-add, matrix products only), per image-text pair, forward:
   vision: 2·Np·(C·p²)·Dv                     patch embedding, Np = (S/p)² patches
         + Lv·(2·N·(4·Dv² + 2·Dv·Iv) + 4·N²·Dv) q/k/v/out, MLP, scores and values, N = Np+1
         + 2·Dv·P                              visual_projection
   text:   Lt·(2·T·(4·Dt² + 2·Dt·It) + 4·T²·Dt) + 2·Dt·P    T = max_position_embeddings
                                               (--caption-length when trimmed)
(ViT-B/16: 35.13 GFLOPs image + 5.96 GFLOPs text.) A training step counts 3x forward
(backward = 2x forward); a LoRA step 2x (no weight gradients of the frozen base), the
LoRA matrices' own FLOPs not counted. The peak is dense bf16 whatever --precision is.

Examples:
   goclip bench --config tiny --batch-size 32 --steps 20 --threads 2 --json
   goclip bench --config vit-b-16 --batch-size 256 --steps 20 --precision bf16 --device cuda
   goclip bench --model openai/clip-vit-base-patch16 --lora-r 64 --lora-alpha 128 --batch-size 256 --steps 20
   goclip bench --config bench/configs/vit-b-16.json --mode embed --batch-size 32 --steps 5`,
	Flags: append([]cli.Flag{
		modelFlag, revisionFlag, configFlag, loraRFlag, loraAlphaFlag, loraTargetsFlag,
		batchSizeFlag(32, "image-text pairs per step"),
		&cli.IntFlag{Name: "steps", Value: 10, EnvVars: []string{"GOCLIP_BENCH_STEPS"}, Usage: "timed steps", Category: catCompute},
		&cli.IntFlag{Name: "warmup", Value: 2, EnvVars: []string{"GOCLIP_BENCH_WARMUP"}, Usage: "untimed steps first", Category: catCompute},
		&cli.StringFlag{Name: "mode", Value: "train", EnvVars: []string{"GOCLIP_BENCH_MODE"}, Usage: "train (full training steps) or embed (no-grad image and text embeddings)", Category: catCompute},
		&cli.IntFlag{Name: "caption-length", EnvVars: []string{"GOCLIP_BENCH_CAPTION_LENGTH"}, Usage: "tokens per caption, start and end included (0: random ids at every context position)", Category: catCompute},
		seedFlag, gradCheckpointingFlag, bf16BaseFlag,
		&cli.BoolFlag{Name: "json", EnvVars: []string{"GOCLIP_BENCH_JSON"}, Usage: "print the result as one JSON object", Category: catOutput},
	}, computeFlags()...),
	Action: torchAction(runBench),
}

func init() { register(benchCommand) }

// benchResult is what goclip bench prints.
type benchResult struct {
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

func runBench(c *cli.Context) error {
	if c.NArg() > 0 {
		return fmt.Errorf("bench takes no arguments (got %q)", c.Args().Slice())
	}
	batch, steps, warmup := c.Int("batch-size"), c.Int("steps"), c.Int("warmup")
	switch {
	case batch < 1:
		return fmt.Errorf("--batch-size must be at least 1, got %d", batch)
	case steps < 1:
		return fmt.Errorf("--steps must be at least 1, got %d", steps)
	case warmup < 0:
		return fmt.Errorf("--warmup must be at least 0, got %d", warmup)
	}
	mode := c.String("mode")
	if mode != "train" && mode != "embed" {
		return fmt.Errorf("--mode %q: want train or embed", mode)
	}
	dev, err := setupCompute(c)
	if err != nil {
		return err
	}
	prec, err := precisionOf(c, dev)
	if err != nil {
		return err
	}
	torch.ManualSeed(c.Uint64(seedFlag.Name))

	m, err := benchModel(c, dev)
	if err != nil {
		return err
	}
	defer m.Free()
	m.SetSpeed(speedOf(c))
	trainable := m.NamedParameters()
	loraOn := c.Int(loraRFlag.Name) != 0 || c.IsSet(loraTargetsFlag.Name)
	if loraOn {
		lc, err := loraConfig(c, c.Int(loraRFlag.Name))
		if err != nil {
			return err
		}
		a, err := lora.Inject(m, lc)
		if err != nil {
			return err
		}
		trainable = a.Trainable()
		if prec == clip.BF16 && c.Bool(bf16BaseFlag.Name) { // as finetune's steps run
			lb, err := lora.KeepBaseIn(m, torch.BFloat16)
			if err != nil {
				return err
			}
			defer lb.Free()
		}
	}
	total, nTrain := nn.Count(m.NamedParameters())

	cfg := m.Config
	res := benchResult{Mode: mode, Device: dev.String(), DeviceName: deviceName(dev), Precision: string(prec),
		Threads: torch.Threads(), BatchSize: batch, Steps: steps, Params: total, Trainable: nTrain,
		Torch: torch.Version()}
	fc := cfg // the text tower runs at --caption-length positions when trimmed
	if n := c.Int("caption-length"); n > 0 && !speedOf(c).FullText {
		fc.Text.MaxPositionEmbeddings = int64(n)
	}
	flops := forwardFLOPs(fc) * float64(batch)
	if mode == "train" {
		if loraOn {
			flops *= 2
		} else {
			flops *= 3
		}
	}
	res.GFLOPsPerStep = flops / 1e9

	scope := torch.NewScope()
	defer scope.Close()
	s := cfg.Vision.ImageSize
	pixels := torch.Randn([]int64{int64(batch), cfg.Vision.NumChannels, s, s}, torch.Float32, dev) // [B, C, S, S]
	ids, err := benchIDs(m, batch, c.Int("caption-length"), dev)                                   // [B, L]
	if err != nil {
		return err
	}
	// A memory statistic that fails (an allocator without statistics, a driver quirk)
	// costs only peak_memory_mb, never the timings.
	var memErr error
	if dev.IsCUDA() {
		memErr = torch.ResetPeakMemory(dev)
	}

	if mode == "embed" {
		m.SetTrain(false)
		var imgMS, txtMS []float64
		for i := 0; i < warmup+steps; i++ {
			var ti, tt float64
			var err error
			torch.NoGrad(func() {
				// Each pass in its own scope, so that its activations are freed as
				// they would be in eval or embed (with no scope open they belonged to
				// nobody, and every pass allocated fresh memory).
				ti, err = timed(dev, func() { torch.WithScope(func() { prec.Run(dev, func() { m.EncodeImage(pixels) }) }) })
				if err == nil {
					tt, err = timed(dev, func() { torch.WithScope(func() { prec.Run(dev, func() { m.EncodeText(ids) }) }) })
				}
			})
			if err != nil {
				return err
			}
			if i >= warmup {
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
		st, err := train.NewStepper(m, trainable, train.Options{LR: benchLR, WeightDecay: benchWeightDecay,
			Beta1: benchBeta1, Beta2: benchBeta2, Eps: benchEps, ClipGrad: benchClipGrad, Precision: prec})
		if err != nil {
			return err
		}
		defer st.Free()
		var ms []float64
		for i := 0; i < warmup+steps; i++ {
			var stepErr error
			t, err := timed(dev, func() { res.Loss, stepErr = st.Step(pixels, ids) })
			if err = errors.Join(stepErr, err); err != nil {
				return err
			}
			if i >= warmup {
				ms = append(ms, t)
			}
		}
		res.StepMS, res.StepMSMean = median(ms), mean(ms)
		res.ImagesPerS = float64(batch) * 1000 / res.StepMS
	}

	if err := res.setPeakMemory(dev, memErr); err != nil {
		fmt.Fprintf(c.App.ErrWriter, "goclip bench: peak memory unavailable: %v\n", err)
	}
	if peak := peakTFLOPs(res.DeviceName); dev.IsCUDA() && peak > 0 {
		mfu := flops / (res.StepMS / 1000) / (peak * 1e12)
		res.MFU = &mfu
	}
	if c.Bool("json") {
		return json.NewEncoder(c.App.Writer).Encode(res)
	}
	mfu, mem := "n/a", "n/a"
	if res.MFU != nil {
		mfu = fmt.Sprintf("%.1f%%", 100**res.MFU)
	}
	if res.PeakMemoryMB != nil {
		mem = fmt.Sprintf("%.0f MB", *res.PeakMemoryMB)
	}
	_, err = fmt.Fprintf(c.App.Writer, "%s on %s (%s, %s, %d threads), batch %d: %.1f ms/step, %.1f images/s, peak %s memory %s, MFU %s, %.1f GFLOPs/step\n",
		mode, res.Device, res.DeviceName, res.Precision, res.Threads, batch, res.StepMS, res.ImagesPerS, res.MemoryKind, mem, mfu, res.GFLOPsPerStep)
	return err
}

// benchModel builds the model of --config (fresh initialisation) or loads --model.
func benchModel(c *cli.Context, dev torch.Device) (*clip.Model, error) {
	model, err := modelPath(c)
	if err != nil {
		return nil, err
	}
	config := c.String(configFlag.Name)
	switch {
	case model != "" && config != "":
		return nil, errors.New("give --model DIR or --config NAME, not both")
	case model != "":
		src, err := clip.FindCheckpoint(model)
		if err != nil {
			return nil, err
		}
		cfg, err := src.LoadConfig()
		if err != nil {
			return nil, err
		}
		return src.Load(cfg, dev, torch.Float32)
	case config != "":
		cfg, err := loadArchitecture(config)
		if err != nil {
			return nil, err
		}
		return clip.New(cfg, dev)
	}
	return nil, errors.New("give --model DIR (a model folder) or --config NAME (one of " +
		strings.Join(clip.PresetNames, ", ") + ")")
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

// forwardFLOPs is the model FLOPs of one image-text pair's forward pass (see the
// command's description for the formula).
func forwardFLOPs(c clip.Config) float64 {
	layer := func(n, d, i float64) float64 { return 2*n*(4*d*d+2*d*i) + 4*n*n*d }
	v, t := c.Vision, c.Text
	np := float64(v.NumPatches())
	p := float64(v.PatchSize)
	dv, dt, proj := float64(v.HiddenSize), float64(t.HiddenSize), float64(c.ProjectionDim)
	vision := 2*np*float64(v.NumChannels)*p*p*dv +
		float64(v.NumHiddenLayers)*layer(np+1, dv, float64(v.IntermediateSize)) + 2*dv*proj
	text := float64(t.NumHiddenLayers)*layer(float64(t.MaxPositionEmbeddings), dt, float64(t.IntermediateSize)) + 2*dt*proj
	return vision + text
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
func (r *benchResult) setPeakMemory(dev torch.Device, resetErr error) error {
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

// benchIDs are the token ids of a bench batch: random at every context position, or
// captions of n tokens (start id, random ids below the end id, the end id, zero padding)
// cut by Model.TextIDs.
func benchIDs(m *clip.Model, batch, n int, dev torch.Device) (*torch.Tensor, error) {
	tc := m.Config.Text
	ctx := int(tc.MaxPositionEmbeddings)
	if n == 0 {
		return torch.RandInt(0, tc.VocabSize, []int64{int64(batch), int64(ctx)}, dev), nil // [B, T]
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
	return m.TextIDs(ids, batch).ToDevice(dev, false), nil // [B, L]
}
