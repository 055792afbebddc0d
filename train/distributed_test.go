package train

// Data-parallel equivalence: W ranks (separate processes re-running this test binary,
// Gloo on 127.0.0.1) each take their slice of a global batch, compute
// ContrastiveLossGathered, back-propagate and average the gradients; every rank then
// compares the averaged gradients and the mean loss with one process's computation on
// the whole batch (fp32, one thread per rank).

import (
	"context"
	"fmt"
	"math"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"goclip/clip"
	"goclip/nn"
	"goclip/torch"
)

func TestRankSlice(t *testing.T) {
	for _, c := range []struct{ n, world int }{{32, 2}, {11, 3}, {8, 8}, {10, 4}} {
		next := 0
		for r := 0; r < c.world; r++ {
			s, e := RankSlice(c.n, r, c.world)
			if s != next || e-s < c.n/c.world || e-s > c.n/c.world+1 {
				t.Fatalf("RankSlice(%d, %d, %d) = [%d, %d)", c.n, r, c.world, s, e)
			}
			next = e
		}
		if next != c.n {
			t.Fatalf("slices of %d over %d cover %d rows", c.n, c.world, next)
		}
	}
}

// toyCLIP is a two-tower linear model with CLIP's loss: enough to check the gradient
// algebra of gathered features without building a transformer.
type toyCLIP struct {
	wi, bi, wt, bt, scale, frozen *torch.Tensor
}

func newToyCLIP() *toyCLIP {
	torch.ManualSeed(7)
	m := &toyCLIP{
		wi:     torch.Randn([]int64{4, 6}, torch.Float32, torch.CPU).MulScalar(0.5), // [P, Di]
		bi:     torch.Randn([]int64{4}, torch.Float32, torch.CPU),                   // [P]
		wt:     torch.Randn([]int64{4, 5}, torch.Float32, torch.CPU).MulScalar(0.5), // [P, Dt]
		bt:     torch.Randn([]int64{4}, torch.Float32, torch.CPU),                   // [P]
		scale:  torch.FromFloat32([]float32{float32(math.Log(10))}),                 // []
		frozen: torch.Randn([]int64{3}, torch.Float32, torch.CPU),                   // never used
	}
	for _, p := range []*torch.Tensor{m.wi, m.bi, m.wt, m.bt, m.scale} {
		p.SetRequiresGrad(true)
	}
	return m
}

func (m *toyCLIP) named() []nn.Named {
	return []nn.Named{{Name: "wi", T: m.wi}, {Name: "bi", T: m.bi}, {Name: "frozen", T: m.frozen},
		{Name: "wt", T: m.wt}, {Name: "bt", T: m.bt}, {Name: "logit_scale", T: m.scale}}
}

func (m *toyCLIP) embed(x, y *torch.Tensor) (img, txt *torch.Tensor) {
	return torch.Linear(x, m.wi, m.bi), torch.Linear(y, m.wt, m.bt) // [B, P], [B, P]
}

// TestDataParallelRank is one rank of TestDataParallelEquivalence.
func TestDataParallelRank(t *testing.T) {
	pg, n := joinTestRank(t, "TestDataParallelEquivalence")
	defer pg.Close()

	m := newToyCLIP()
	x := torch.Randn([]int64{int64(n), 6}, torch.Float32, torch.CPU) // [N, Di] global batch
	y := torch.Randn([]int64{int64(n), 5}, torch.Float32, torch.CPU) // [N, Dt]

	// One process, whole batch: the reference.
	img, txt := m.embed(x, y)
	in := img.Normalize(2, -1, 1e-12)
	tn := txt.Normalize(2, -1, 1e-12)
	refLoss := clip.ContrastiveLoss(in.Matmul(tn.T()).Mul(m.scale.Exp()))
	refLoss.Backward()
	var ref [][]float64
	for _, p := range m.named() {
		if g := p.T.Grad(); g != nil {
			ref = append(ref, g.Float64s())
		}
		p.T.ZeroGrad()
	}

	// Ranks other than 0 start from other weights: SyncParameters must fix that.
	dp, err := NewDataParallel(pg, m.named())
	if err != nil {
		t.Fatal(err)
	}
	dp.BucketBytes = 40 // several buckets
	if pg.Rank() != 0 {
		for _, p := range m.named() {
			p.T.AddInPlace(nil, 0.25)
		}
	}
	if err := dp.SyncParameters(); err != nil {
		t.Fatal(err)
	}
	start, end := dp.Slice(n)
	img, txt = m.embed(x.Narrow(0, int64(start), int64(end-start)), y.Narrow(0, int64(start), int64(end-start)))
	loss, err := ContrastiveLossGathered(img, txt, m.scale, pg)
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
	gradDiff := 0.0
	i := 0
	for _, p := range m.named() {
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

	// The last rank without rows (all its images unreadable): both losses are an error on
	// every rank alike, naming that rank, and no rank waits in a gather the others skip.
	empty := pg.World() - 1
	rows := int64(end - start)
	if pg.Rank() == empty {
		rows = 0
	}
	img, txt = m.embed(x.Narrow(0, 0, rows), y.Narrow(0, 0, rows))
	want := fmt.Sprintf("rank %d has no sample", empty)
	if _, err := ContrastiveLossGathered(img, txt, m.scale, pg); err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("rank %d: contrastive loss with rank %d empty: error %v, want one containing %q", pg.Rank(), empty, err, want)
	}
	bias := torch.Zeros(nil, torch.Float32, torch.CPU)
	if _, err := SigLIPLossGathered(img, txt, m.scale, bias, pg); err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("rank %d: SigLIP loss with rank %d empty: error %v, want one containing %q", pg.Rank(), empty, err, want)
	}
}

// joinTestRank is the start of a rank test that runRanks runs from the test named parent:
// it skips when not started so, sets one intra-op thread and joins the Gloo group from
// the environment, returning the group (for the caller to close) and the global batch
// size.
func joinTestRank(t *testing.T, parent string) (*torch.ProcessGroup, int) {
	t.Helper()
	if os.Getenv("GOCLIP_DP_RANK") == "" {
		t.Skip("a rank of " + parent + ", started by it")
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
	return pg, n
}

func TestDataParallelEquivalence(t *testing.T) {
	runRanks(t, "TestDataParallelRank")
}

// runRanks runs the rank test named (one process per rank, Gloo on 127.0.0.1) for 2
// ranks on a batch of 8 and 3 ranks on a batch of 11, failing when a rank fails.
func runRanks(t *testing.T, rankTest string) {
	if !torch.HasBackend("gloo") {
		if os.Getenv("CI") == "true" {
			t.Fatal("the shim was built without Gloo: install libgloo-dev and rebuild it")
		}
		t.Skip("the shim was built without Gloo (install libgloo-dev and rebuild it)")
	}
	for _, c := range []struct{ world, batch int }{{2, 8}, {3, 11}} {
		t.Run(fmt.Sprintf("world%d-batch%d", c.world, c.batch), func(t *testing.T) {
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			port := l.Addr().(*net.TCPAddr).Port
			l.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
			defer cancel()
			cmds := make([]*exec.Cmd, c.world)
			outs := make([]*strings.Builder, c.world)
			for r := range cmds {
				cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^"+rankTest+"$", "-test.v")
				cmd.Env = append(os.Environ(), "GOCLIP_DP_RANK=1", "GOCLIP_DP_BATCH="+strconv.Itoa(c.batch),
					"RANK="+strconv.Itoa(r), "WORLD_SIZE="+strconv.Itoa(c.world), "LOCAL_RANK="+strconv.Itoa(r),
					"MASTER_ADDR=127.0.0.1", "MASTER_PORT="+strconv.Itoa(port))
				outs[r] = &strings.Builder{}
				cmd.Stdout, cmd.Stderr = outs[r], outs[r]
				if err := cmd.Start(); err != nil {
					t.Fatal(err)
				}
				cmds[r] = cmd
			}
			for r, cmd := range cmds {
				err := cmd.Wait()
				for _, line := range strings.Split(outs[r].String(), "\n") {
					if strings.HasPrefix(line, "RESULT") {
						t.Log(line)
					}
				}
				if err != nil {
					t.Errorf("rank %d: %v\n%s", r, err, outs[r].String())
				}
			}
		})
	}
}

// TestContrastiveLossGatheredLocal: without a process group it is CLIP's loss.
func TestContrastiveLossGatheredLocal(t *testing.T) {
	s := torch.NewScope()
	defer s.Close()
	torch.ManualSeed(3)
	img := torch.Randn([]int64{5, 4}, torch.Float32, torch.CPU)
	txt := torch.Randn([]int64{5, 4}, torch.Float32, torch.CPU)
	scale := torch.FromFloat32([]float32{2.5})
	loss, err := ContrastiveLossGathered(img, txt, scale, nil)
	if err != nil {
		t.Fatal(err)
	}
	got := loss.Item()
	in, tn := img.Normalize(2, -1, 1e-12), txt.Normalize(2, -1, 1e-12)
	want := clip.ContrastiveLoss(in.Matmul(tn.T()).Mul(scale.Exp())).Item()
	if math.Abs(got-want) > 1e-6 {
		t.Fatalf("loss %v, want %v", got, want)
	}
}

// TestJoinFromEnv: without WORLD_SIZE, or with WORLD_SIZE=1, the process runs alone on
// the device given; a bad or incomplete torchrun environment is an error naming the
// variable, before any connection.
func TestJoinFromEnv(t *testing.T) {
	for _, k := range []string{"WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"} {
		if v, ok := os.LookupEnv(k); ok {
			t.Cleanup(func() { os.Setenv(k, v) })
		} else {
			t.Cleanup(func() { os.Unsetenv(k) })
		}
		os.Unsetenv(k)
	}
	dev := torch.Device{Type: torch.CUDADevice, Index: 3}
	for _, ws := range []string{"", "1"} {
		if ws != "" {
			t.Setenv("WORLD_SIZE", ws)
			t.Setenv("RANK", "0")
		}
		pg, got, err := JoinFromEnv(dev, false, time.Second)
		if err != nil || pg != nil || got != dev {
			t.Fatalf("WORLD_SIZE=%q: %v, %v, %v; want one process on %v", ws, pg, got, err, dev)
		}
	}
	t.Setenv("WORLD_SIZE", "2")
	t.Setenv("RANK", "5")
	if _, _, err := JoinFromEnv(torch.CPU, false, time.Second); err == nil || !strings.Contains(err.Error(), "RANK") {
		t.Fatalf("RANK=5 of 2 gave %v", err)
	}
	t.Setenv("RANK", "1")
	if _, _, err := JoinFromEnv(torch.CPU, false, time.Second); err == nil || !strings.Contains(err.Error(), "MASTER_ADDR") {
		t.Fatalf("no MASTER_ADDR gave %v", err)
	}
}
