package train

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"goclip/dataset"
	"goclip/torch/serialize"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"goclip/internal/testutil"
	"goclip/nn"
	"goclip/torch"
)

// TestSigLIPLossMatchesPython compares the local loss and its gradients (features,
// temperature, bias) with torch's own computation of open_clip's formula,
// -F.logsigmoid(labels * logits).sum() / n, on a batch of 6 including a pair whose
// logit is large enough that a naive log(sigmoid) would overflow.
func TestSigLIPLossMatchesPython(t *testing.T) {
	py := testutil.PythonTorch(t)
	s := torch.NewScope()
	defer s.Close()
	torch.ManualSeed(11)
	const n, p = 6, 4
	imgData := torch.Randn([]int64{n, p}, torch.Float32, torch.CPU).Float32s()
	txtData := torch.Randn([]int64{n, p}, torch.Float32, torch.CPU).Float32s()
	for _, c := range []struct{ scale, bias float64 }{{SigLIPInitLogitScale, SigLIPInitLogitBias}, {math.Log(200), 3}} {
		img := torch.FromFloat32(imgData, n, p).SetRequiresGrad(true)
		txt := torch.FromFloat32(txtData, n, p).SetRequiresGrad(true)
		scale := torch.FromFloat32([]float32{float32(c.scale)}).SetRequiresGrad(true)
		bias := torch.FromFloat32([]float32{float32(c.bias)}).SetRequiresGrad(true)
		loss, err := SigLIPLossGathered(img, txt, scale, bias, nil)
		if err != nil {
			t.Fatal(err)
		}
		loss.Backward()
		got := map[string][]float64{"loss": {loss.Item()}, "img": img.Grad().Float64s(), "txt": txt.Grad().Float64s(),
			"scale": scale.Grad().Float64s(), "bias": bias.Grad().Float64s()}

		in, _ := json.Marshal(map[string]any{"img": imgData, "txt": txtData, "scale": c.scale, "bias": c.bias, "n": n, "p": p})
		script := `
import json, sys, torch
import torch.nn.functional as F
a = json.load(sys.stdin)
img = torch.tensor(a["img"], dtype=torch.float32).reshape(a["n"], a["p"]).requires_grad_()
txt = torch.tensor(a["txt"], dtype=torch.float32).reshape(a["n"], a["p"]).requires_grad_()
scale = torch.tensor([a["scale"]], dtype=torch.float32, requires_grad=True)
bias = torch.tensor([a["bias"]], dtype=torch.float32, requires_grad=True)
logits = scale.exp() * F.normalize(img, dim=-1) @ F.normalize(txt, dim=-1).T + bias
labels = 2 * torch.eye(a["n"]) - 1
loss = -F.logsigmoid(labels * logits).sum() / a["n"]
loss.backward()
print(json.dumps({"loss": [loss.item()], "img": img.grad.flatten().tolist(), "txt": txt.grad.flatten().tolist(),
                  "scale": scale.grad.tolist(), "bias": bias.grad.tolist()}))
`
		cmd := exec.Command(py, "-c", script)
		cmd.Dir = os.TempDir()
		cmd.Stdin = bytesReader(in)
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		var want map[string][]float64
		if err := json.Unmarshal(out, &want); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		for k, w := range want {
			if d := testutil.RelErr(got[k], w); d > 1e-5 {
				t.Errorf("t'=%.3f b=%g: %s differs from torch's by %.3g (relative): %v vs %v", c.scale, c.bias, k, d, got[k], w)
			}
		}
		t.Logf("t'=%.3f b=%g: loss %.7f (torch %.7f)", c.scale, c.bias, got["loss"][0], want["loss"][0])
	}
}

// TestSigLIPRank is one rank of TestSigLIPDataParallelEquivalence: the toy model's
// sigmoid loss, its features' rows split over the ranks, against one process's.
func TestSigLIPRank(t *testing.T) {
	pg, n := joinTestRank(t, "TestSigLIPDataParallelEquivalence")
	defer pg.Close()

	m := newToyCLIP()
	bias := torch.FromFloat32([]float32{-2}).SetRequiresGrad(true) // [] (not -10: the toy's few pairs would give tiny gradients)
	named := append(m.named(), nn.Named{Name: "logit_bias", T: bias})
	x := torch.Randn([]int64{int64(n), 6}, torch.Float32, torch.CPU) // [N, Di]
	y := torch.Randn([]int64{int64(n), 5}, torch.Float32, torch.CPU) // [N, Dt]

	img, txt := m.embed(x, y)
	refLoss, err := SigLIPLossGathered(img, txt, m.scale, bias, nil)
	if err != nil {
		t.Fatal(err)
	}
	refLoss.Backward()
	var ref [][]float64
	for _, p := range named {
		if g := p.T.Grad(); g != nil {
			ref = append(ref, g.Float64s())
		}
		p.T.ZeroGrad()
	}

	dp, err := NewDataParallel(pg, named)
	if err != nil {
		t.Fatal(err)
	}
	start, end := dp.Slice(n)
	img, txt = m.embed(x.Narrow(0, int64(start), int64(end-start)), y.Narrow(0, int64(start), int64(end-start)))
	loss, err := SigLIPLossGathered(img, txt, m.scale, bias, pg)
	if err != nil {
		t.Fatal(err)
	}
	loss.Backward()
	if err := dp.AverageGradients(); err != nil {
		t.Fatal(err)
	}
	mean, err := dp.MeanScalar(loss.Item())
	if err != nil {
		t.Fatal(err)
	}
	lossDiff := math.Abs(mean-refLoss.Item()) / math.Abs(refLoss.Item())
	gradDiff, i := 0.0, 0
	for _, p := range named {
		g := p.T.Grad()
		if g == nil {
			if p.T.RequiresGrad() {
				t.Fatalf("%s has no gradient", p.Name)
			}
			continue
		}
		for j, v := range g.Float64s() {
			gradDiff = math.Max(gradDiff, math.Abs(v-ref[i][j])/math.Max(1, math.Abs(ref[i][j])))
		}
		i++
	}
	fmt.Printf("RESULT rank %d rows [%d,%d) loss %.8f ref %.8f rel %.3g grad maxdiff %.3g\n",
		pg.Rank(), start, end, mean, refLoss.Item(), lossDiff, gradDiff)
	if lossDiff > 1e-5 || gradDiff > 1e-5 {
		t.Fatalf("rank %d: loss differs by %.3g (relative), gradients by %.3g", pg.Rank(), lossDiff, gradDiff)
	}
}

// TestSigLIPDataParallelEquivalence: 2 ranks on 8 pairs and 3 on 11, exchanging text
// features, give the loss and averaged gradients of one process on the whole batch.
func TestSigLIPDataParallelEquivalence(t *testing.T) {
	runRanks(t, "TestSigLIPRank")
}

func bytesReader(b []byte) *bytes.Reader { return bytes.NewReader(b) }

// TestSigLIPTraining trains with the sigmoid loss: logit_scale starts at exp(log 10),
// the bias at -10 moves and is logged in every training row, the checkpoint carries it
// as logit_bias, and a run interrupted and resumed (bias restored from the
// checkpoint) ends at the uninterrupted run's validation loss.
func TestSigLIPTraining(t *testing.T) {
	f := synthData(t, 48, "base")
	cfg := tinyConfig(t, f.tok)
	opts := Options{MaxSteps: 8, BatchSize: 8, LR: 1e-3, Warmup: 1, LogEvery: 1, Workers: 2, Loss: LossSigLIP}
	full := opts
	full.Out = t.TempDir()
	ref, err := runJob(t, f, newModel(t, cfg, 42), full)
	if err != nil {
		t.Fatal(err)
	}
	var first, last map[string]any
	for _, r := range readRows(t, full.Out) {
		if _, ok := r["train_loss"]; !ok {
			continue
		}
		if first == nil {
			first = r
		}
		last = r
	}
	if s, _ := first["logit_scale"].(float64); math.Abs(s-10) > 0.1 {
		t.Errorf("the first row's logit_scale is %v, want about 10 (SigLIP's t' = log 10)", first["logit_scale"])
	}
	b0, ok0 := first["logit_bias"].(float64)
	b1, ok1 := last["logit_bias"].(float64)
	if !ok0 || !ok1 || math.Abs(b0+10) > 0.05 || b1 == b0 {
		t.Errorf("logit_bias in the rows: first %v, last %v; want about -10, then moved", first["logit_bias"], last["logit_bias"])
	}
	obj, err := serialize.ReadPTObject(filepath.Join(full.Out, "checkpoints", LastCheckpoint))
	if err != nil {
		t.Fatal(err)
	}
	raw, ok := obj.(map[string]any)["model"].(map[string]any)[LogitBiasKey].(serialize.RawTensor)
	if !ok || len(raw.Data) != 4 || math.Abs(float64(math.Float32frombits(binary.LittleEndian.Uint32(raw.Data)))-b1) > 1e-4 {
		t.Errorf("the checkpoint's %s: %v, want the last row's %v", LogitBiasKey, raw, b1)
	}

	cut := opts
	cut.Out = t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cut.AfterStep = func(step int, _ float64) {
		if step == 3 {
			cancel()
		}
	}
	job := Job{Model: newModel(t, cfg, 42), Tokenizer: f.tok, Train: f.ds.Split(dataset.Train), Val: f.ds.Split(dataset.Val)}
	cut.SkipExport = true
	if _, err := Run(ctx, job, cut); err == nil {
		t.Fatal("the interrupted run did not stop")
	}
	cut.AfterStep, cut.Resume = nil, true
	job.Model = newModel(t, cfg, 5)
	got, err := Run(context.Background(), job, cut)
	if err != nil {
		t.Fatal(err)
	}
	d := math.Abs(got.Val.Loss - ref.Val.Loss)
	t.Logf("siglip: val loss %.7f uninterrupted, %.7f interrupted at step 3 and resumed (difference %.2g); bias %.4f -> %.4f", ref.Val.Loss, got.Val.Loss, d, b0, b1)
	if got.Steps != ref.Steps || d > 1e-5 {
		t.Errorf("resumed: %d steps, val loss %.7f; uninterrupted %d, %.7f", got.Steps, got.Val.Loss, ref.Steps, ref.Val.Loss)
	}
}

// readRows are the rows of RUN/metrics.jsonl.
func readRows(t *testing.T, run string) []map[string]any {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(run, MetricsFile))
	if err != nil {
		t.Fatal(err)
	}
	var rows []map[string]any
	for _, line := range bytes.Split(bytes.TrimSpace(data), []byte("\n")) {
		var r map[string]any
		if err := json.Unmarshal(line, &r); err != nil {
			t.Fatal(err)
		}
		rows = append(rows, r)
	}
	return rows
}
