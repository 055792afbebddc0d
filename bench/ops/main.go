// Command ops measures goclip's per-operation overhead on the CPU: a 1-element add, a
// 64x64 linear forward+backward and a 1M-element AdamW step. bench/peer/ops.py does the
// same work in Python PyTorch; bench/run.sh runs both and writes the table.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"sort"
	"time"

	"goclip/torch"
)

// median runs f in rounds of n calls and returns the median time per call in µs.
func median(rounds, n int, f func()) float64 {
	ts := make([]float64, rounds)
	for r := range ts {
		start := time.Now()
		for i := 0; i < n; i++ {
			f()
		}
		ts[r] = float64(time.Since(start).Nanoseconds()) / 1e3 / float64(n)
	}
	sort.Float64s(ts)
	return ts[rounds/2]
}

func main() {
	threads := flag.Int("threads", 2, "intra-op threads")
	flag.Parse()
	if err := torch.SetThreads(*threads); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	torch.ManualSeed(0)
	res := map[string]float64{}

	a := torch.Ones([]int64{1}, torch.Float32, torch.CPU)
	b := torch.Ones([]int64{1}, torch.Float32, torch.CPU)
	res["add_1_us"] = median(21, 20000, func() { a.Add(b).Free() })

	x := torch.Randn([]int64{64, 64}, torch.Float32, torch.CPU)
	w := torch.Randn([]int64{64, 64}, torch.Float32, torch.CPU).SetRequiresGrad(true)
	bias := torch.Zeros([]int64{64}, torch.Float32, torch.CPU).SetRequiresGrad(true)
	res["linear_64_fwd_bwd_us"] = median(11, 500, func() {
		torch.WithScope(func() { torch.Linear(x, w, bias).Sum(false).Backward() })
		w.ZeroGrad()
		bias.ZeroGrad()
	})

	p := torch.Randn([]int64{1 << 20}, torch.Float32, torch.CPU).SetRequiresGrad(true)
	p.SetGrad(torch.Randn([]int64{1 << 20}, torch.Float32, torch.CPU))
	opt := torch.NewAdamW([][]*torch.Tensor{{p}}, []float64{0.01}, 0.9, 0.999, 1e-8)
	res["adamw_1m_us"] = median(7, 10, func() {
		if err := opt.Update(1e-3, nil); err != nil {
			panic(err)
		}
	})
	json.NewEncoder(os.Stdout).Encode(res)
}
