#!/usr/bin/env python3
"""PyTorch's scaled_dot_product_attention on the standard cases of BENCH.md, printed as the
same JSON lines as `attend bench --format json`, so that both can be run side by side:

    python3 bench/torch_sdpa.py --threads 2 > torch.jsonl
    cargo run --release -p attend-cli -- bench --threads 2 --format json > attend.jsonl

Needs `pip install torch`; exits 0 with a note on stderr when PyTorch is not installed.
FLOPs are counted as in BENCH.md (4·d·unmasked pairs; backward 2.5×). PyTorch's is_causal is
top-left aligned; every causal case here has s_q == s_kv (or s_q == 1, where the single query
is the last position and sees every key, so no mask is passed).
"""
import argparse
import json
import statistics
import sys
import time

try:
    import torch
    import torch.nn.functional as F
except ImportError:
    print("torch_sdpa.py: PyTorch is not installed (pip install torch); nothing to measure", file=sys.stderr)
    sys.exit(0)

# name, b, h, h_kv, s_q, s_kv, d, mask, backward
CASES = [
    ("minilm-batch", 64, 12, 12, 32, 32, 32, "padding", False),
    ("enc-512", 1, 12, 12, 512, 512, 64, "none", False),
    ("enc-4096", 1, 12, 12, 4096, 4096, 64, "none", False),
    ("causal-4096", 1, 12, 12, 4096, 4096, 64, "causal", False),
    ("gqa-2048", 1, 9, 3, 2048, 2048, 64, "causal", False),
    ("decode-8192", 1, 9, 3, 1, 8192, 64, "causal", False),
    ("long-16384", 1, 12, 12, 16384, 16384, 64, "causal", False),
    ("bwd-2048", 1, 12, 12, 2048, 2048, 64, "none", True),
    ("bwd-causal-2048", 1, 12, 12, 2048, 2048, 64, "causal", True),
]


def lengths(b, s_kv, lo=12):
    # the same spread as attend's cases.rs: lo + (b * 7919) % (s_kv - lo + 1)
    return [lo + (i * 7919) % (s_kv - lo + 1) for i in range(b)]


def timeit(fn, quick, budget=3.0):
    if not quick:
        fn()
    runs, start = [], time.perf_counter()
    while True:
        t = time.perf_counter()
        fn()
        runs.append((time.perf_counter() - t) * 1e3)
        if quick or len(runs) >= 15 or (len(runs) >= 3 and time.perf_counter() - start > budget):
            break
    return statistics.median(runs), min(runs), max(runs)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--case", action="append", default=[])
    ap.add_argument("--quick", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    for name, b, h, hkv, sq, skv, d, mask, bwd in CASES:
        if a.case and name not in a.case:
            continue
        q = torch.rand(b, h, sq, d) * 2 - 1
        k = torch.rand(b, hkv, skv, d) * 2 - 1
        v = torch.rand(b, hkv, skv, d) * 2 - 1
        kw = {"enable_gqa": True} if hkv != h else {}
        attn_mask, causal = None, False
        if mask == "padding":
            lens = lengths(b, skv)
            attn_mask = (torch.arange(skv)[None, :] < torch.tensor(lens)[:, None])[:, None, None, :]
            pairs = sum(lens) * sq * h
        elif mask == "causal":
            causal = sq > 1
            pairs = (sq * (sq + 1) // 2 if sq > 1 else skv) * h * b
        else:
            pairs = sq * skv * h * b
        flops = 4 * d * pairs * (2.5 if bwd else 1)
        rec = {"case": name, "threads": a.threads}
        if bwd:
            q.requires_grad_(True), k.requires_grad_(True), v.requires_grad_(True)
            out = F.scaled_dot_product_attention(q, k, v, is_causal=causal, **kw)
            g = torch.rand_like(out)

            def step():
                q.grad = k.grad = v.grad = None
                out.backward(g, retain_graph=True)

            med, lo, hi = timeit(step, a.quick)
            rec["impl"] = "torch-sdpa-backward"
        else:
            with torch.no_grad():
                med, lo, hi = timeit(
                    lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=causal, **kw),
                    a.quick,
                )
            rec["impl"] = "torch-sdpa"
        rec.update({"median_ms": round(med, 3), "min_ms": round(lo, 3), "max_ms": round(hi, 3)})
        if sq == 1:
            rec["gbps"] = round(2 * b * hkv * skv * d * 4 / med / 1e6, 3)
        else:
            rec["gflops"] = round(flops / med / 1e6, 3)
        rec["torch"] = torch.__version__
        print(json.dumps(rec), flush=True)


if __name__ == "__main__":
    main()
