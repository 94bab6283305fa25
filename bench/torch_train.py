"""Training throughput of the same small transformers in PyTorch, to set beside
`attend bench --case train-winograd --case train-text`.

Same architecture as attend's toy models (pre-norm, learned positions, fused QKV without
bias, tanh GELU MLP with biases, untied head), same shapes (winograd: vocab 101, dim 64,
2 layers x 4 heads, batch 64 x 16 tokens; text: vocab 256, dim 128, 4 layers x 4 heads,
batch 32 x 128), AdamW with clipping at 1; attention through scaled_dot_product_attention
(causal). Random tokens: only the speed is measured.

    python3 bench/torch_train.py --threads 2
"""

import argparse
import json
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class Block(nn.Module):
    def __init__(self, d, h, m):
        super().__init__()
        self.h = h
        self.ln1 = nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d, bias=False)
        self.wo = nn.Linear(d, d, bias=False)
        self.ln2 = nn.LayerNorm(d)
        self.w1 = nn.Linear(d, m)
        self.w2 = nn.Linear(m, d)

    def forward(self, x):
        b, t, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(d, dim=2)
        q, k, v = (z.view(b, t, self.h, d // self.h).transpose(1, 2) for z in (q, k, v))
        o = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.wo(o.transpose(1, 2).reshape(b, t, d))
        return x + self.w2(F.gelu(self.w1(self.ln2(x)), approximate="tanh"))


class Toy(nn.Module):
    def __init__(self, vocab, d, layers, h, ctx):
        super().__init__()
        self.tok = nn.Embedding(vocab, d)
        self.pos = nn.Embedding(ctx, d)
        self.blocks = nn.ModuleList(Block(d, h, 4 * d) for _ in range(layers))
        self.ln_f = nn.LayerNorm(d)
        self.head = nn.Linear(d, vocab, bias=False)

    def forward(self, idx):
        x = self.tok(idx) + self.pos(torch.arange(idx.shape[1]))
        for b in self.blocks:
            x = b(x)
        return self.head(self.ln_f(x))


def case(name, vocab, d, layers, h, ctx, batch, t, budget=4.0):
    torch.manual_seed(0)
    m = Toy(vocab, d, layers, h, ctx)
    opt = torch.optim.AdamW(m.parameters(), lr=1e-3, betas=(0.9, 0.99), weight_decay=0.1)
    x = torch.randint(0, vocab, (batch, t))
    y = torch.randint(0, vocab, (batch, t))

    def step():
        loss = F.cross_entropy(m(x).view(-1, vocab), y.view(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0)
        opt.step()

    for _ in range(3):
        step()
    runs = []
    start = time.perf_counter()
    while len(runs) < 3 or (time.perf_counter() - start < budget and len(runs) < 200):
        t0 = time.perf_counter()
        step()
        runs.append(time.perf_counter() - t0)
    runs.sort()
    med = runs[len(runs) // 2]
    params = sum(p.numel() for p in m.parameters())
    print(json.dumps({"case": name, "impl": f"torch-{torch.__version__}",
                      "threads": torch.get_num_threads(), "params": params,
                      "median_ms": round(med * 1e3, 3),
                      "tokens_per_s": round(batch * t / med, 1)}))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    case("train-winograd", 101, 64, 2, 4, 32, 64, 16)
    case("train-text", 256, 128, 4, 4, 128, 32, 128)


if __name__ == "__main__":
    main()
