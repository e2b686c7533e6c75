"""Shared fixtures. Feature-specific helpers live beside their tests
(tests/support_*.py), not here."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))  # tests/support_*.py

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def default_model_dir() -> Path:
    from captchalens.solver import DEFAULT_MODEL

    return DEFAULT_MODEL


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A tiny fixed-length model trained for seconds: right structure, poor accuracy."""
    from captchalens.training.train import TrainConfig, train_generated

    out = tmp_path_factory.mktemp("tiny") / "tiny"
    path, _ = train_generated(TrainConfig(out=str(out), name="tiny", width_mult=0.25, train_size=256,
                                          val_size=64, epochs=1, verbose=0, workers=1))
    return path


@pytest.fixture(scope="session")
def random_model(tmp_path_factory) -> Path:
    """A model with seeded random weights: the right contract, a different answer per captcha."""
    from support_host import untrained_model

    return untrained_model(tmp_path_factory.mktemp("random-model") / "random")


@pytest.fixture(scope="module")
def module_home(tmp_path_factory) -> Path:
    """$CAPTCHALENS_HOME in a fresh folder, for one test module."""
    with pytest.MonkeyPatch.context() as mp:
        folder = tmp_path_factory.mktemp("home")
        mp.setenv("CAPTCHALENS_HOME", str(folder))
        yield folder
