#!/usr/bin/env python3
"""transformers with hooks on the case `attend bench --case MODEL-effect-32` runs: the same GGUF
file (dequantised to float32, eager attention), the same 32 token ids (attend's `lm_tokens`),
the target the model's likeliest next token; every token knocked out (a pre-hook on each
layer's attention module removing the edges into it from every later position) and every head
zero-ablated (a pre-hook on `o_proj`), one forward each — what a notebook with hooks does.

    pip install torch transformers gguf
    python3 bench/effect_transformers.py "$(attend fetch smollm2)" --threads 2
"""
import argparse
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "scripts"))
from golden_effect import head_hook, knockout_hooks, load, logp  # noqa: E402


def lm_tokens(n):
    return [((i * 7919 + 13) % 49000 + 100) for i in range(n)]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--name", default=None)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    tok, model, name = load(a.model)
    ids = lm_tokens(a.tokens)
    n = len(ids)
    cfg = model.config
    vd = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    L, H = cfg.num_hidden_layers, cfg.num_attention_heads
    t0 = time.perf_counter()
    with torch.no_grad():
        target = [int(model(torch.tensor([ids])).logits[0, -1].argmax())]
        base, _ = logp(model, ids, n, target)
        deltas = []
        for j in range(n):
            hooks = knockout_hooks(model, [j], 0, None)
            deltas.append(logp(model, ids, n, target)[0] - base)
            for h in hooks:
                h.remove()
        for l in range(L):
            for h in range(H):
                hook = head_hook(model, l, h, vd)
                deltas.append(logp(model, ids, n, target)[0] - base)
                hook.remove()
    s = time.perf_counter() - t0
    print(json.dumps({"case": (a.name or "model") + "-effect-32", "impl": "transformers+hooks",
                      "threads": a.threads, "interventions": n + L * H, "seconds": round(s, 3),
                      "torch": torch.__version__}))


if __name__ == "__main__":
    main()
