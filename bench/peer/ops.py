"""Python PyTorch peer of bench/ops: the same three operations, timed the same way."""
import argparse, json, time
import torch


def median(rounds, n, f):
    ts = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(n):
            f()
        ts.append((time.perf_counter() - start) * 1e6 / n)
    ts.sort()
    return ts[rounds // 2]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    res = {}
    a, b = torch.ones(1), torch.ones(1)
    res["add_1_us"] = median(21, 20000, lambda: a + b)

    x = torch.randn(64, 64)
    lin = torch.nn.Linear(64, 64)

    def lin_step():
        lin(x).sum().backward()
        lin.zero_grad(set_to_none=True)

    res["linear_64_fwd_bwd_us"] = median(11, 500, lin_step)

    p = torch.nn.Parameter(torch.randn(1 << 20))
    p.grad = torch.randn(1 << 20)
    opt = torch.optim.AdamW([p], lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01)
    res["adamw_1m_us"] = median(7, 10, opt.step)
    res["torch"] = torch.__version__
    print(json.dumps(res))


if __name__ == "__main__":
    main()
