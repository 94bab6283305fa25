"""``attend.train``: a small transformer trained from scratch on attend's kernel, from Python —
the run ``attend train`` makes (the same Rust code: the same seed gives the same weights),
with progress in a notebook, the loss and the task's measures as arrays, and the model
ready to explain."""

from __future__ import annotations

import json
import os
import sys
from typing import Optional

import numpy as np

from . import _attend
from ._models import load
from .errors import InvalidArgument, _integer, _real


class TrainingRun:
    """A finished run: ``loss`` (training loss per step), ``eval_steps``, ``eval_loss`` and
    ``accuracy`` (held-out, at each evaluation; accuracy for the Winograd task), ``held_out``
    (the Winograd task's final measures: accuracy, the decisive head and its weights, the
    accuracy with each head ablated), ``decisive_head`` and ``decisive_weight`` (its mean
    weight on the referent and on the other noun), ``output`` (the checkpoint folder) and
    ``model`` (the trained model, as ``attend.load(output)`` gives it: ``explain``,
    ``generate``)."""

    def __init__(self, d: dict):
        self.loss: np.ndarray = d["losses"]
        evals = d["evals"]
        self.eval_steps = np.array([e[0] for e in evals], dtype=np.int64)
        self.eval_loss = np.array([e[1] for e in evals], dtype=np.float32)
        self.accuracy = np.array([np.nan if e[2] is None else e[2] for e in evals], dtype=np.float32)
        self.held_out: Optional[dict] = json.loads(d["held_out"]) if d["held_out"] else None
        self.output: str = os.fspath(d["output"])
        self.seconds: float = d["seconds"]
        self.tokens: int = d["tokens"]
        self._model = None
        self._page: Optional[str] = d["page"]
        self.probe = list(d["probe"])
        self.snapshot_steps = list(d["snapshot_steps"])
        n, L, H = len(self.probe), d["layers"], d["heads"]
        self.snapshots: np.ndarray = d["snapshots"].reshape(len(self.snapshot_steps), L, H, n, n)
        if self.held_out:
            self.decisive_head = tuple(self.held_out["head"])
            self.decisive_weight = (self.held_out["head_correct"], self.held_out["head_other"])
        else:
            self.decisive_head = None
            self.decisive_weight = None

    @property
    def model(self):
        if self._model is None:
            self._model = load(self.output)
        return self._model

    def html(self) -> str:
        """The training page (needs ``snapshots=``): the probe's attention at each snapshot
        under a scrubber, the decisive head first, beside the loss curve — what
        ``attend train --snapshots`` writes as training.html."""
        if self._page is None:
            raise InvalidArgument("train(..., snapshots=N) keeps the attention this page shows")
        return self._page

    def _repr_html_(self) -> Optional[str]:
        from ._models import _frame

        return None if self._page is None else _frame(self._page)

    def save_html(self, path) -> None:
        """Writes :meth:`html` to ``path`` (whole or not at all)."""
        from ._models import _write_atomic

        _write_atomic(path, self.html())

    def __repr__(self) -> str:
        last = f"{self.loss[-1]:.3f}" if len(self.loss) else "—"
        acc = f", held-out accuracy {self.held_out['accuracy']:.1%}" if self.held_out else ""
        return f"TrainingRun({len(self.loss)} steps, final loss {last}{acc}, saved in {self.output!r})"


class _Progress:
    """tqdm.auto's bar when installed (a notebook widget, or a terminal bar); a plain line at
    each evaluation otherwise."""

    def __init__(self, total: int, first: int):
        try:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, initial=first, unit="step", desc="training")
        except ImportError:
            self.bar = None
        self.recent = []

    def __call__(self, step, total, loss, ev):
        if self.bar is not None and self.bar.total != total:
            self.bar.total = total
            self.bar.refresh()
        if ev is not None:
            held, acc = ev
            line = f"step {step}: held-out loss {held:.3f}" + ("" if acc is None else f", accuracy {acc:.1%}")
            if self.bar is not None:
                self.bar.write(line)
            else:
                print(line, file=sys.stdout, flush=True)
            return
        self.recent = (self.recent + [loss])[-20:]
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{sum(self.recent) / len(self.recent):.3f}")

    def close(self):
        if self.bar is not None:
            self.bar.close()


def train(
    task: str = "winograd",
    *,
    file: Optional[str] = None,
    ctx: int = 128,
    steps: Optional[int] = None,
    seed: int = 1,
    layers: Optional[int] = None,
    heads: Optional[int] = None,
    dim: Optional[int] = None,
    batch: Optional[int] = None,
    lr: Optional[float] = None,
    eval_every: int = 100,
    output: Optional[str] = None,
    resume: Optional[str] = None,
    force: bool = False,
    progress: bool = True,
    snapshots: int = 0,
) -> TrainingRun:
    """Trains a small transformer from scratch, as ``attend train`` does, with its options:
    ``task="winograd"`` (the built-in task in which an adjective decides what "it" refers to)
    or ``task="text"`` with ``file=`` (a byte-level model of a text, ``ctx`` bytes of context);
    ``steps``, ``seed``, ``layers``, ``heads``, ``dim``, ``batch``, ``lr`` (the task's
    defaults when None); a held-out evaluation and a checkpoint in ``output`` (default
    ``attend-winograd`` / ``attend-text``) every ``eval_every`` steps; ``resume=`` a checkpoint
    folder to go on from (to ``steps`` in all); ``force=True`` to replace a checkpoint;
    ``snapshots=N``: the probe sentence's attention kept N times over the run (and before it),
    shown by the result's page (``html()``, the notebook frame): attention being learned.

    The same seed gives the same weights as the CLI, bit for bit. The GIL is released while it
    computes; Ctrl-C (KeyboardInterrupt, or the notebook's stop button) stops it after the
    current step with a checkpoint saved there — ``resume=output`` goes on."""
    if task not in ("winograd", "text"):
        raise InvalidArgument(f"task must be 'winograd' or 'text', not {task!r}")
    opt = lambda name, v, lo=1: None if v is None else _integer(name, v, lo, 1 << 40)  # noqa: E731
    out = output if output is not None else (resume if resume is not None else f"attend-{task}")
    bar = None
    if progress:
        first = 0
        if resume is not None and os.path.exists(os.path.join(os.fspath(resume), "config.json")):
            try:
                with open(os.path.join(os.fspath(resume), "config.json"), encoding="utf-8") as f:
                    first = json.load(f)["training"]["step"]
            except (OSError, ValueError, KeyError, TypeError):
                first = 0
        bar = _Progress(steps or (1000 if task == "winograd" else 2000), first)
    try:
        d = _attend.train(
            task,
            os.fspath(out),
            None if file is None else os.fspath(file),
            _integer("ctx", ctx, 2, 1 << 20),
            opt("steps", steps),
            _integer("seed", seed, 0, 2**64 - 1),
            opt("layers", layers),
            opt("heads", heads),
            opt("dim", dim),
            opt("batch", batch),
            None if lr is None else _real("lr", lr),
            _integer("eval_every", eval_every, 0, 1 << 40),
            None if resume is None else os.fspath(resume),
            bool(force),
            bar,
            _integer("snapshots", snapshots, 0, 1000),
        )
    finally:
        if bar is not None:
            bar.close()
    return TrainingRun(d)
