#!/usr/bin/env python3
"""Writes crates/attend-models/tests/golden/explain.json: the outside reference for `attend
explain` on decoders — transformers loading SmolLM2's and Gemma 3's GGUF files (dequantised to
float32, eager attention, `output_attentions=True`).

    pip install torch transformers gguf accelerate
    python3 scripts/golden_explain.py "$(attend fetch smollm2)" "$(attend fetch gemma3)"

Per model: for the seed's sentence, every layer × head × query × key of its attention and the
value norms ‖W_o[:, h] · v_j‖ of every head and token (scripts/tiny_decoders.py's
`value_norms`); for Gemma 3, a prompt longer than its 512-key window (golden_gemma3.py's
LONG), whose rows of two queries past the window are kept for every layer × head — five layers
of six must stop at the window, every sixth not. Weights are written to 7 significant digits.
"""
import json
import os
import sys

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

sys.path.insert(0, os.path.dirname(__file__))
from golden_gemma3 import LONG  # noqa: E402
from tiny_decoders import value_norms  # noqa: E402

SENTENCE = "The animal didn't cross the road because it was tired"


def r7(x):
    return float("%.7g" % x)


def load(path):
    if os.path.isdir(path):
        path = os.path.join(path, [f for f in os.listdir(path) if f.endswith(".gguf")][0])
    folder, name = os.path.dirname(path), os.path.basename(path)
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(
        folder, gguf_file=name, dtype=torch.float32, attn_implementation="eager"
    ).eval()
    return tok, model, name


def attention(model, ids):
    with torch.no_grad():
        out = model(torch.tensor([ids]), output_attentions=True)
    return [a[0] for a in out.attentions], out.logits[0, -1]


def record(model, tok, text, queries=None):
    ids = tok(text)["input_ids"]
    att, logits = attention(model, ids)
    top = torch.topk(logits, 3)
    rec = {"text": text, "ids": ids, "top3_ids": top.indices.tolist(),
           "top3_logits": [float(v) for v in top.values]}
    if queries is None:
        rec["attention"] = [[[[r7(x) for x in row] for row in a[h]] for h in range(a.shape[0])] for a in att]
        rec["value_norms"] = [[[r7(x) for x in hv] for hv in layer] for layer in value_norms(model, ids)]
    else:
        n = len(ids)
        queries = [q if q >= 0 else n + q for q in queries]
        rec["queries"] = queries
        rec["rows"] = [[[[r7(x) for x in a[h, q]] for q in queries] for h in range(a.shape[0])] for a in att]
    return rec


def main():
    smollm2, gemma3 = sys.argv[1], sys.argv[2]
    out = sys.argv[3] if len(sys.argv) > 3 else "crates/attend-models/tests/golden/explain.json"
    torch.set_num_threads(2)
    doc = {}
    tok, model, name = load(smollm2)
    doc["smollm2"] = {"file": name, "prompts": [record(model, tok, SENTENCE)]}
    print("smollm2 done", file=sys.stderr)
    tok, model, name = load(gemma3)
    window = model.config.sliding_window
    long = record(model, tok, LONG, queries=[window + 20, -1])
    doc["gemma3"] = {"file": name, "window": window,
                     "prompts": [record(model, tok, SENTENCE), long]}
    print("gemma3 done:", len(long["ids"]), "tokens in the long prompt", file=sys.stderr)
    import transformers
    doc["made_by"] = ("scripts/golden_explain.py, transformers %s, torch %s, float32, eager attention"
                      % (transformers.__version__, torch.__version__))
    with open(out, "w") as f:
        json.dump(doc, f, ensure_ascii=False)
    print("wrote", out, os.path.getsize(out) >> 10, "KiB", file=sys.stderr)


if __name__ == "__main__":
    main()
