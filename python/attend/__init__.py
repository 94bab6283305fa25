"""attend — exact, fast attention on the CPU, and tools to see it.

>>> import numpy as np, attend
>>> q = k = v = np.random.rand(1, 4, 6, 8).astype(np.float32)
>>> out = attend.sdpa(q, k, v, is_causal=True)          # as torch's SDPA
>>> w = attend.attention_weights(q, k, v, is_causal=True)  # the weights torch will not give
>>> m = attend.load("minilm")
>>> ex = m.explain("The animal didn't cross the road because it was tired")
>>> ex.top("it")
>>> attend.view(my_attention, my_tokens)   # attention from anywhere, in attend's viewer
"""

from ._attend import __version__
from ._kernels import (
    KVCache,
    attention_weights,
    get_num_threads,
    scaled_dot_product_attention,
    sdpa,
    sdpa_backward,
    set_num_threads,
)
from ._models import CausalLM, Effect, Encoder, Explanation, Generation, load
from ._view import view
from ._train import TrainingRun, train
from .errors import AttendError, InvalidArgument, ModelError, ShapeError

__all__ = [
    "__version__",
    "sdpa",
    "scaled_dot_product_attention",
    "attention_weights",
    "sdpa_backward",
    "KVCache",
    "set_num_threads",
    "get_num_threads",
    "load",
    "view",
    "train",
    "TrainingRun",
    "Encoder",
    "CausalLM",
    "Effect",
    "Explanation",
    "Generation",
    "AttendError",
    "ShapeError",
    "InvalidArgument",
    "ModelError",
]


def __getattr__(name):
    # `attend.torch` (the autograd Function) and `attend.ray` (Ray Data) import torch and Ray
    # only when they are first used
    if name in ("torch", "ray"):
        import importlib

        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'attend' has no attribute {name!r}")
