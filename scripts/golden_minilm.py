#!/usr/bin/env python3
"""Writes crates/attend-models/tests/golden/minilm.json: the outside reference for attend's
MiniLM encoder, from sentence-transformers and transformers (PyTorch) on the same weights.

    pip install torch transformers sentence-transformers
    cargo run --release -- fetch minilm            # or any folder holding the model
    python3 scripts/golden_minilm.py "$(cargo run --release -q -- models --path minilm)"

It records, for each text: the token ids (transformers' tokenizer with sentence-transformers'
max_seq_length), the sentence-transformers embedding (mean pooling, normalised), and for three
short texts transformers' output_attentions (every layer and head, [layer][head][query][key]).
"""
import json
import sys

import torch
from sentence_transformers import SentenceTransformer
from transformers import AutoModel, AutoTokenizer

TEXTS = [
    "The animal didn't cross the road because it was tired",
    "The animal didn't cross the road because it was wide",
    "Café déjà vu: naïve façade, résumé and Ünïcödé accents.",
    "東京は日本の首都です。北京是中国的首都。",
    "I love pizza 🍕🍕 and rockets 🚀!!! :-)",
    "buffalo buffalo Buffalo buffalo buffalo buffalo Buffalo buffalo",
    "Wait... what?! (Really) -- yes; #1 @home, 3.14159 & 50% off $9.99",
    "",
    " ".join(["the quick brown fox jumps over the lazy dog"] * 40),  # beyond 256 tokens
]
ATTENTION_FOR = [0, 2, 4]


def main():
    path = sys.argv[1]
    out = sys.argv[2] if len(sys.argv) > 2 else "crates/attend-models/tests/golden/minilm.json"
    torch.set_num_threads(2)
    st = SentenceTransformer(path, device="cpu")
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path, attn_implementation="eager").eval()
    emb = st.encode(TEXTS, batch_size=4, convert_to_numpy=True, normalize_embeddings=False)
    records = []
    for i, text in enumerate(TEXTS):
        enc = tok(text, truncation=True, max_length=st.max_seq_length, return_tensors="pt")
        rec = {
            "text": text,
            "ids": enc["input_ids"][0].tolist(),
            "embedding": [round(float(x), 7) for x in emb[i]],
        }
        if i in ATTENTION_FOR:
            with torch.no_grad():
                o = model(**enc, output_attentions=True)
            rec["attention"] = [
                [[[round(float(p), 6) for p in row] for row in head] for head in layer[0]]
                for layer in o.attentions
            ]
        records.append(rec)
    meta = {
        "made_by": "scripts/golden_minilm.py",
        "torch": torch.__version__,
        "transformers": __import__("transformers").__version__,
        "sentence_transformers": __import__("sentence_transformers").__version__,
        "max_seq_length": st.max_seq_length,
    }
    with open(out, "w") as f:
        json.dump({"meta": meta, "texts": records}, f, ensure_ascii=False, separators=(",", ":"))
    print(f"wrote {out}: {len(records)} texts", file=sys.stderr)


if __name__ == "__main__":
    main()
