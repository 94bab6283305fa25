#!/usr/bin/env python3
"""ONNX Runtime on the same MiniLM folder and the same 512 sentences as
`attend bench --case minilm-embed --case minilm-one`, fp32 and int8, printed as the same JSON
lines: the CPU path fastembed and sentence-transformers' `backend="onnx"` take.

    python3 bench/onnx_embed.py "$(cargo run --release -q -- fetch minilm)" --threads 2

The folder's BertModel is exported with `torch.onnx.export` (fp32; opset 17, dynamic batch and
length) into a temporary folder, and quantised with `onnxruntime.quantization.quantize_dynamic`
(int8 weights, activations quantised at run time: what "ONNX int8" means for these pipelines).
Each `encode` is what sentence-transformers' is: tokenize a batch of 64 (padded to its
longest), run, mean-pool over the attention mask, L2-normalise. The int8 line carries the
worst and mean cosine of its embeddings to fp32's over the 512 sentences.

Needs `pip install torch transformers onnx onnxruntime`; exits 0 with a note when they are
missing.
"""
import json
import os
import sys
import tempfile
import time

from st_embed import arguments, sentences, timeit  # the same sentences, timed the same way


def main():
    a = arguments()
    try:
        import numpy as np
        import onnxruntime as ort
        import torch
        from onnxruntime.quantization import QuantType, quantize_dynamic
        from transformers import AutoModel, AutoTokenizer
    except ImportError as e:
        print(f"onnx_embed.py: {e.name} is not installed; nothing to measure", file=sys.stderr)
        return
    torch.set_num_threads(a.threads)
    tok = AutoTokenizer.from_pretrained(a.model)
    model = AutoModel.from_pretrained(a.model).eval()
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = os.path.join(tmp, "minilm.onnx")
        int8 = os.path.join(tmp, "minilm-int8.onnx")
        ex = tok(["a b c", "a"], padding=True, return_tensors="pt")
        names = ["input_ids", "attention_mask", "token_type_ids"]
        dyn = {n: {0: "batch", 1: "seq"} for n in names}
        dyn["last_hidden_state"] = {0: "batch", 1: "seq"}
        class Bert(torch.nn.Module):  # the three inputs by name, the hidden states out
            def __init__(self, m):
                super().__init__()
                self.m = m

            def forward(self, input_ids, attention_mask, token_type_ids):
                return self.m(input_ids=input_ids, attention_mask=attention_mask,
                              token_type_ids=token_type_ids).last_hidden_state

        with torch.no_grad():
            torch.onnx.export(Bert(model), tuple(ex[n] for n in names), fp32, input_names=names,
                              output_names=["last_hidden_state"], dynamic_axes=dyn, opset_version=17,
                              dynamo=False)
        quantize_dynamic(fp32, int8, weight_type=QuantType.QInt8)
        so = ort.SessionOptions()
        so.intra_op_num_threads = a.threads
        so.inter_op_num_threads = 1
        sessions = {
            "onnxruntime-fp32": ort.InferenceSession(fp32, so, providers=["CPUExecutionProvider"]),
            "onnxruntime-int8": ort.InferenceSession(int8, so, providers=["CPUExecutionProvider"]),
        }

        def encode(sess, texts, batch=64):
            out = []
            for i in range(0, len(texts), batch):
                enc = tok(texts[i:i + batch], padding=True, return_tensors="np")
                feed = {n: enc[n].astype(np.int64) for n in names}
                h = sess.run(None, feed)[0]
                m = feed["attention_mask"][..., None].astype(np.float32)
                e = (h * m).sum(1) / np.maximum(m.sum(1), 1e-9)
                out.append(e / np.linalg.norm(e, axis=1, keepdims=True))
            return np.concatenate(out)

        texts = sentences(512)
        ref = encode(sessions["onnxruntime-fp32"], texts)
        one = "The animal didn't cross the road because it was tired"
        for impl, sess in sessions.items():
            med, lo, hi = timeit(lambda: encode(sess, texts), 5.0)
            rec = {"case": "minilm-embed", "impl": impl, "threads": a.threads,
                   "median_ms": round(med, 3), "min_ms": round(lo, 3), "max_ms": round(hi, 3),
                   "sentences_per_s": round(512 / med * 1e3, 3)}
            if impl.endswith("int8"):
                cos = (encode(sess, texts) * ref).sum(1)
                rec["worst_cosine_to_fp32"] = round(float(cos.min()), 5)
                rec["mean_cosine_to_fp32"] = round(float(cos.mean()), 5)
            print(json.dumps(rec), flush=True)
            med, lo, hi = timeit(lambda: encode(sess, [one]), 2.0)
            print(json.dumps({"case": "minilm-one", "impl": impl, "threads": a.threads,
                              "median_ms": round(med, 3), "min_ms": round(lo, 3), "max_ms": round(hi, 3)}),
                  flush=True)


if __name__ == "__main__":
    main()
