"""Peak memory and time of `attend explain` on decoders, to an HTML page: every layer × head ×
query × key of a 512- and a 2 048-token prompt, for SmolLM2 (30 layers × 9 heads) and Gemma 3
(18 layers × 4 heads), each run a fresh `attend` process whose peak resident memory is read
from the kernel (wait4's rusage), with the size of the page it wrote.

    python bench/explain_memory.py [--attend target/release/attend] [--models smollm2,gemma3]

Needs the Python package (`pip install .`) to count tokens exactly as the model does. Budgets
(the explain-decoders issue): 512 tokens ≤ 1 GiB, 2 048 tokens ≤ 3 GiB, the page within
--page-mib (40 MiB by default).
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import attend

PARAGRAPH = (
    "The animal didn't cross the road because it was tired. A transformer turns tokens into "
    "embeddings, then lets every token ask of every other how relevant it is right now. "
    "Each embedding becomes a query, a key and a value; a softmax turns the scores into "
    "weights, and the weighted mix of the values is the token's new meaning. "
)


def text_of(lm, tokens):
    """A text of exactly `tokens` tokens (or one fewer) in `lm`'s tokenizer."""
    words = (PARAGRAPH * (tokens // 20 + 10)).split(" ")
    lo, hi = 1, len(words)
    while lo < hi:  # the longest prefix of words within the budget
        mid = (lo + hi + 1) // 2
        if len(lm._m.tokenize(" ".join(words[:mid]))) <= tokens:
            lo = mid
        else:
            hi = mid - 1
    t = " ".join(words[:lo])
    return t, len(lm._m.tokenize(t))


def run(binary, model, text, out):
    t0 = time.perf_counter()
    p = subprocess.Popen([binary, "explain", "--model", model, "-", "-o", out],
                         stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    p.stdin.write(text.encode())
    p.stdin.close()
    _, status, usage = os.wait4(p.pid, 0)
    seconds = time.perf_counter() - t0
    err = p.stderr.read().decode()
    if status != 0:
        raise SystemExit(f"{model}: attend explain failed: {err}")
    return usage.ru_maxrss / 1024, seconds


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--attend", default=os.path.join(os.path.dirname(__file__), "..", "target", "release", "attend"))
    ap.add_argument("--models", default="smollm2,gemma3")
    ap.add_argument("--sizes", default="512,2048")
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="attend-explain-mem-")
    for model in args.models.split(","):
        lm = attend.load(model)
        for size in (int(s) for s in args.sizes.split(",")):
            text, n = text_of(lm, size)
            page = os.path.join(work, f"{model}-{size}.html")
            peak, seconds = run(args.attend, model, text, page)
            row = {"model": model, "tokens": n, "layers": lm.layers, "heads": lm.heads,
                   "peak_rss_mib": round(peak, 1), "seconds": round(seconds, 2),
                   "page_mib": round(os.path.getsize(page) / (1 << 20), 2)}
            with open(page, encoding="utf-8") as f:
                row["rows_cut"] = "\"encoding\":\"top\"" in f.read()
            print(json.dumps(row), flush=True)
            os.remove(page)
    os.rmdir(work)


if __name__ == "__main__":
    main()
