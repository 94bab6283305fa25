#!/usr/bin/env python3
"""Writes crates/attend-models/tests/golden/kquants.json: random Q4_K, Q6_K and Q5_K blocks
(three rows of one block) and Q5_0 blocks (three rows of eight) and their values as the `gguf` Python
package (llama.cpp's own reference code) dequantises them.

    pip install gguf numpy
    python3 scripts/golden_kquants.py
"""
import json

import numpy as np
from gguf import GGMLQuantizationType as T
from gguf.quants import dequantize

rng = np.random.default_rng(7)
out = {}
for name, ty, size in [("Q4_K", T.Q4_K, 144), ("Q6_K", T.Q6_K, 210)]:
    raw = rng.integers(0, 256, size=(3, size), dtype=np.uint8)
    # keep the f16 scales finite and moderate: d (and dmin) bytes as small normal halves
    for b in raw:
        if name == "Q4_K":
            b[0:2] = np.frombuffer(np.float16(0.01 + rng.random() * 0.1).tobytes(), np.uint8)
            b[2:4] = np.frombuffer(np.float16(0.01 + rng.random() * 0.1).tobytes(), np.uint8)
        else:
            b[208:210] = np.frombuffer(np.float16(0.01 + rng.random() * 0.1).tobytes(), np.uint8)
    vals = dequantize(raw.reshape(-1), ty).reshape(-1)
    out[name] = {"bytes": raw.reshape(-1).tolist(), "values": [float(v) for v in vals]}
# Q5_0 after the others, so that their random bytes stay as they were
raw = rng.integers(0, 256, size=(24, 22), dtype=np.uint8)
for b in raw:
    b[0:2] = np.frombuffer(np.float16(0.01 + rng.random() * 0.1).tobytes(), np.uint8)
vals = dequantize(raw.reshape(-1), T.Q5_0).reshape(-1)
out["Q5_0"] = {"bytes": raw.reshape(-1).tolist(), "values": [float(v) for v in vals]}
# Q5_K last (three rows of one block), for the same reason
raw = rng.integers(0, 256, size=(3, 176), dtype=np.uint8)
for b in raw:
    b[0:2] = np.frombuffer(np.float16(0.01 + rng.random() * 0.1).tobytes(), np.uint8)
    b[2:4] = np.frombuffer(np.float16(0.01 + rng.random() * 0.1).tobytes(), np.uint8)
vals = dequantize(raw.reshape(-1), T.Q5_K).reshape(-1)
out["Q5_K"] = {"bytes": raw.reshape(-1).tolist(), "values": [float(v) for v in vals]}
with open("crates/attend-models/tests/golden/kquants.json", "w") as f:
    json.dump(out, f)
print("wrote crates/attend-models/tests/golden/kquants.json")
