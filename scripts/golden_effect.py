#!/usr/bin/env python3
"""Writes crates/attend-models/tests/golden/effect.json: the outside reference for `attend
effect` (knockout of source tokens, ablation of heads) — transformers loading the same GGUF
files (dequantised to float32, eager attention), with hooks:

- knockout of a set of source positions S: a forward pre-hook on each chosen layer's attention
  module puts the mask's minimum at (i, j) for j in S and every query i > j (i at or after the
  predicting position in the `predicting` variant), on top of the causal / sliding-window mask
  the model built for that layer;
- head ablation: a forward pre-hook on `o_proj` replaces the head's slice of its input by zeros
  (or by that slice's mean over the positions of the unedited run).

The measured number is Δ log p(target) = Σ_k log p(target_k | prefix) edited − unedited, the
target's tokens teacher-forced after the prompt. For the `wrong` variant the knockout also
removes the edge (j, j) — what a knockout that cut the source's own row would compute — so that
a test can show the goldens tell the two apart.

    pip install torch transformers gguf sentencepiece
    python3 scripts/golden_effect.py "$(attend fetch smollm2)" "$(attend fetch gemma3)"
    python3 scripts/golden_effect.py SMOLLM2 GEMMA3 --only mistral   # one model, the rest kept
    python3 scripts/golden_effect.py SMOLLM2 GEMMA3 --only minilm --minilm "$(attend fetch minilm)"

The encoder (MiniLM, `minilm`): transformers' BertModel on the same safetensors, eager
attention; a knockout of S puts the mask's minimum at (i, j) for j in S and every query i (its
own row included), a head ablation zeroes the head's slice of the input of
`attention.output.dense`; the measure is 1 − cos between the edited and the unedited sentence
embedding (mean pooling, L2-normalised, as the model's sentence-transformers modules say).
"""
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(__file__))
from golden_explain import load, r7  # noqa: E402
from golden_gemma3 import LONG  # noqa: E402
from tiny_decoders import SPEC, load_back  # noqa: E402

PROMPT = "The animal didn't cross the road because it was"
TINY = ["llama3", "mistral", "qwen2", "qwen3", "phi3", "gemma2"]
TINY_DIR = os.path.join(os.path.dirname(__file__), "..", "crates", "attend-models", "tests", "tiny")


def layers_of(model):
    return model.model.layers


def logp(model, ids, n, target):
    """Σ log p(target_k) after ids[:n + k] (ids = prompt + target[:-1])."""
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0]
    lp = torch.log_softmax(logits.double(), dim=-1)
    return sum(float(lp[n - 1 + k, t]) for k, t in enumerate(target)), logits


def knockout_hooks(model, sources, first_query, layer_range, wrong=False):
    """Pre-hooks hiding `sources` from queries i > j (i >= j when wrong), i >= first_query."""
    handles = []
    for l, layer in enumerate(layers_of(model)):
        if layer_range is not None and not (layer_range[0] <= l < layer_range[1]):
            continue

        def pre(mod, args, kwargs):
            mask = kwargs.get("attention_mask")
            hs = kwargs.get("hidden_states", args[0] if args else None)
            s = hs.shape[1]
            if mask is None:
                mask = torch.full((1, 1, s, s), torch.finfo(torch.float32).min).triu(1)
            mask = mask.clone()
            low = torch.finfo(mask.dtype).min
            for j in sources:
                for i in range(max(j if wrong else j + 1, first_query), s):
                    mask[..., i, j] = low
            kwargs["attention_mask"] = mask
            return args, kwargs

        handles.append(layer.self_attn.register_forward_pre_hook(pre, with_kwargs=True))
    return handles


def head_hook(model, l, h, vd, value=None):
    def pre(mod, args):
        x = args[0].clone()
        x[..., h * vd:(h + 1) * vd] = 0.0 if value is None else value
        return (x,)

    return layers_of(model)[l].self_attn.o_proj.register_forward_pre_hook(pre)


def head_means(model, ids, vd):
    """[layer][head] mean over positions of each head's slice of o_proj's input."""
    means, handles = [], []
    for layer in layers_of(model):
        def pre(mod, args):
            x = args[0][0]  # (s, H·vd)
            means.append(x.mean(dim=0).reshape(-1, vd).clone())
        handles.append(layer.self_attn.o_proj.register_forward_pre_hook(pre))
    with torch.no_grad():
        model(torch.tensor([ids]))
    for hd in handles:
        hd.remove()
    return means


def case(model, tok, text, target_text=None, sources=None, variants=("later",), heads=("zero",),
         layer_range=None, groups=()):
    prompt = tok(text)["input_ids"]
    n = len(prompt)
    if target_text is None:
        with torch.no_grad():
            target = [int(model(torch.tensor([prompt])).logits[0, -1].argmax())]
    else:
        joint = tok(text + target_text)["input_ids"]
        assert joint[:n] == prompt, "the target changes the prompt's tokens"
        target = joint[n:]
    ids = prompt + target[:-1]
    base, _ = logp(model, ids, n, target)
    rec = {"text": text, "prompt_ids": prompt, "target_ids": target, "logp": r7(base)}
    sources = list(range(n)) if sources is None else sources

    def run(hooks):
        try:
            return logp(model, ids, n, target)[0] - base
        finally:
            for hd in hooks:
                hd.remove()

    for v in variants:
        first = 0 if v in ("later", "wrong") else n - 1
        rec["knockout_" + v] = {
            str(j): r7(run(knockout_hooks(model, [j], first, None, wrong=(v == "wrong"))))
            for j in sources
        }
    if layer_range is not None:
        rec["layers"] = list(layer_range)
        rec["knockout_layers"] = {
            str(j): r7(run(knockout_hooks(model, [j], 0, layer_range))) for j in sources
        }
    rec["groups"] = [{"positions": list(g), "delta": r7(run(knockout_hooks(model, list(g), 0, None)))}
                     for g in groups]
    cfg = model.config
    vd = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    L, H = cfg.num_hidden_layers, cfg.num_attention_heads
    if "zero" in heads:
        rec["heads_zero"] = [r7(run([head_hook(model, l, h, vd)])) for l in range(L) for h in range(H)]
    if "mean" in heads:
        means = head_means(model, ids, vd)
        rec["heads_mean"] = [r7(run([head_hook(model, l, h, vd, means[l][h])]))
                             for l in range(L) for h in range(H)]
    return rec


def minilm_doc(path):
    from transformers import AutoTokenizer, BertModel

    tok = AutoTokenizer.from_pretrained(path)
    model = BertModel.from_pretrained(path, attn_implementation="eager").float().eval()
    L, H = model.config.num_hidden_layers, model.config.num_attention_heads
    vd = model.config.hidden_size // H

    def embed(ids):
        with torch.no_grad():
            h = model(torch.tensor([ids])).last_hidden_state[0].double()
        v = h.mean(dim=0)
        return v / v.norm()

    def hide(sources, layer_range):
        handles = []
        for l, layer in enumerate(model.encoder.layer):
            if layer_range is not None and not (layer_range[0] <= l < layer_range[1]):
                continue

            def pre(mod, args, kwargs):
                hs = kwargs.get("hidden_states", args[0] if args else None)
                s = hs.shape[1]
                mask = torch.zeros((1, 1, s, s), dtype=hs.dtype)
                for j in sources:
                    mask[..., :, j] = torch.finfo(hs.dtype).min
                kwargs["attention_mask"] = mask
                return args, kwargs

            handles.append(layer.attention.self.register_forward_pre_hook(pre, with_kwargs=True))
        return handles

    def ablate(l, h):
        def pre(mod, args):
            x = args[0].clone()
            x[..., h * vd:(h + 1) * vd] = 0.0
            return (x,)

        return [model.encoder.layer[l].attention.output.dense.register_forward_pre_hook(pre)]

    def run(ids, clean, handles):
        try:
            v = embed(ids)
        finally:
            for hd in handles:
                hd.remove()
        return 1.0 - float(v @ clean)

    text = "The animal didn't cross the road because it was tired"
    ids = tok(text)["input_ids"]
    clean = embed(ids)
    # the hook itself: with nothing hidden it must give the unedited embedding
    assert run(ids, clean, hide([], None)) < 1e-12
    n = len(ids)
    cases = [{
        "text": text, "tokens": tok.convert_ids_to_tokens(ids), "layers": None,
        "tokens_delta": [r7(run(ids, clean, hide([j], None))) for j in range(n)],
        "groups": [[2, 3], [4, 5, 6]],
        "groups_delta": [r7(run(ids, clean, hide(g, None))) for g in ([2, 3], [4, 5, 6])],
        "heads": [r7(run(ids, clean, ablate(l, h))) for l in range(L) for h in range(H)],
    }, {
        "text": text, "layers": [2, 4],
        "tokens_delta": [r7(run(ids, clean, hide([j], (2, 4)))) for j in range(n)],
    }]
    return {"dir": "minilm", "cases": cases}


def main():
    args = sys.argv[1:]
    minilm = os.path.expanduser("~/.cache/attend/minilm-0.1.0")
    if "--minilm" in args:
        i = args.index("--minilm")
        minilm = args[i + 1]
        del args[i:i + 2]
    only = set()
    if "--only" in args:
        i = args.index("--only")
        only = set(args[i + 1].split(","))
        del args[i:i + 2]
    smollm2, gemma3 = args[0], args[1]
    out = args[2] if len(args) > 2 else "crates/attend-models/tests/golden/effect.json"
    torch.set_num_threads(2)
    doc = {}
    if only:
        with open(out) as f:
            doc = json.load(f)
    for name in TINY:
        if only and name not in only:
            continue
        # (with the config keys transformers' GGUF loader misses, as tiny_decoders.py gives them)
        s = SPEC[name]()
        model, tok = load_back(os.path.join(TINY_DIR, name + ".gguf"), s)
        if s.get("loader_drops"):
            # transformers reads the file as an architecture without what it drops (Mistral's
            # window): the file's weights in the original architecture's model
            orig = s["model"].float().eval()
            orig.load_state_dict(model.state_dict())
            orig.config._attn_implementation = "eager"
            model = orig
        text = "the cat sat on the mat because it was tired and the dog"
        doc[name] = {"file": name + ".gguf", "cases": [
            case(model, tok, text, variants=("later", "predicting", "wrong"), heads=("zero", "mean"),
                 layer_range=(1, 2), groups=[(1, 2), (3, 5, 6)]),
            case(model, tok, text, target_text=" and the cat", variants=("later", "predicting")),
        ]}
        print(name, "done", file=sys.stderr)
    if not only or "minilm" in only:
        doc["minilm"] = minilm_doc(minilm)
        print("minilm done", file=sys.stderr)
    if only:
        write_doc(doc, out)
        return
    tok, model, name = load(smollm2)
    doc["smollm2"] = {"file": name, "cases": [
        case(model, tok, PROMPT, variants=("later", "predicting", "wrong"), heads=("zero", "mean"),
             layer_range=(10, 20)),
        case(model, tok, PROMPT, target_text=" tired", variants=("later",), heads=()),
    ]}
    print("smollm2 done", file=sys.stderr)
    tok, model, name = load(gemma3)
    n_long = len(tok(LONG)["input_ids"])
    # a prompt past the 512-key window: a few sources, near the start (outside the predicting
    # position's window on local layers), inside it, and the last
    picks = [0, 3, 40, n_long - 300, n_long - 30, n_long - 2]
    doc["gemma3"] = {"file": name, "window": model.config.sliding_window, "cases": [
        case(model, tok, PROMPT, variants=("later", "predicting"), heads=("zero",)),
        case(model, tok, LONG, sources=picks, variants=("later", "predicting"), heads=()),
    ]}
    print("gemma3 done:", n_long, "tokens in the long prompt", file=sys.stderr)
    write_doc(doc, out)


def write_doc(doc, out):
    import transformers
    doc["made_by"] = ("scripts/golden_effect.py, transformers %s, torch %s, float32, eager attention"
                      % (transformers.__version__, torch.__version__))
    with open(out, "w") as f:
        json.dump(doc, f, ensure_ascii=False)
    print("wrote", out, os.path.getsize(out) >> 10, "KiB", file=sys.stderr)


if __name__ == "__main__":
    main()
