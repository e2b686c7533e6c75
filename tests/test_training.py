"""Training end to end in a temp folder: train -> save -> load -> solve,
an interrupted run resumes, and a crash never leaves half a model."""
import csv
import threading

import numpy as np
import pytest

from captchalens._tf import keras
from captchalens.contract import KERAS_FILE, META_FILE, ModelMeta, load_meta
from captchalens.solver import Solver
from captchalens.training import networks
from captchalens.training import generate as generate_module
from captchalens.training.generate import GenSpec, cached, draw, generate
from captchalens.training.train import TrainConfig, save_model, train_generated


def test_a_tiny_training_run_writes_a_model_that_solves(tiny_model):
    meta = load_meta(tiny_model)
    assert (tiny_model / KERAS_FILE).is_file() and (tiny_model / "curves.png").is_file()
    assert meta.params > 0 and meta.macs > 0 and meta.trained_on["train_size"] == 256
    im, _ = draw(GenSpec(), seed=5, index=0)
    answer = Solver(tiny_model).solve_pixels([np.asarray(im)])[0]
    assert len(answer.text) == 4 and set(answer.text) <= set(meta.charset)
    assert 0.0 <= answer.confidence <= 1.0


def test_generation_is_seeded_and_independent_of_workers():
    spec = GenSpec(width=(100, 200), height=(50, 80))
    a_img, a_txt = generate(spec, 12, seed=7, workers=1, progress=False)
    b_img, b_txt = generate(spec, 12, seed=7, workers=1, progress=False, chunk=5)
    c_img, c_txt = generate(spec, 12, seed=8, workers=1, progress=False)
    assert a_txt == b_txt and all(np.array_equal(x, y) for x, y in zip(a_img, b_img))
    assert a_txt != c_txt
    assert len({im.shape for im in a_img}) > 1  # random sizes really vary


def test_two_processes_filling_the_same_cache_file_at_once_both_get_it(tmp_path, monkeypatch):
    # The workers of a cluster generate the same validation set into one cache at the same
    # moment (CI once lost a worker to a shared temp name: FileNotFoundError on the rename).
    spec = GenSpec()
    meta = ModelMeta(name="c", charset=spec.charset, input_height=20, input_width=40, input_channels=1,
                     decoding="ctc_greedy", output_shape=[10, len(spec.charset) + 1])
    both_generated = threading.Barrier(2, timeout=30)

    def generate_then_wait(spec, n, seed, meta, **kw):  # each writer's own pixels, to tell them apart
        mine = np.full((n, meta.input_height, meta.input_width, 1), threading.get_ident() % 251, np.uint8)
        both_generated.wait()  # neither writes before both have generated
        return mine, [f"t{i}" for i in range(n)]

    both_written = threading.Barrier(2, timeout=30)
    real_savez = np.savez

    def savez_then_wait(*args, **kw):
        real_savez(*args, **kw)
        both_written.wait()  # neither renames before both have written

    monkeypatch.setattr(generate_module, "generate", generate_then_wait)
    monkeypatch.setattr(np, "savez", savez_then_wait)
    got, errors = [], []

    def worker():
        try:
            got.append(cached(spec, 6, 3, meta, tmp_path, workers=1, progress=False))
        except Exception as e:  # noqa: BLE001 - the test reports whatever a writer raised
            errors.append(e)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors and len(got) == 2
    files = sorted(p.name for p in tmp_path.iterdir())
    assert len(files) == 1 and files[0].endswith(".npz")  # one cache file, no temp left behind
    monkeypatch.undo()
    x, texts = cached(spec, 6, 3, meta, tmp_path, workers=1, progress=False)  # read from the file
    assert texts == got[0][1]
    assert any(np.array_equal(x, g[0]) for g in got)  # one writer's whole output


class _Crash(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        raise RuntimeError("simulated crash after the first epoch")


def test_an_interrupted_run_resumes_where_it_stopped(tmp_path):
    out = tmp_path / "m"
    cfg = dict(out=str(out), name="m", width_mult=0.25, train_size=128, val_size=32, epochs=2,
               verbose=0, workers=1, cache=str(tmp_path / "cache"))
    with pytest.raises(RuntimeError, match="simulated crash"):
        train_generated(TrainConfig(**cfg, extra_callbacks=[_Crash()]))
    assert not out.exists()  # no half-written model
    train_generated(TrainConfig(**cfg))
    with open(tmp_path / "m.work" / "log.csv") as f:
        epochs = [int(r["epoch"]) for r in csv.DictReader(f)]
    assert epochs == [0, 1]  # epoch 0 was not trained again
    assert load_meta(out).trained_on["epochs_run"] >= 1


def test_a_crash_while_saving_keeps_the_old_model(tmp_path, tiny_model):
    meta = load_meta(tiny_model)
    model = keras.models.load_model(tiny_model / KERAS_FILE, compile=False)
    out = save_model(model, meta, tmp_path / "m")
    before = (out / META_FILE).read_text()

    def boom(*a, **k):
        raise OSError("disk full")

    model.save = boom
    with pytest.raises(OSError, match="disk full"):
        save_model(model, meta, out)
    assert (out / META_FILE).read_text() == before and (out / KERAS_FILE).is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["m"]  # no temp folders left


@pytest.mark.parametrize("arch", ["small", "baseline", "ctc"])
def test_architectures_have_one_output_matching_the_contract(arch):
    from captchalens.training.train import make_meta

    meta = make_meta(TrainConfig(arch=arch, length=4, max_length=6 if arch == "ctc" else None))
    model = networks.build(arch, meta)
    assert len(model.outputs) == 1
    assert list(model.output_shape[1:]) == meta.output_shape
    if arch != "baseline":
        assert model.count_params() <= 1_000_000 and networks.count_macs(model) <= 50_000_000


def test_training_goes_on_from_a_base_model_of_the_same_settings(tmp_path, tiny_model):
    """How the default model's second stage is made: --base continues a model on new captchas."""
    base = load_meta(tiny_model)
    base_weights = keras.models.load_model(tiny_model / KERAS_FILE, compile=False).get_weights()
    cfg = dict(name="m2", width_mult=0.25, train_size=128, val_size=32, epochs=1, verbose=0,
               workers=1, seed=2, lr=1e-9)  # a learning rate this small leaves the weights as they were
    path, meta = train_generated(TrainConfig(out=str(tmp_path / "m2"), base=str(tiny_model), **cfg))
    assert meta.trained_on["base"]["name"] == base.name
    assert meta.trained_on["base"]["trained_on"]["train_size"] == base.trained_on["train_size"]
    after = keras.models.load_model(path / KERAS_FILE, compile=False).get_weights()
    kernels = [i for i, w in enumerate(base_weights) if w.ndim == 4]
    assert all(np.allclose(after[i], base_weights[i], atol=1e-5) for i in kernels)


def test_a_base_model_of_other_settings_is_refused_clearly(tmp_path, tiny_model):
    from captchalens.contract import ContractError

    with pytest.raises(ContractError, match="charset"):
        train_generated(TrainConfig(out=str(tmp_path / "m"), base=str(tiny_model), charset="0123456789",
                                    width_mult=0.25, train_size=64, val_size=16, epochs=1, verbose=0,
                                    workers=1))
    with pytest.raises(ContractError, match="cannot be grown"):  # narrower than the base
        train_generated(TrainConfig(out=str(tmp_path / "m"), base=str(tiny_model), width_mult=0.125,
                                    train_size=64, val_size=16, epochs=1, verbose=0, workers=1))
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize("arch", ["general", "ctc"])
def test_a_wider_model_grown_from_a_narrower_one_reads_exactly_as_it_did(arch):
    """--base with a larger --width-mult (the general reader's stage 6): the grown model starts
    from the base's function, not from scratch, and its new channels are free to learn."""
    from captchalens.training.train import make_meta

    meta = make_meta(TrainConfig(arch=arch, length=4, max_length=6))
    keras.utils.set_random_seed(3)
    base = networks.build(arch, meta, width=0.5)
    rng = np.random.default_rng(0)
    for layer in base.layers:  # trained-looking batch-norm statistics, not the identity it starts as
        if isinstance(layer, keras.layers.BatchNormalization):
            g, b, m, v = layer.get_weights()
            layer.set_weights([rng.uniform(0.5, 2, g.shape), rng.normal(0, 0.3, b.shape),
                               rng.normal(0, 0.3, m.shape), rng.uniform(0.5, 2, v.shape)])
    wide = networks.build(arch, meta, width=0.75)
    grown = networks.widen_from(wide, base)
    assert wide.count_params() > 1.5 * base.count_params() and "stem" in grown
    x = rng.uniform(0, 1, (8, meta.input_height, meta.input_width, meta.input_channels)).astype(np.float32)
    np.testing.assert_allclose(wide.predict(x, verbose=0), base.predict(x, verbose=0), atol=1e-4)
    stem = wide.get_layer("stem").get_weights()[0]
    new = stem[..., base.get_layer("stem").filters:]
    assert new.std() > 0 and not np.allclose(new[..., 0], new[..., 1])  # random, not zero or copies
    with pytest.raises(ValueError, match="does not fit"):
        networks.widen_from(networks.build(arch, meta, width=0.25), base)


def test_a_model_that_flattens_before_its_dense_layer_is_not_widened():
    """The fixed-length models' dense layer reads columns x channels interleaved: a grown copy
    would read garbage, so widening says so instead."""
    from captchalens.training.train import make_meta

    meta = make_meta(TrainConfig(arch="small", length=4))
    with pytest.raises(ValueError, match="cannot be widened"):
        networks.widen_from(networks.build("small", meta, width=0.5), networks.build("small", meta, width=0.25))
