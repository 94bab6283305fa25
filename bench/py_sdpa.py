"""attend.sdpa from Python against `attend bench` (the same kernel without Python) and, when
importable, torch's scaled_dot_product_attention, on the standard cases, in one run.

    python bench/py_sdpa.py [--repeat 5] [--cases enc-512,gqa-2048] [--attend target/release/attend]

Prints one JSON line per case: median milliseconds of each, and the ratios.
"""

import argparse
import json
import os
import statistics
import subprocess
import time

# torch's OpenMP threads spin after each op and would steal the two cores from attend's
# threads in the same process; let them sleep (set before torch is imported)
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402

import attend  # noqa: E402

# name: (b, h, h_kv, s_q, s_kv, d, mask) as crates/attend/src/cases.rs defines them
CASES = {
    "minilm-batch": (64, 12, 12, 32, 32, 32, "padding"),
    "enc-512": (1, 12, 12, 512, 512, 64, None),
    "gqa-2048": (1, 9, 3, 2048, 2048, 64, "causal"),
    "causal-4096": (1, 12, 12, 4096, 4096, 64, "causal"),
    "enc-4096": (1, 12, 12, 4096, 4096, 64, None),
    "decode-8192": (1, 9, 3, 1, 8192, 64, "causal"),
}


def interleaved_ms(fs, repeat, seconds=2.0, block=0.1):
    """Median milliseconds of each callable in `fs` (name -> f). The contenders take turns in
    blocks of back-to-back calls (about `block` seconds each, the first call of a block
    dropped as a warm-up), for at least `repeat` timed calls each and `seconds` in all: a
    neighbour's load on a shared machine then falls on every contender alike, while each call
    still runs warm, as in a loop of its own."""
    ts = {name: [] for name in fs}
    start = time.perf_counter()
    while min(len(t) for t in ts.values()) < repeat or time.perf_counter() - start < seconds:
        for name, f in fs.items():
            f()  # warm-up: threads awake, inputs in cache
            b0 = time.perf_counter()
            while True:
                t0 = time.perf_counter()
                f()
                t1 = time.perf_counter()
                ts[name].append((t1 - t0) * 1e3)
                if t1 - b0 >= block:
                    break
    return {name: statistics.median(t) for name, t in ts.items()}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--attend", default=os.path.join(os.path.dirname(__file__), "..", "target", "release", "attend"))
    args = ap.parse_args()
    try:
        import torch
        import torch.nn.functional as F
    except ImportError:
        torch = None
    # the fixed cost of a call from Python (argument checks, the array views, releasing the
    # GIL), on inputs too small for the kernel to matter
    tiny = np.ones((1, 1, 1, 16), np.float32)
    tiny_cache = attend.KVCache(1, 1, 16)
    tiny_cache.append(tiny, tiny)
    over = interleaved_ms({"sdpa": lambda: attend.sdpa(tiny, tiny, tiny), "cache": lambda: tiny_cache.attend(tiny)}, 100, seconds=0.5)
    print(json.dumps({"case": "per-call overhead", "sdpa_us": round(over["sdpa"] * 1e3, 2), "cache_us": round(over["cache"] * 1e3, 2)}), flush=True)
    rng = np.random.default_rng(0)
    for name in args.cases.split(","):
        b, h, hk, sq, skv, d, mask = CASES[name]
        q = rng.standard_normal((b, h, sq, d), dtype=np.float32)
        k = rng.standard_normal((b, hk, skv, d), dtype=np.float32)
        v = rng.standard_normal((b, hk, skv, d), dtype=np.float32)
        kw = {"enable_gqa": h != hk}
        if mask == "causal":
            kw["causal"] = "bottom_right"
        elif mask == "padding":
            # the key lengths of cases.rs (deterministic, spread over [12, s_kv])
            lengths = np.array([12 + (i * 7919) % (skv - 12 + 1) for i in range(b)])
            kw["attn_mask"] = (np.arange(skv)[None, :] < lengths[:, None])[:, None, None, :]
        row = {"case": name, "threads": attend.get_num_threads()}
        fs = {"py_ms": lambda: attend.sdpa(q, k, v, **kw)}
        if sq == 1:
            # decoding as a decoder does it: keys and values appended once to a KV cache (the
            # stateless call checks all of them for NaN on every call)
            cache = attend.KVCache(b, hk, d)
            cache.append(k, v)
            fs["py_cache_ms"] = lambda: cache.attend(q)
        if torch is not None:
            tq, tk, tv = (torch.from_numpy(x) for x in (q, k, v))
            tkw = {"enable_gqa": kw["enable_gqa"]}
            if mask == "causal" and sq == skv:
                tkw["is_causal"] = True
            elif mask == "causal":
                tkw["attn_mask"] = torch.ones(sq, skv, dtype=torch.bool).tril(skv - sq)
            elif mask == "padding":
                tkw["attn_mask"] = torch.from_numpy(kw["attn_mask"])

            def torch_call():
                with torch.no_grad():
                    F.scaled_dot_product_attention(tq, tk, tv, **tkw)

            fs["torch_ms"] = torch_call
        row.update(interleaved_ms(fs, args.repeat))
        if os.path.exists(args.attend):
            out = subprocess.run([args.attend, "bench", "--format", "json", "--case", name],
                                 capture_output=True, text=True, check=True).stdout
            fused = [json.loads(l) for l in out.splitlines() if '"fused"' in l or '"decode"' in l]
            if fused:
                row["bench_ms"] = fused[0]["median_ms"]
                row["py_over_bench"] = round(row.get("py_cache_ms", row["py_ms"]) / row["bench_ms"], 3)
        if torch is not None:
            # a decode step compared as a decoder runs it (through the cache); the stateless
            # call's ratio too
            row["torch_over_py"] = round(row["torch_ms"] / row.get("py_cache_ms", row["py_ms"]), 3)
            if sq == 1:
                row["torch_over_py_stateless"] = round(row["torch_ms"] / row["py_ms"], 3)
        print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}), flush=True)


if __name__ == "__main__":
    main()
