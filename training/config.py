"""Training settings: plain defaults, each a `captchalens train` flag.

Kept free of TensorFlow so that building the command line stays instant.
The defaults reproduce the shipped default model.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .generate import DEFAULT_CHARSET


@dataclass
class TrainConfig:
    """Plain defaults; each is a `captchalens train` flag (see cli.py)."""

    out: str = "runs/model"
    name: str = "model"
    arch: str = "small"  # small | baseline | ctc | general
    width_mult: float = 0.75  # channel multiplier of the small/ctc trunk
    charset: str = DEFAULT_CHARSET
    length: int = 4  # generated captchas: min length (= max for fixed models)
    max_length: int | None = None  # generated captchas: max length (CTC)
    input_height: int = 48
    input_width: int = 128
    gen_width: tuple[int, int] = (100, 220)  # random sizes for robustness...
    gen_height: tuple[int, int] = (50, 80)
    gen_preferred: tuple[int, int] | None = (160, 60)  # ...and this size most often
    gen_preferred_share: float = 0.4
    train_size: int = 160_000
    val_size: int = 4_000
    epochs: int = 10
    batch_size: int = 128
    lr: float = 2e-3  # peak learning rate, cosine-decayed to 0 over the run
    seed: int = 1
    cache: str | None = None  # folder to keep generated sets between runs
    patience: int = 4  # early stopping, in epochs without better val accuracy
    workers: int | None = None
    verbose: int = 1
    fresh_eval: int = 0  # fresh captchas per size measured into the metadata (CLI default 2000)
    base: str | None = None  # continue from this model's weights (same architecture and contract)
    render_share: float = 0.0  # share of training captchas from the broad renderer (training/render.py)
    augment: bool = False  # random warps, contrast and noise on top (training/augment.py)
    stretch: float = 0.0  # with augment and a width rule: each batch's width stretched by up to this share
    strategy: str | None = None  # None | "multi_worker" (--cluster, TF_CONFIG) | "mirrored" (distribute.py)
    work_dir: str | None = None  # checkpoints and logs (default <out>.work; shared by a cluster's workers)
    peer_timeout: float = 60.0  # seconds a cluster worker waits for the others before it gives up
    extra_callbacks: list = field(default_factory=list)  # e.g. tests that interrupt a run
    extra_meta: dict = field(default_factory=dict)
