#!/usr/bin/env python3
"""sentence-transformers on the same MiniLM folder and the same 512 sentences as
`attend bench --case minilm-embed --case minilm-one`, printed as the same JSON lines.

    python3 bench/st_embed.py "$(cargo run --release -q -- fetch minilm)" --threads 2

Needs `pip install torch sentence-transformers`; exits 0 with a note when they are missing.
"""
import argparse
import json
import statistics
import sys
import time

WORDS = ("the model attends to every token in a sentence and learns which words matter most for "
         "meaning while reading long texts about animals roads cities music science history quietly "
         "today because it was tired wide bright small people often say that weather changes quickly "
         "near old rivers under clear skies").split()
assert len(WORDS) == 50


def sentences(n):
    # the same as attend's bench::sentences
    return [" ".join(WORDS[(i * 31 + j * 17 + j * j) % 50] for j in range(12 + (i * 7) % 9)) for i in range(n)]


def timeit(fn, budget):
    fn()
    runs, start = [], time.perf_counter()
    while len(runs) < 3 or (time.perf_counter() - start < budget and len(runs) < 15):
        t = time.perf_counter()
        fn()
        runs.append((time.perf_counter() - t) * 1e3)
    return statistics.median(runs), min(runs), max(runs)


def arguments():
    """The model folder and --threads, as every embedding peer script takes them."""
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--threads", type=int, default=2)
    return ap.parse_args()


def main():
    a = arguments()
    try:
        import torch
        from sentence_transformers import SentenceTransformer
    except ImportError:
        print("st_embed.py: torch / sentence-transformers not installed; nothing to measure", file=sys.stderr)
        return
    torch.set_num_threads(a.threads)
    st = SentenceTransformer(a.model, device="cpu")
    texts = sentences(512)
    med, lo, hi = timeit(lambda: st.encode(texts, batch_size=64), 5.0)
    print(json.dumps({"case": "minilm-embed", "impl": "sentence-transformers", "threads": a.threads,
                      "median_ms": round(med, 3), "min_ms": round(lo, 3), "max_ms": round(hi, 3),
                      "sentences_per_s": round(512 / med * 1e3, 3)}), flush=True)
    one = "The animal didn't cross the road because it was tired"
    med, lo, hi = timeit(lambda: st.encode([one]), 2.0)
    print(json.dumps({"case": "minilm-one", "impl": "sentence-transformers", "threads": a.threads,
                      "median_ms": round(med, 3), "min_ms": round(lo, 3), "max_ms": round(hi, 3)}), flush=True)


if __name__ == "__main__":
    main()
