package torch_test

// Tests of the c10d bindings. Each rank is a separate process: the test re-runs its own
// binary with -test.run=^TestDistRank$ and the rendezvous in the environment, as torchrun
// would, over Gloo on 127.0.0.1 with a fresh port each time. A rank checks its results
// against hand-computed values and fails (exit status 1) on a mismatch.

import (
	"bufio"
	"context"
	"fmt"
	"math"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"goclip/torch"
)

// freePort is a TCP port on 127.0.0.1 that nothing listens on now.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// rankProc is one rank's process and what it printed.
type rankProc struct {
	cmd   *exec.Cmd
	mu    sync.Mutex
	lines []string
	ready chan struct{} // closed when the rank prints READY
	done  chan struct{} // closed when output is drained and the process has exited
	err   error         // the exit error, valid after done
}

func (p *rankProc) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return strings.Join(p.lines, "\n")
}

// startRanks starts world processes running scenario; the context bounds them all.
func startRanks(ctx context.Context, t *testing.T, scenario string, world int, env ...string) []*rankProc {
	t.Helper()
	port := freePort(t)
	procs := make([]*rankProc, world)
	for r := 0; r < world; r++ {
		cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestDistRank$", "-test.v")
		cmd.Env = append(os.Environ(), "GOCLIP_DIST_SCENARIO="+scenario,
			"RANK="+strconv.Itoa(r), "LOCAL_RANK="+strconv.Itoa(r), "WORLD_SIZE="+strconv.Itoa(world),
			"MASTER_ADDR=127.0.0.1", "MASTER_PORT="+strconv.Itoa(port))
		cmd.Env = append(cmd.Env, env...)
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stderr = cmd.Stdout
		p := &rankProc{cmd: cmd, ready: make(chan struct{}), done: make(chan struct{})}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		go func() {
			sc := bufio.NewScanner(out)
			readyOnce := sync.Once{}
			for sc.Scan() {
				line := sc.Text()
				p.mu.Lock()
				p.lines = append(p.lines, line)
				p.mu.Unlock()
				if line == "READY" {
					readyOnce.Do(func() { close(p.ready) })
				}
			}
			p.err = cmd.Wait()
			close(p.done)
		}()
		procs[r] = p
	}
	return procs
}

// needGloo skips a test when the shim was built without Gloo's headers (Debian:
// libgloo-dev), and fails it under CI=true.
func needGloo(t *testing.T) {
	t.Helper()
	if !torch.HasBackend("gloo") {
		if os.Getenv("CI") == "true" {
			t.Fatal("the shim was built without Gloo: install libgloo-dev and rebuild it")
		}
		t.Skip("the shim was built without Gloo (install libgloo-dev and rebuild it)")
	}
}

// runRanks runs scenario on world ranks and fails the test unless every rank passes.
func runRanks(t *testing.T, scenario string, world int) {
	t.Helper()
	needGloo(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	procs := startRanks(ctx, t, scenario, world)
	for r, p := range procs {
		<-p.done
		if p.err != nil {
			t.Errorf("rank %d of %d: %v\n%s", r, world, p.err, p.output())
		}
	}
}

// TestDistRank is one rank of a multi-process test; it does nothing unless started by
// startRanks.
func TestDistRank(t *testing.T) {
	scenario := os.Getenv("GOCLIP_DIST_SCENARIO")
	if scenario == "" {
		t.Skip("a rank of the distributed tests, started by them")
	}
	if err := torch.SetThreads(1); err != nil {
		t.Fatal(err)
	}
	rv, err := torch.EnvRendezvous()
	if err != nil {
		t.Fatal(err)
	}
	timeout := 10 * time.Second
	if v := os.Getenv("GOCLIP_DIST_TIMEOUT"); v != "" {
		if timeout, err = time.ParseDuration(v); err != nil {
			t.Fatal(err)
		}
	}
	pg, err := rv.NewProcessGroup("gloo", timeout)
	if err != nil {
		t.Fatal(err)
	}
	defer pg.Close()
	switch scenario {
	case "collectives":
		rankCollectives(t, pg)
	case "gather-grad":
		rankGatherWithGrad(t, pg)
	case "peer-dies", "peer-hangs":
		rankPeerFails(t, pg)
	default:
		t.Fatalf("unknown scenario %q", scenario)
	}
}

func wantValues(t *testing.T, what string, got []float64, want []float64) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d values %v, want %d %v", what, len(got), got, len(want), want)
	}
	for i := range got {
		if math.Abs(got[i]-want[i]) > 1e-9*math.Max(1, math.Abs(want[i])) {
			t.Fatalf("%s: got %v, want %v", what, got, want)
		}
	}
}

func rankCollectives(t *testing.T, pg *torch.ProcessGroup) {
	r, w := float64(pg.Rank()), float64(pg.World())
	tri := w * (w + 1) / 2 // sum over ranks of (rank+1)
	base := torch.Live()
	scope := torch.NewScope()

	// all_reduce (sum) of one tensor: [r+1, 10(r+1)] -> [tri, 10 tri].
	a := torch.FromFloat32([]float32{float32(r + 1), float32(10 * (r + 1))}, 2)
	if err := pg.AllReduce(a); err != nil {
		t.Fatal(err)
	}
	wantValues(t, "all_reduce one", a.Float64s(), []float64{tri, 10 * tri})

	// several tensors, mixed dtypes, one not contiguous: reduced through flat buffers.
	b := torch.FromFloat32([]float32{1, 2, 3, 4}, 2, 2).MulScalar(r + 1)       // [2, 2] f32
	c := torch.FromFloat64([]float64{0.5, -1, r}, 3)                           // [3] f64
	d := torch.FromFloat32([]float32{1, 2, 3, 4, 5, 6}, 2, 3).MulScalar(r).T() // [3, 2] strided
	e := torch.FromInt64([]int64{int64(r) * 7}, 1)                             // [1] i64
	if err := pg.AllReduce(b, c, d, e); err != nil {
		t.Fatal(err)
	}
	wantValues(t, "all_reduce f32", b.Float64s(), []float64{tri, 2 * tri, 3 * tri, 4 * tri})
	sr := w * (w - 1) / 2 // sum over ranks of rank
	wantValues(t, "all_reduce f64", c.Float64s(), []float64{0.5 * w, -w, sr})
	wantValues(t, "all_reduce strided", d.Float64s(), []float64{sr, 4 * sr, 2 * sr, 5 * sr, 3 * sr, 6 * sr})
	wantValues(t, "all_reduce i64", e.Float64s(), []float64{7 * sr})

	// avg, max, min.
	f := torch.FromFloat32([]float32{float32(r), float32(-r)}, 2)
	g := f.Clone()
	h := f.Clone()
	for _, x := range []struct {
		op torch.ReduceOp
		t  *torch.Tensor
	}{{torch.ReduceAvg, f}, {torch.ReduceMax, g}, {torch.ReduceMin, h}} {
		if err := pg.AllReduceOp(x.op, x.t); err != nil {
			t.Fatal(err)
		}
	}
	wantValues(t, "all_reduce avg", f.Float64s(), []float64{sr / w, -sr / w})
	wantValues(t, "all_reduce max", g.Float64s(), []float64{w - 1, 0})
	wantValues(t, "all_reduce min", h.Float64s(), []float64{0, -(w - 1)})

	// all_gather: rank r gives r+1 rows [r, 10r + j] -> rows of every rank in order.
	rows := int(r) + 1
	vals := make([]float32, 0, 2*rows)
	for j := 0; j < rows; j++ {
		vals = append(vals, float32(r), float32(10*r)+float32(j))
	}
	all, err := pg.AllGather(torch.FromFloat32(vals, int64(rows), 2))
	if err != nil {
		t.Fatal(err)
	}
	var want []float64
	for q := 0; q < pg.World(); q++ {
		for j := 0; j <= q; j++ {
			want = append(want, float64(q), float64(10*q+j))
		}
	}
	if s := all.Shape(); len(s) != 2 || s[0] != int64(tri) || s[1] != 2 {
		t.Fatalf("all_gather shape %v, want [%v 2]", s, tri)
	}
	wantValues(t, "all_gather", all.Float64s(), want)

	// broadcast from the last rank, into a strided view too.
	k := torch.FromFloat64([]float64{r, r + 0.5}, 2)
	m := torch.FromFloat64([]float64{r, 2 * r, 3 * r, 4 * r}, 2, 2).T()
	for _, x := range []*torch.Tensor{k, m} {
		if err := pg.Broadcast(x, pg.World()-1); err != nil {
			t.Fatal(err)
		}
	}
	wantValues(t, "broadcast", k.Float64s(), []float64{w - 1, w - 0.5})
	wantValues(t, "broadcast strided", m.Float64s(), []float64{w - 1, 3 * (w - 1), 2 * (w - 1), 4 * (w - 1)})
	if err := pg.Broadcast(k, pg.World()); err == nil {
		t.Fatal("broadcast from a root outside the world succeeded")
	}

	if err := pg.Barrier(); err != nil {
		t.Fatal(err)
	}
	scope.Close()
	if n := torch.Live() - base; n != 0 {
		t.Fatalf("%d tensors leaked", n)
	}
}

// rankGatherWithGrad: rank r holds x_r [r+1, 3] (uneven rows). Forward: the
// concatenation in rank order. Loss on rank r: (r+1)·sum(X²) + sum(X·C) over the gathered
// X with a fixed C. The gradient of the sum of all ranks' losses with respect to x_r is
// (W(W+1)) x_r + W C_r, where C_r is C's rows of rank r.
func rankGatherWithGrad(t *testing.T, pg *torch.ProcessGroup) {
	r, w := pg.Rank(), pg.World()
	base := torch.Live()
	scope := torch.NewScope()
	off := r * (r + 1) / 2 // rows before rank r
	rows := r + 1
	n := w * (w + 1) / 2 // all rows
	xv := func(q, i, j int) float64 { return float64(q) - 0.25*float64(i) + 0.1*float64(j) }
	var mine, all, cv []float64
	for q := 0; q < w; q++ {
		for i := 0; i <= q; i++ {
			for j := 0; j < 3; j++ {
				all = append(all, xv(q, i, j))
				if q == r {
					mine = append(mine, xv(q, i, j))
				}
			}
		}
	}
	for i := 0; i < n*3; i++ {
		cv = append(cv, float64(i%7)-2)
	}
	x := torch.FromFloat64(mine, int64(rows), 3).SetRequiresGrad(true)
	cm := torch.FromFloat64(cv, int64(n), 3)
	X := pg.GatherWithGrad(x)
	wantValues(t, "gather_with_grad forward", X.Float64s(), all)
	if !X.RequiresGrad() {
		t.Fatal("gathered tensor does not require grad")
	}
	loss := X.Square().Sum(false).MulScalar(float64(r + 1)).Add(X.Mul(cm).Sum(false))
	loss.Backward()
	grad := x.Grad()
	if grad == nil {
		t.Fatal("no gradient reached x")
	}
	var want []float64
	for i := 0; i < rows; i++ {
		for j := 0; j < 3; j++ {
			want = append(want, float64(w*(w+1))*mine[i*3+j]+float64(w)*cv[(off+i)*3+j])
		}
	}
	wantValues(t, "gather_with_grad backward", grad.Float64s(), want)
	scope.Close()
	x.Free()
	if d := torch.Live() - base; d != 0 {
		t.Fatalf("%d tensors leaked", d)
	}
}

// rankPeerFails: after a barrier, rank 0 all-reduces while rank 1 never does (it dies,
// or hangs). Rank 0 must fail with an error naming the operation and its rank.
func rankPeerFails(t *testing.T, pg *torch.ProcessGroup) {
	if err := pg.Barrier(); err != nil {
		t.Fatal(err)
	}
	if pg.Rank() != 0 {
		fmt.Println("READY")
		time.Sleep(time.Minute) // killed by the test
		return
	}
	x := torch.FromFloat32([]float32{1, 2, 3}, 3)
	defer x.Free()
	start := time.Now()
	err := pg.AllReduce(x)
	fmt.Printf("ELAPSED %.3f\n", time.Since(start).Seconds())
	if err == nil {
		t.Fatal("all_reduce with a failed peer succeeded")
	}
	fmt.Printf("ERROR %v\n", err)
}

func TestCollectives(t *testing.T) {
	for _, w := range []int{2, 3} {
		t.Run(fmt.Sprintf("world%d", w), func(t *testing.T) { runRanks(t, "collectives", w) })
	}
}

func TestGatherWithGrad(t *testing.T) {
	for _, w := range []int{2, 3} {
		t.Run(fmt.Sprintf("world%d", w), func(t *testing.T) { runRanks(t, "gather-grad", w) })
	}
}

// TestPeerFailure: a dead peer (killed mid-collective) and a hung one both end the
// surviving rank's collective with an error within the timeout, never a hang.
func TestPeerFailure(t *testing.T) {
	needGloo(t)
	const timeout = 5 * time.Second
	for _, c := range []struct {
		scenario string
		kill     bool // kill rank 1 once it is ready; else leave it hanging
	}{{"peer-dies", true}, {"peer-hangs", false}} {
		t.Run(c.scenario, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			procs := startRanks(ctx, t, c.scenario, 2, "GOCLIP_DIST_TIMEOUT="+timeout.String())
			defer func() {
				procs[1].cmd.Process.Kill()
				<-procs[1].done
			}()
			select {
			case <-procs[1].ready:
			case <-procs[1].done:
				t.Fatalf("rank 1 ended early: %v\n%s", procs[1].err, procs[1].output())
			}
			if c.kill {
				time.Sleep(200 * time.Millisecond) // let rank 0 enter the all_reduce
				procs[1].cmd.Process.Kill()
			}
			began := time.Now()
			<-procs[0].done
			waited := time.Since(began)
			out := procs[0].output()
			if procs[0].err != nil {
				t.Fatalf("rank 0: %v\n%s", procs[0].err, out)
			}
			var elapsed float64
			var msg string
			for _, l := range strings.Split(out, "\n") {
				if v, ok := strings.CutPrefix(l, "ELAPSED "); ok {
					elapsed, _ = strconv.ParseFloat(v, 64)
				}
				if v, ok := strings.CutPrefix(l, "ERROR "); ok {
					msg = v
				}
			}
			t.Logf("rank 0 failed after %.2fs (process gone %.2fs after the kill/ready): %s", elapsed, waited.Seconds(), msg)
			if !strings.Contains(msg, "all_reduce (rank 0 of 2, gloo") {
				t.Errorf("error %q does not name the operation and rank", msg)
			}
			if elapsed > timeout.Seconds()+2 {
				t.Errorf("rank 0 took %.2fs to fail; the timeout is %v", elapsed, timeout)
			}
		})
	}
}

func TestRendezvousTimeout(t *testing.T) {
	needGloo(t)
	start := time.Now()
	pg, err := torch.NewProcessGroup("gloo", 0, 2, "127.0.0.1", freePort(t), time.Second)
	if err == nil {
		pg.Close()
		t.Fatal("rendezvous without the other rank succeeded")
	}
	t.Logf("after %.2fs: %v", time.Since(start).Seconds(), err)
	if time.Since(start) > 10*time.Second {
		t.Errorf("rendezvous took %v to time out after 1s", time.Since(start))
	}
	if _, err := torch.NewProcessGroup("mpi", 0, 1, "127.0.0.1", 1, time.Second); err == nil {
		t.Error("unknown backend accepted")
	}
}

func TestEnvRendezvous(t *testing.T) {
	for _, k := range []string{"RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"} {
		t.Setenv(k, "")
		os.Unsetenv(k)
	}
	r, err := torch.EnvRendezvous()
	if err != nil || r.FromEnv || r.World != 1 || r.Rank != 0 {
		t.Fatalf("no environment: %+v, %v", r, err)
	}
	set := func(kv ...string) {
		for i := 0; i < len(kv); i += 2 {
			t.Setenv(kv[i], kv[i+1])
		}
	}
	set("WORLD_SIZE", "8", "RANK", "5", "LOCAL_RANK", "1", "MASTER_ADDR", "node0", "MASTER_PORT", "29400")
	r, err = torch.EnvRendezvous()
	want := torch.Rendezvous{Rank: 5, World: 8, LocalRank: 1, Addr: "node0", Port: 29400, FromEnv: true}
	if err != nil || r != want {
		t.Fatalf("torchrun environment: %+v, %v; want %+v", r, err, want)
	}
	for _, bad := range [][]string{{"RANK", "8"}, {"RANK", "x"}, {"MASTER_PORT", "70000"}, {"MASTER_ADDR", ""}} {
		set("RANK", "5", "MASTER_PORT", "29400", "MASTER_ADDR", "node0")
		set(bad...)
		if _, err := torch.EnvRendezvous(); err == nil {
			t.Errorf("%s=%q accepted", bad[0], bad[1])
		}
	}
}
