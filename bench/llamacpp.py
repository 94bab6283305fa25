#!/usr/bin/env python3
"""llama.cpp (through llama-cpp-python) on the same GGUF file and the same shapes as
`attend bench --case NAME-pp128 --case NAME-pp512 --case NAME-tg64 --case NAME-tg64-d2048`
(NAME: smollm2 or gemma3), printed as the same JSON lines (tokens/s).

    pip install llama-cpp-python        # compiles llama.cpp from source: slow on 2 cores, once
    python3 bench/llamacpp.py "$(cargo run --release -q -- fetch smollm2)" --threads 2
    python3 bench/llamacpp.py "$(cargo run --release -q -- fetch gemma3)" --name gemma3

pp N: N prompt tokens in one batch into an empty cache. tg 64: 64 tokens one at a time after a
one-token prompt; at depth 2048: after 2048 prompt tokens. Token ids are the same deterministic
sequence attend uses (bench::lm_tokens). Exits 0 with a note when llama-cpp-python is missing.
"""
import argparse
import glob
import json
import os
import statistics
import sys
import time


def tokens(n):
    # the same as attend's bench::lm_tokens
    return [(i * 7919 + 13) % 49000 + 100 for i in range(n)]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model", help="the .gguf file or the folder holding it")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--name", default="smollm2", help="the case names' prefix (smollm2, gemma3)")
    a = ap.parse_args()
    try:
        import llama_cpp
    except ImportError:
        print("llama-cpp-python is not installed; skipping", file=sys.stderr)
        return
    path = a.model
    if os.path.isdir(path):
        path = glob.glob(os.path.join(path, "*.gguf"))[0]
    llm = llama_cpp.Llama(model_path=path, n_ctx=4096, n_batch=512, n_ubatch=512,
                          n_threads=a.threads, n_threads_batch=a.threads, verbose=False)

    def pp(n):
        llm.reset()
        llm._ctx.kv_cache_clear() if hasattr(llm._ctx, "kv_cache_clear") else None
        t = time.perf_counter()
        llm.eval(tokens(n))
        return time.perf_counter() - t

    def tg(depth, n=64):
        llm.reset()
        llm._ctx.kv_cache_clear() if hasattr(llm._ctx, "kv_cache_clear") else None
        llm.eval(tokens(max(depth, 1)))
        seq = tokens(depth + n)[depth:]
        t = time.perf_counter()
        for tok in seq:
            llm.eval([tok])
        return time.perf_counter() - t

    p = a.name
    cases = [(p + "-pp128", lambda: pp(128), 128), (p + "-pp512", lambda: pp(512), 512),
             (p + "-tg64", lambda: tg(1), 64), (p + "-tg64-d2048", lambda: tg(2048), 64)]
    for name, fn, n in cases:
        fn()  # warm-up
        times = [fn() for _ in range(a.runs)]
        med = statistics.median(times)
        print(json.dumps({"case": name, "impl": "llama.cpp %s" % llama_cpp.__version__,
                          "threads": a.threads, "median_ms": round(med * 1e3, 3),
                          "min_ms": round(min(times) * 1e3, 3), "max_ms": round(max(times) * 1e3, 3),
                          "tokens_per_s": round(n / med, 2)}), flush=True)


if __name__ == "__main__":
    main()
