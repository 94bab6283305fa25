#!/usr/bin/env python3
"""Writes crates/attend-models/tests/golden/smollm2.json: the outside reference for attend's
Llama implementation, from transformers loading the same GGUF file (dequantised to float32).

    pip install torch transformers gguf accelerate
    cargo run --release -- fetch smollm2
    python3 scripts/golden_smollm2.py "$(cargo run --release -q -- fetch smollm2)"

For each raw prompt (no chat template): the prompt ids, the top-5 next-token ids with their
logits, and the greedy continuation of 24 tokens with each step's top-1 / top-2 logit margin
(from the reference's own logits along its own greedy path). Extra texts check token ids only.
"""
import json
import os
import sys

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

PROMPTS = [
    "The animal didn't cross the road because it was tired. It",
    "The capital of France is",
    "def fibonacci(n):\n    ",
    "Once upon a time, in a small village, there lived",
    "In 2024, the price rose by 15% to 3.50 euros and",
]
TOKEN_TEXTS = [
    "Café déjà vu: naïve façade, résumé and Ünïcödé accents.",
    "東京は日本の首都です。北京是中国的首都。",
    "I love pizza 🍕🍕 and rockets 🚀!!! :-)",
    "<|im_start|>user\nHi there<|im_end|>\n",
    "Numbers 1234567 and 3.14159, spaces   and\ttabs\n\nnew lines",
    "",
]
STEPS = 24


def main():
    gguf = sys.argv[1]
    out = sys.argv[2] if len(sys.argv) > 2 else "crates/attend-models/tests/golden/smollm2.json"
    torch.set_num_threads(2)
    folder, name = os.path.dirname(gguf), os.path.basename(gguf)
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, torch_dtype=torch.float32).eval()
    records = []
    for p in PROMPTS:
        ids = tok(p, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            first = model(torch.tensor([ids])).logits[0, -1]
            top = torch.topk(first, 5)
            gen = model.generate(
                torch.tensor([ids]),
                attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                max_new_tokens=STEPS,
                min_new_tokens=STEPS,
                do_sample=False,
                output_logits=True,
                return_dict_in_generate=True,
                pad_token_id=tok.eos_token_id,
            )
        cont = gen.sequences[0, len(ids):].tolist()
        margins = []
        for step_logits in gen.logits:
            t2 = torch.topk(step_logits[0], 2).values
            margins.append(float(t2[0] - t2[1]))
        records.append({
            "prompt": p,
            "ids": ids,
            "top5_ids": top.indices.tolist(),
            "top5_logits": [float(v) for v in top.values],
            "greedy": cont,
            "margins": margins,
        })
        print(repr(p), "->", repr(tok.decode(cont)), "min margin %.3f" % min(margins), file=sys.stderr)
    texts = [{"text": t, "ids": tok(t, add_special_tokens=False)["input_ids"]} for t in TOKEN_TEXTS]
    import transformers
    with open(out, "w") as f:
        json.dump({
            "made_by": "scripts/golden_smollm2.py, transformers %s, torch %s, float32 on CPU"
                       % (transformers.__version__, torch.__version__),
            "file": name,
            "prompts": records,
            "texts": texts,
        }, f, indent=1)
    print("wrote", out, file=sys.stderr)


if __name__ == "__main__":
    main()
