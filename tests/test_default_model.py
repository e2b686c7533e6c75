"""The shipped default model reads fresh captcha-package captchas."""

import pytest

from captchalens.contract import load_meta
from captchalens.decode import decode
from captchalens.solver import get_solver
from captchalens.training.generate import GenSpec, generate


@pytest.fixture(scope="module")
def solver(default_model_dir):
    return get_solver(default_model_dir)


def _accuracy(solver, spec, n, seed):
    images, texts = generate(spec, n, seed, workers=1, progress=False)
    answers = decode(solver.probs(images), solver.meta)
    return sum(a == t for (a, _), t in zip(answers, texts)) / n


def test_default_model_states_its_contract(default_model_dir):
    meta = load_meta(default_model_dir)
    assert meta.charset == "0123456789abcdefghijklmnopqrstuvwxyz" and meta.length == 4
    assert meta.params <= 1_000_000 and meta.macs <= 50_000_000
    assert meta.metrics.get("captcha_acc_160x60", 0) >= 0.99  # measured on 2,000 fresh captchas at training time


def test_default_model_reads_fresh_160x60_captchas(solver):
    # seeds never used in training (training used seed 1 and 1_000_004)
    assert _accuracy(solver, GenSpec(), 300, seed=2026) > 0.98


@pytest.mark.parametrize("w, h", [(100, 60), (200, 70)])
def test_default_model_reads_other_sizes(solver, w, h):
    assert _accuracy(solver, GenSpec(width=(w, w), height=(h, h)), 150, seed=3000 + w) > 0.95
