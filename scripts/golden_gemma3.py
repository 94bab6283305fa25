#!/usr/bin/env python3
"""Writes crates/attend-models/tests/golden/gemma3.json: the outside reference for attend's
Gemma 3 implementation, from transformers loading the same GGUF file (dequantised to float32).

    pip install torch transformers gguf accelerate
    python3 scripts/golden_gemma3.py "$(cargo run --release -q -- fetch gemma3)"

For each raw prompt (BOS added, as the file asks): the prompt ids, the top-5 next-token ids
with their logits, and the greedy continuation with each step's top-1 / top-2 logit margin
(from the reference's own logits along its own greedy path). The continuation ends at the
end-of-text token when the model chooses it (it is then the last id), as a user's would; no
logits processor alters the choice, so the margins are those of the tokens chosen. One prompt is longer than the
sliding window (512), so that five layers of six see only its end. Extra texts check token ids
only (transformers' GGUF tokenizer: BPE with merges rebuilt from the vocabulary, byte fallback).
"""
import json
import os
import sys

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

# a story whose first sentence names the pet; more than 512 tokens of filler follow, then the
# question: a model that sees the whole text (no window) answers differently
LONG = (
    "My neighbour owns a parrot called Captain Biscuit. "
    + " ".join(
        f"On day {i} of the long and rainy autumn the village council met again to argue about "
        "the bridge, the school roof, the price of bread and the new bus timetable."
        for i in range(1, 26)
    )
    + " After all of that, what was the name of my neighbour's parrot? Its name was"
)
PROMPTS = [
    "The animal didn't cross the road because it was",
    "The capital of France is",
    "def fibonacci(n):\n    ",
    "Once upon a time, in a small village, there lived",
    LONG,
]
TOKEN_TEXTS = [
    "Café déjà vu: naïve façade, résumé and Ünïcödé accents.",
    "東京は日本の首都です。北京是中国的首都。",
    "I love pizza 🍕🍕 and rockets 🚀!!! :-)",
    "<start_of_turn>user\nHi there<end_of_turn>\n",
    "Numbers 1234567 and 3.14159, spaces   and\ttabs\n\nnew lines",
    "  leading spaces, trailing spaces  ",
    "fn main() {\n    let x = vec![1, 2, 3];\n    println!(\"{x:?}\");\n}\n",
    "\u0000 \u00a0 \u2028 \U0001f9ec",
    "",
]
STEPS = {LONG: 6}
DEFAULT_STEPS = 16


def main():
    gguf = sys.argv[1]
    if os.path.isdir(gguf):
        gguf = os.path.join(gguf, [f for f in os.listdir(gguf) if f.endswith(".gguf")][0])
    out = sys.argv[2] if len(sys.argv) > 2 else "crates/attend-models/tests/golden/gemma3.json"
    torch.set_num_threads(2)
    folder, name = os.path.dirname(gguf), os.path.basename(gguf)
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32).eval()
    records = []
    for p in PROMPTS:
        ids = tok(p)["input_ids"]
        steps = STEPS.get(p, DEFAULT_STEPS)
        with torch.no_grad():
            first = model(torch.tensor([ids])).logits[0, -1]
            top = torch.topk(first, 5)
            gen = model.generate(
                torch.tensor([ids]),
                attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                max_new_tokens=steps,
                do_sample=False,
                output_logits=True,
                return_dict_in_generate=True,
                pad_token_id=tok.pad_token_id,
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
            "greedy_text": tok.decode(cont),
            "margins": margins,
        })
        print(len(ids), repr(p[:60]), "->", repr(tok.decode(cont)), "min margin %.3f" % min(margins), file=sys.stderr)
    texts = [{"text": t, "ids": tok(t)["input_ids"]} for t in TOKEN_TEXTS]
    import transformers
    with open(out, "w") as f:
        json.dump({
            "made_by": "scripts/golden_gemma3.py, transformers %s, torch %s, float32 on CPU"
                       % (transformers.__version__, torch.__version__),
            "file": name,
            "prompts": records,
            "texts": texts,
        }, f, indent=1, ensure_ascii=False)
    print("wrote", out, file=sys.stderr)


if __name__ == "__main__":
    main()
