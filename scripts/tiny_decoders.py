#!/usr/bin/env python3
"""Builds the tiny decoders of crates/attend-models/tests/tiny/: one randomly initialised model
per architecture attend reads, made with transformers, written as GGUF the way llama.cpp's
converter (`convert_hf_to_gguf.py`) writes that architecture, loaded back by transformers to
check the file, and golden files of what transformers computes on it.

    pip install torch transformers gguf sentencepiece tokenizers
    python3 scripts/tiny_decoders.py            # all of them
    python3 scripts/tiny_decoders.py qwen2 ...  # some

No small real model of these architectures can be had here, so each is random (fixed seed)
and small (width 64, 2 heads of key/value for 4 of query where the architecture has GQA, a
vocabulary of a few hundred tokens trained on the text below with the architecture's own
tokenizer kind and pre-tokenizer), with its windows short enough that a 20-token prompt
crosses them and Gemma 2's soft-caps low enough to bite.

For each model:

1. the HF model is built (`…Config`, `…ForCausalLM`), every weight drawn again from a normal
   distribution (biases and norms included, so that none is a no-op);
2. the GGUF file is written with llama.cpp's tensor names and metadata keys: Q/K rows permuted
   for the llama family (the converter's `permute`), `1 + w` for Gemma's norms, Llama 3's
   `rope_freqs.weight` from its rope scaling, Phi-3's fused `attn_qkv` and gate-and-up
   `ffn_up`, the tokenizer as `tokenizer.ggml.*`;
3. transformers loads the file back (`from_pretrained(..., gguf_file=...)`): every weight must
   equal the original's bit for bit, and where transformers' GGUF loader reads every key this
   architecture uses, the logits too. Its loader does not read some keys (Llama 3's rope
   scaling, a Llama/Mistral or Phi-3 sliding window, Qwen 3's head dim, Gemma 2's soft-caps
   and query scale): there the loaded model is given them by hand before the logits are
   compared, and the script says so;
4. the golden file holds what the original model (float32, eager attention) computes: token
   ids of texts by transformers' GGUF tokenizer (the reference for attend's), and per prompt
   the ids, the top-5 next-token logits, the greedy continuation with each step's top-1/top-2
   margin, every layer × head's last-query attention row, and for the first prompt every row.
"""
import json
import math
import os
import sys
import tempfile

import numpy as np
import torch

OUT = os.path.join(os.path.dirname(__file__), "..", "crates", "attend-models", "tests", "tiny")

CORPUS = [
    "The animal didn't cross the road because it was tired.",
    "The animal didn't cross the road because it was too wide.",
    "A transformer turns tokens into embeddings, then lets every token ask of every other: "
    "how relevant are you to me right now?",
    "Each embedding becomes a query, a key and a value; a softmax turns the scores into weights.",
    "For next-token prediction each token may only look back at the tokens before it.",
    "The capital of France is Paris. The capital of Germany is Berlin. Rome is in Italy.",
    "Once upon a time, in a small village, there lived an old baker and his clever cat.",
    "def fibonacci(n):\n    if n < 2:\n        return n\n    return fibonacci(n - 1) + fibonacci(n - 2)\n",
    "fn main() { let x = vec![1, 2, 3]; println!(\"{x:?}\"); }",
    "In 2024, 1234567 people counted 3.14159 apples, 42 pears and 1000 plums.",
    "Der Hund lief über die Straße, weil er müde war. Café, déjà vu, naïve façade.",
    "東京は日本の首都です。北京是中国的首都。",
    "She said: 'I'll be there at 10:30 - don't be late!' and he replied 'we're ready'.",
    "Attention weights are learned relevance scores, optimised for prediction.",
    "The quick brown fox jumps over the lazy dog while the dog sleeps in the sun.",
    "Rain fell on the hills all night, and in the morning the rivers were full.",
    "Numbers: one two three four five six seven eight nine ten eleven twelve.",
    "  leading spaces, trailing spaces  \n\nnew lines\tand tabs",
] * 3

# prompts: the first is the seed's sentence; the second is longer than every window (8)
PROMPTS = [
    "The animal didn't cross the road because it was",
    "Once upon a time, in a small village, there lived an old baker and his clever cat. The cat was",
    "def fibonacci(n):\n    ",
]
TEXTS = [
    "The animal didn't cross the road because it was tired",
    "Café déjà vu: naïve façade, über Straße.",
    "東京は日本の首都です。",
    "Numbers 1234567 and 3.14159, spaces   and\ttabs\n\nnew lines",
    "  leading spaces, trailing spaces  ",
    "I'll say it's 10:30, don't you?",
    "fn main() { let x = 1; }",
    "",
]
STEPS = 8
# the models also written in Q8_0, so that biases and fused projections are checked on a
# quantised file (the golden then comes from transformers' dequantised model of the file)
Q8 = ["qwen2-q8_0", "phi3-q8_0"]
WIDTH, HEADS, KV_HEADS, FFN, LAYERS = 64, 4, 2, 128, 2

LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)


# ---------------------------------------------------------------- tokenizers


def byte_level_vocab(split, specials, size):
    """A byte-level BPE trained on CORPUS, split by `split` first: (tokens, types, merges)."""
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(split), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    trainer = trainers.BpeTrainer(
        vocab_size=size, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS, trainer)
    model = json.loads(tok.to_str())["model"]
    vocab = sorted(model["vocab"].items(), key=lambda kv: kv[1])
    tokens = [t for t, _ in vocab]
    assert [i for _, i in vocab] == list(range(len(tokens)))
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    types = [3 if t in specials else 1 for t in tokens]
    return tokens, types, merges


def spm_vocab(size, specials, control, bos, eos, unk, pad, dummy_prefix):
    """A SentencePiece BPE with byte fallback trained on CORPUS: (tokens, scores, types)."""
    import io

    import sentencepiece as spm

    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(CORPUS), model_writer=buf, model_type="bpe", vocab_size=size,
        byte_fallback=True, character_coverage=1.0, add_dummy_prefix=dummy_prefix,
        bos_id=bos, eos_id=eos, unk_id=unk, pad_id=pad, control_symbols=control,
        user_defined_symbols=[s for s in specials if s not in control], num_threads=1,
        remove_extra_whitespaces=False, minloglevel=2,
    )
    sp = spm.SentencePieceProcessor(model_proto=buf.getvalue())
    tokens, scores, types = [], [], []
    for i in range(sp.get_piece_size()):
        tokens.append(sp.id_to_piece(i))
        scores.append(sp.get_score(i))
        types.append(
            2 if sp.is_unknown(i) else 3 if sp.is_control(i) else 6 if sp.is_byte(i)
            else 4 if sp.id_to_piece(i) in specials else 1
        )
    return tokens, scores, types


# ---------------------------------------------------------------- models


def randomize(model, seed, std=0.1, big=()):
    """Every parameter drawn again: matrices N(0, std) (N(0, 2.5·std) for names containing one
    of `big`), embeddings N(0, 1), norms 1 + N(0, 0.1), biases N(0, 0.1)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                if "gemma" in type(model).__name__.lower():
                    p.copy_(torch.randn(p.shape, generator=g) * 0.1)  # Gemma's norms: 1 + w
                else:
                    p.copy_(1.0 + torch.randn(p.shape, generator=g) * 0.1)
            elif name.endswith("bias"):
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
            elif "embed_tokens" in name:
                # a tied embedding is also the output projection: keep its logits moderate
                tied = model.config.tie_word_embeddings
                s = 0.3 if tied else 1.0
                p.copy_(torch.randn(p.shape, generator=g) * s)
            else:
                s = std * (2.5 if any(b in name for b in big) else 1.0)
                p.copy_(torch.randn(p.shape, generator=g) * s)


def llama_permute(w, n_head, n_head_kv):
    # the converter's row permutation: each head's rotate_half halves become adjacent pairs
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def llama3_rope_factors(cfg):
    rs = cfg.rope_parameters
    base = rs["rope_theta"]
    dim = cfg.head_dim
    freqs = 1.0 / (base ** (np.arange(0, dim, 2, dtype=np.float32) / dim))
    factor, lo, hi = rs["factor"], rs["low_freq_factor"], rs["high_freq_factor"]
    old = rs["original_max_position_embeddings"]
    lo_wl, hi_wl = old / lo, old / hi
    out = []
    for f in freqs:
        wl = 2 * math.pi / f
        if wl < hi_wl:
            out.append(1.0)
        elif wl > lo_wl:
            out.append(factor)
        else:
            smooth = (old / wl - lo) / (hi - lo)
            out.append(1 / ((1 - smooth) / factor + smooth))
    return np.array(out, dtype=np.float32)


SPEC = {}


def spec(name):
    def wrap(f):
        SPEC[name] = f
        return f
    return wrap


@spec("llama3")
def llama3():
    from transformers import LlamaConfig, LlamaForCausalLM
    specials = ["<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>"]
    tokens, types, merges = byte_level_vocab(LLAMA3_SPLIT, specials, 420)
    cfg = LlamaConfig(
        vocab_size=len(tokens), hidden_size=WIDTH, intermediate_size=FFN, num_hidden_layers=LAYERS,
        num_attention_heads=HEADS, num_key_value_heads=KV_HEADS, max_position_embeddings=256,
        rms_norm_eps=1e-5, tie_word_embeddings=True, bos_token_id=0, eos_token_id=1,
        rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
                         "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                         "original_max_position_embeddings": 64},
    )
    return dict(
        arch="llama", name="tiny-llama3", model=LlamaForCausalLM(cfg), permute=True,
        tok=dict(model="gpt2", pre="llama-bpe", tokens=tokens, types=types, merges=merges,
                 bos=0, eos=1, add_bos=True),
        rope_freqs=True,
        # transformers' GGUF loader reads no rope scaling for llama
        loader_misses={"rope_parameters": cfg.rope_parameters},
    )


@spec("mistral")
def mistral():
    from transformers import MistralConfig, MistralForCausalLM
    tokens, scores, types = spm_vocab(400, ["<s>", "</s>"], [], bos=1, eos=2, unk=0, pad=-1,
                                      dummy_prefix=True)
    cfg = MistralConfig(
        vocab_size=len(tokens), hidden_size=WIDTH, intermediate_size=FFN, num_hidden_layers=LAYERS,
        num_attention_heads=HEADS, num_key_value_heads=KV_HEADS, head_dim=24,
        max_position_embeddings=256, rms_norm_eps=1e-5, rope_theta=10000.0, sliding_window=8,
        tie_word_embeddings=False, bos_token_id=1, eos_token_id=2,
    )
    return dict(
        arch="llama", name="tiny-mistral", model=MistralForCausalLM(cfg), permute=True,
        tok=dict(model="llama", tokens=tokens, scores=scores, types=types, bos=1, eos=2, unk=0,
                 add_bos=True),
        head_dim=24, window=8,
        # transformers reads this file as Llama (it takes a `llama` file for Mistral only when
        # `general.name` is exactly "mistral", and then fails: gguf-py has no such
        # architecture), which has no window: its logits are compared with the original's
        # without the window
        loader_misses={},
        loader_drops={"sliding_window": None},
    )


@spec("qwen2")
def qwen2():
    from transformers import Qwen2Config, Qwen2ForCausalLM
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tokens, types, merges = byte_level_vocab(QWEN2_SPLIT, specials, 420)
    cfg = Qwen2Config(
        vocab_size=len(tokens), hidden_size=WIDTH, intermediate_size=FFN, num_hidden_layers=LAYERS,
        num_attention_heads=HEADS, num_key_value_heads=KV_HEADS, max_position_embeddings=256,
        rms_norm_eps=1e-6, rope_theta=1000000.0, tie_word_embeddings=False,
        use_sliding_window=False, bos_token_id=0, eos_token_id=0,
    )
    return dict(
        arch="qwen2", name="tiny-qwen2", model=Qwen2ForCausalLM(cfg),
        tok=dict(model="gpt2", pre="qwen2", tokens=tokens, types=types, merges=merges,
                 bos=0, eos=2, add_bos=False),
        loader_misses={},
    )


@spec("qwen3")
def qwen3():
    from transformers import Qwen3Config, Qwen3ForCausalLM
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tokens, types, merges = byte_level_vocab(QWEN2_SPLIT, specials, 400)
    cfg = Qwen3Config(
        vocab_size=len(tokens), hidden_size=WIDTH, intermediate_size=FFN, num_hidden_layers=LAYERS,
        num_attention_heads=HEADS, num_key_value_heads=KV_HEADS, head_dim=32,
        max_position_embeddings=256, rms_norm_eps=1e-6, rope_theta=1000000.0,
        tie_word_embeddings=True, bos_token_id=0, eos_token_id=0,
    )
    return dict(
        arch="qwen3", name="tiny-qwen3", model=Qwen3ForCausalLM(cfg),
        tok=dict(model="gpt2", pre="qwen2", tokens=tokens, types=types, merges=merges,
                 bos=0, eos=2, add_bos=False),
        head_dim=32,
        # transformers' GGUF loader does not read attention.key_length for qwen3
        loader_misses={"head_dim": 32},
    )


@spec("phi3")
def phi3():
    from transformers import Phi3Config, Phi3ForCausalLM
    specials = ["<|endoftext|>", "<|user|>", "<|assistant|>", "<|end|>"]
    tokens, scores, types = spm_vocab(400, specials, [], bos=1, eos=2, unk=0, pad=-1,
                                      dummy_prefix=True)
    cfg = Phi3Config(
        vocab_size=len(tokens), hidden_size=WIDTH, intermediate_size=FFN, num_hidden_layers=LAYERS,
        num_attention_heads=HEADS, num_key_value_heads=KV_HEADS, max_position_embeddings=256,
        original_max_position_embeddings=256, rms_norm_eps=1e-5, rope_theta=10000.0,
        sliding_window=8, tie_word_embeddings=False, bos_token_id=1, eos_token_id=2,
        pad_token_id=None,
    )
    return dict(
        arch="phi3", name="tiny-phi3", model=Phi3ForCausalLM(cfg),
        # (a pad id inside the vocabulary: transformers' Phi3Config default lies outside it)
        tok=dict(model="llama", tokens=tokens, scores=scores, types=types, bos=1, eos=2, unk=0,
                 pad=0, add_bos=False),
        window=8,
        loader_misses={"sliding_window": 8},
    )


@spec("gemma2")
def gemma2():
    from transformers import Gemma2Config, Gemma2ForCausalLM
    specials = ["<start_of_turn>", "<end_of_turn>"]
    tokens, scores, types = spm_vocab(400, specials, specials, bos=2, eos=1, unk=3, pad=0,
                                      dummy_prefix=False)
    cfg = Gemma2Config(
        vocab_size=len(tokens), hidden_size=WIDTH, intermediate_size=FFN, num_hidden_layers=3,
        num_attention_heads=HEADS, num_key_value_heads=KV_HEADS, head_dim=16,
        max_position_embeddings=256, rms_norm_eps=1e-6, rope_theta=10000.0, sliding_window=8,
        query_pre_attn_scalar=16, attn_logit_softcapping=5.0, final_logit_softcapping=3.0,
        tie_word_embeddings=True, bos_token_id=2, eos_token_id=1, pad_token_id=0,
        hidden_activation="gelu_pytorch_tanh",
    )
    return dict(
        arch="gemma2", name="tiny-gemma2", model=Gemma2ForCausalLM(cfg), gemma=True,
        tok=dict(model="llama", tokens=tokens, scores=scores, types=types, bos=2, eos=1, unk=3,
                 pad=0, add_bos=True),
        head_dim=16, window=8, softcaps=(5.0, 3.0),
        big=("q_proj", "k_proj"),
        loader_misses={"attn_logit_softcapping": 5.0, "final_logit_softcapping": 3.0,
                       "query_pre_attn_scalar": 16},
    )


# ---------------------------------------------------------------- GGUF


def write_gguf(path, s, q8=False):
    """The model as llama.cpp's converter writes it; with `q8`, every matrix in Q8_0 (as
    `--outtype q8_0` does: 1-D tensors stay F32)."""
    import gguf

    m = s["model"]
    cfg = m.config
    arch = s["arch"]
    sd = {k: v.detach().float().numpy() for k, v in m.state_dict().items()}
    w = gguf.GGUFWriter(path, arch)
    w.add_name(s["name"])
    w.add_file_type(gguf.LlamaFileType.MOSTLY_Q8_0 if q8 else gguf.LlamaFileType.ALL_F32)
    n_head, n_kv = cfg.num_attention_heads, cfg.num_key_value_heads
    head_dim = s.get("head_dim") or cfg.hidden_size // n_head
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_block_count(cfg.num_hidden_layers)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_kv)
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    w.add_rope_freq_base(cfg.rope_parameters["rope_theta"])
    if arch == "llama":
        w.add_vocab_size(cfg.vocab_size)
        w.add_rope_dimension_count(head_dim)
    if s.get("head_dim"):
        w.add_key_length(head_dim)
        w.add_value_length(head_dim)
    if s.get("window"):
        w.add_sliding_window(s["window"])
    if s.get("softcaps"):
        w.add_attn_logit_softcapping(s["softcaps"][0])
        w.add_final_logit_softcapping(s["softcaps"][1])
    t = s["tok"]
    w.add_tokenizer_model(t["model"])
    if t["model"] == "gpt2":
        w.add_tokenizer_pre(t["pre"])
        w.add_token_list(t["tokens"])
        w.add_token_types(t["types"])
        w.add_token_merges(t["merges"])
    else:
        w.add_tokenizer_pre("default")
        w.add_token_list(t["tokens"])
        w.add_token_scores(t["scores"])
        w.add_token_types(t["types"])
    w.add_bos_token_id(t["bos"])
    w.add_eos_token_id(t["eos"])
    if "unk" in t:
        w.add_unk_token_id(t["unk"])
    if "pad" in t:
        w.add_pad_token_id(t["pad"])
    w.add_add_bos_token(t["add_bos"])

    gemma = s.get("gemma", False)

    def put(name, a):
        a = np.ascontiguousarray(a, dtype=np.float32)
        if gemma and name.endswith("norm.weight"):
            a = a + 1.0  # Gemma's RMSNorm multiplies by 1 + w; llama.cpp stores 1 + w
        if q8 and a.ndim == 2 and a.shape[1] % 32 == 0:
            q = gguf.quants.quantize(a, gguf.GGMLQuantizationType.Q8_0)
            w.add_tensor(name, q, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
        else:
            w.add_tensor(name, a)

    put("token_embd.weight", sd["model.embed_tokens.weight"])
    if s.get("rope_freqs"):
        put("rope_freqs.weight", llama3_rope_factors(cfg))
    for l in range(cfg.num_hidden_layers):
        p = f"model.layers.{l}."
        b = f"blk.{l}."
        put(b + "attn_norm.weight", sd[p + "input_layernorm.weight"])
        if arch == "phi3":
            put(b + "attn_qkv.weight", sd[p + "self_attn.qkv_proj.weight"])
        else:
            q, k = sd[p + "self_attn.q_proj.weight"], sd[p + "self_attn.k_proj.weight"]
            if s.get("permute"):
                q, k = llama_permute(q, n_head, n_head), llama_permute(k, n_head, n_kv)
            put(b + "attn_q.weight", q)
            put(b + "attn_k.weight", k)
            put(b + "attn_v.weight", sd[p + "self_attn.v_proj.weight"])
            for x in "qkv":
                if p + f"self_attn.{x}_proj.bias" in sd:
                    put(b + f"attn_{x}.bias", sd[p + f"self_attn.{x}_proj.bias"])
            if p + "self_attn.q_norm.weight" in sd:
                put(b + "attn_q_norm.weight", sd[p + "self_attn.q_norm.weight"])
                put(b + "attn_k_norm.weight", sd[p + "self_attn.k_norm.weight"])
        put(b + "attn_output.weight", sd[p + "self_attn.o_proj.weight"])
        if gemma:
            put(b + "post_attention_norm.weight", sd[p + "post_attention_layernorm.weight"])
            put(b + "ffn_norm.weight", sd[p + "pre_feedforward_layernorm.weight"])
            put(b + "post_ffw_norm.weight", sd[p + "post_feedforward_layernorm.weight"])
        else:
            put(b + "ffn_norm.weight", sd[p + "post_attention_layernorm.weight"])
        if arch == "phi3":
            put(b + "ffn_up.weight", sd[p + "mlp.gate_up_proj.weight"])
        else:
            put(b + "ffn_gate.weight", sd[p + "mlp.gate_proj.weight"])
            put(b + "ffn_up.weight", sd[p + "mlp.up_proj.weight"])
        put(b + "ffn_down.weight", sd[p + "mlp.down_proj.weight"])
    put("output_norm.weight", sd["model.norm.weight"])
    if not cfg.tie_word_embeddings:
        put("output.weight", sd["lm_head.weight"])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


# ---------------------------------------------------------------- checks and goldens


def load_back(path, s):
    """transformers' model and tokenizer from the GGUF file, with the keys its loader does not
    read given by hand (and said)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = os.path.dirname(path), os.path.basename(path)
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    misses = s["loader_misses"]
    kwargs = {}
    if misses:
        from transformers import AutoConfig

        cfg = AutoConfig.from_pretrained(folder, gguf_file=name)
        for k, v in misses.items():
            print(f"  transformers' GGUF loader does not read {k}; given by hand: {v}", file=sys.stderr)
            setattr(cfg, k, v)
        if "rope_parameters" in misses:
            cfg.rope_parameters = dict(misses["rope_parameters"])
        kwargs["config"] = cfg
    model = AutoModelForCausalLM.from_pretrained(
        folder, gguf_file=name, dtype=torch.float32, attn_implementation="eager", **kwargs
    ).eval()
    return model, tok


def check_load_back(orig, back, gemma):
    a, b = orig.state_dict(), back.state_dict()
    assert set(a) == set(b), (sorted(set(a) ^ set(b)))
    for k in a:
        if gemma and "norm" in k:
            # stored as 1 + w, read back as (1 + w) - 1: the float32 sum rounds, and both
            # models multiply by the same 1 + w
            if torch.equal(1.0 + a[k].float(), 1.0 + b[k].float()):
                continue
        if not torch.equal(a[k].float(), b[k].float()):
            d = (a[k].float() - b[k].float()).abs().max().item()
            raise SystemExit(f"  {k}: the GGUF round trip changes it by {d}")


def value_norms(model, ids):
    """`[layer][head][token]`: ‖W_o[:, h] · v_j‖, token j's value vector (of head h's key/value
    head, bias included) through head h's slice of the output projection (no bias): the norms
    of Kobayashi et al. 2020's value-weighted attention."""
    cfg = model.config
    heads, kv = cfg.num_attention_heads, cfg.num_key_value_heads
    hooks, vs = [], {}

    def grab(l):
        def hook(mod, args, out):
            vs[l] = out.detach()
        return hook

    for l, layer in enumerate(model.model.layers):
        att = layer.self_attn
        if hasattr(att, "v_proj"):
            hooks.append(att.v_proj.register_forward_hook(grab(l)))
        else:  # Phi-3: the values are the last rows of the fused projection
            hooks.append(att.qkv_proj.register_forward_hook(grab(l)))
    with torch.no_grad():
        model(torch.tensor([ids]))
    for h in hooks:
        h.remove()
    out = []
    for l, layer in enumerate(model.model.layers):
        att = layer.self_attn
        v = vs[l][0]
        hd = getattr(att, "head_dim", cfg.hidden_size // heads)
        if not hasattr(att, "v_proj"):
            v = v[:, heads * hd + kv * hd:]
        wo = att.o_proj.weight.detach()  # (width, heads · head_dim)
        rows = []
        for h in range(heads):
            vh = v[:, (h // (heads // kv)) * hd:][:, :hd]  # (n, head_dim)
            y = vh @ wo[:, h * hd:(h + 1) * hd].T
            rows.append([float(x) for x in y.norm(dim=-1)])
        out.append(rows)
    return out


def golden(s, model, tok):
    records = []
    for i, p in enumerate(PROMPTS):
        ids = tok(p)["input_ids"]
        with torch.no_grad():
            out = model(torch.tensor([ids]), output_attentions=True)
            first = out.logits[0, -1]
            top = torch.topk(first, 5)
            seq, margins = list(ids), []
            for _ in range(STEPS):
                lg = model(torch.tensor([seq])).logits[0, -1]
                t2 = torch.topk(lg, 2)
                margins.append(float(t2.values[0] - t2.values[1]))
                seq.append(int(t2.indices[0]))
        att = [a[0] for a in out.attentions]  # per layer (heads, n, n)
        rec = {
            "prompt": p,
            "ids": ids,
            "top5_ids": top.indices.tolist(),
            "top5_logits": [float(v) for v in top.values],
            "greedy": seq[len(ids):],
            "margins": margins,
            # [layer][head][key]: the last query's row
            "last_row_attention": [[[float(x) for x in a[h, -1]] for h in range(a.shape[0])] for a in att],
        }
        if i == 0:
            # [layer][head][query][key]
            rec["attention"] = [[[[float(x) for x in row] for row in a[h]] for h in range(a.shape[0])] for a in att]
            rec["value_norms"] = value_norms(model, ids)
        records.append(rec)
        print(f"  {len(ids)} tokens {p[:40]!r}: top {top.indices[0].item()}, greedy {seq[len(ids):]}, "
              f"min margin {min(margins):.4f}", file=sys.stderr)
    texts = [{"text": t, "ids": tok(t)["input_ids"]} for t in TEXTS]
    return records, texts


def build(name):
    import transformers

    q8 = name.endswith("-q8_0")
    base = name[: -len("-q8_0")] if q8 else name
    torch.manual_seed(0)
    s = SPEC[base]()
    m = s["model"].float().eval()
    m.config._attn_implementation = "eager"
    randomize(m, seed=sum(map(ord, base)), big=s.get("big", ()))
    os.makedirs(OUT, exist_ok=True)
    path = os.path.join(OUT, f"{name}.gguf")
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = os.path.join(tmp, f"{name}.gguf")
        write_gguf(tmp_path, s, q8)
        back, tok = load_back(tmp_path, s)
        if q8:
            # the reference is the file: transformers' model of it, weights dequantised
            print("  Q8_0: the golden is transformers' model of the file (dequantised)", file=sys.stderr)
            m = back
        else:
            check_load_back(m, back, s.get("gemma", False))
        if not q8:
            # the same logits, loaded back (with the keys given by hand) or not
            ref = m
            if s.get("loader_drops"):
                import copy

                ref = copy.deepcopy(m)
                for k, v in s["loader_drops"].items():
                    print(f"  transformers' model of the file has no {k}: compared without it", file=sys.stderr)
                    setattr(ref.config, k, v)
            with torch.no_grad():
                ids = torch.tensor([tok(PROMPTS[1])["input_ids"]])
                d = (ref(ids).logits - back(ids).logits).abs().max().item()
                if s.get("loader_drops"):
                    # and the window does change the original's logits on this prompt
                    assert (m(ids).logits - ref(ids).logits).abs().max().item() > 1e-3
            print(f"  loaded back: every weight equal, logits within {d:.2e}", file=sys.stderr)
            assert d < 1e-5, d
        records, texts = golden(s, m, tok)
        os.replace(tmp_path, path)
    with open(os.path.join(OUT, f"{name}.json"), "w") as f:
        json.dump({
            "made_by": f"scripts/tiny_decoders.py, transformers {transformers.__version__}, "
                       f"torch {torch.__version__}, float32, eager attention, on CPU",
            "file": f"{name}.gguf",
            "architecture": s["arch"],
            "prompts": records,
            "texts": texts,
        }, f, indent=None, ensure_ascii=False)
    print(f"wrote {path} ({os.path.getsize(path) >> 10} KiB)", file=sys.stderr)


def main():
    torch.set_num_threads(2)
    names = sys.argv[1:] or list(SPEC) + Q8
    for n in names:
        if n.removesuffix("-q8_0") not in SPEC:
            raise SystemExit(f"no model {n!r}: {', '.join(list(SPEC) + Q8)}")
    for n in names:
        print(n, file=sys.stderr)
        build(n)


if __name__ == "__main__":
    main()
