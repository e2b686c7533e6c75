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
    from captchalens.paths import DEFAULT_MODEL

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


# ---- the local host (Flask's conftest pattern: a module gives `app`, these do the rest) ----

@pytest.fixture(scope="session")
def model(random_model) -> Path:
    """The model the host tests serve: random weights, the right contract, a different answer
    per captcha (answers are compared with the Python solver's, not with the truth)."""
    return random_model


@pytest.fixture()
def home(tmp_path, monkeypatch) -> Path:
    """$CAPTCHALENS_HOME in a fresh folder, for one test (not created: the host creates it)."""
    monkeypatch.setenv("CAPTCHALENS_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


@pytest.fixture()
def client(app):
    """A test client for the module's `app` that calls from 127.0.0.1, as a browser on this machine does."""
    from support_host import loopback_client

    return loopback_client(app)


@pytest.fixture(scope="module")
def host(tmp_path_factory, model):
    """`captchalens serve` in its own process, on a free port, with a home it creates on first run."""
    from support_host import HostProcess

    server = HostProcess(tmp_path_factory.mktemp("serve") / "home", [model])
    try:
        yield server.wait_ready()
    finally:
        server.stop()


@pytest.fixture(scope="module")
def module_home(tmp_path_factory) -> Path:
    """$CAPTCHALENS_HOME in a fresh folder, for one test module."""
    with pytest.MonkeyPatch.context() as mp:
        folder = tmp_path_factory.mktemp("home")
        mp.setenv("CAPTCHALENS_HOME", str(folder))
        yield folder
