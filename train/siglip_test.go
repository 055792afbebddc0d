package train

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"os/exec"
	"strconv"
	"testing"
	"time"

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
		loss := SigLIPLossGathered(img, txt, scale, bias, nil)
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
	if os.Getenv("GOCLIP_DP_RANK") == "" {
		t.Skip("a rank of TestSigLIPDataParallelEquivalence, started by it")
	}
	n, _ := strconv.Atoi(os.Getenv("GOCLIP_DP_BATCH"))
	if err := torch.SetThreads(1); err != nil {
		t.Fatal(err)
	}
	rv, err := torch.EnvRendezvous()
	if err != nil {
		t.Fatal(err)
	}
	pg, err := rv.NewProcessGroup("gloo", 20*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer pg.Close()

	m := newToyCLIP()
	bias := torch.FromFloat32([]float32{-2}).SetRequiresGrad(true) // [] (not -10: the toy's few pairs would give tiny gradients)
	named := append(m.named(), nn.Named{Name: "logit_bias", T: bias})
	x := torch.Randn([]int64{int64(n), 6}, torch.Float32, torch.CPU) // [N, Di]
	y := torch.Randn([]int64{int64(n), 5}, torch.Float32, torch.CPU) // [N, Dt]

	img, txt := m.embed(x, y)
	refLoss := SigLIPLossGathered(img, txt, m.scale, bias, nil)
	refLoss.Backward()
	var ref [][]float64
	for _, p := range named {
		if g := p.T.Grad(); g != nil {
			ref = append(ref, g.Float64s())
		}
		p.T.ZeroGrad()
	}

	dp := NewDataParallel(pg, named)
	start, end := dp.Slice(n)
	img, txt = m.embed(x.Narrow(0, int64(start), int64(end-start)), y.Narrow(0, int64(start), int64(end-start)))
	loss := SigLIPLossGathered(img, txt, m.scale, bias, pg)
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
