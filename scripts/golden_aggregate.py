#!/usr/bin/env python3
"""Writes crates/attend-models/tests/golden/aggregate.json: an outside reference for what the
viewer shows next to the attention (attend_models::trace::aggregate), from transformers
(PyTorch, eager attention) on all-MiniLM-L6-v2 and NumPy written from the papers:

- attention rollout (Abnar & Zuidema 2020): A_l = ½·mean_h(att_l) + ½·I, R_0 = A_0,
  R_l = A_l · R_{l−1};
- value norms (Kobayashi et al. 2020): ‖f_h(x_j)‖ with f_h(x_j) = W_O[:, h] · v_j^h, where v
  is the output of each layer's `attention.self.value` (captured with a forward hook, bias
  included) and W_O is `attention.output.dense.weight` (its bias excluded);
- per-head statistics: mean row entropy in bits, mean weight on the previous token (queries
  1..), mean Σ_k α_qk·|q − k|.

    pip install torch transformers numpy
    python3 scripts/golden_aggregate.py "$(cargo run --release -q -- fetch minilm)"
"""
import json
import sys

import numpy as np
import torch
from transformers import AutoModel, AutoTokenizer

TEXTS = [
    "The animal didn't cross the road because it was tired",
    "Tokenization splits unbelievably long words",
]


def rollout(att):
    n = att.shape[-1]
    out, r = [], None
    for a in att:  # [heads, n, n]
        a = 0.5 * a.mean(axis=0) + 0.5 * np.eye(n)
        r = a if r is None else a @ r
        out.append(r)
    return np.stack(out)


def stats(att):
    rows = []
    n = att.shape[-1]
    for l, layer in enumerate(att):
        for h, m in enumerate(layer):
            with np.errstate(divide="ignore", invalid="ignore"):
                ent = -np.where(m > 0, m * np.log2(m), 0.0).sum(axis=1).mean()
            prev = np.mean([m[q, q - 1] for q in range(1, n)]) if n > 1 else 0.0
            dist = (m * np.abs(np.arange(n)[:, None] - np.arange(n)[None, :])).sum(axis=1).mean()
            rows.append({"layer": l, "head": h, "entropy": float(ent), "prev_token": float(prev), "distance": float(dist)})
    return rows


def main():
    path = sys.argv[1]
    out = sys.argv[2] if len(sys.argv) > 2 else "crates/attend-models/tests/golden/aggregate.json"
    torch.set_num_threads(2)
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path, attn_implementation="eager").eval()
    cfg = model.config
    nh, hd = cfg.num_attention_heads, cfg.hidden_size
    dh = hd // nh
    values = {}
    for l, layer in enumerate(model.encoder.layer):
        layer.attention.self.value.register_forward_hook(lambda m, i, o, l=l: values.__setitem__(l, o.detach()))
    cases = []
    for text in TEXTS:
        enc = tok(text, return_tensors="pt")
        with torch.no_grad():
            res = model(**enc, output_attentions=True)
        att = np.stack([a[0].double().numpy() for a in res.attentions])  # [layer, head, n, n]
        norms = []
        for l, layer in enumerate(model.encoder.layer):
            v = values[l][0].double().numpy()  # [n, hidden]
            wo = layer.attention.output.dense.weight.detach().double().numpy()  # [out, in]
            per_head = []
            for h in range(nh):
                f = v[:, h * dh : (h + 1) * dh] @ wo[:, h * dh : (h + 1) * dh].T  # [n, out]
                per_head.append(np.linalg.norm(f, axis=1).tolist())
            norms.append(per_head)
        cases.append({
            "text": text,
            "ids": enc["input_ids"][0].tolist(),
            "rollout": rollout(att).tolist(),
            "value_norms": norms,
            "stats": stats(att),
        })
    meta = {"made_with": f"torch {torch.__version__}, transformers {__import__('transformers').__version__}, "
            "scripts/golden_aggregate.py", "model": "sentence-transformers/all-MiniLM-L6-v2"}
    with open(out, "w") as f:
        json.dump({"meta": meta, "cases": cases}, f)
        f.write("\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
