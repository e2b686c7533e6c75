"""Train a model and write it, with its metadata, atomically.

    captchalens train --out runs/default            # the shipped default model
    captchalens train --data my_captchas/ --out m/  # a site's own captchas

Training keeps a work folder (``<out>.work/``) with a checkpoint per epoch
(an interrupted run resumes from it when started again with the same
command), a CSV log and the training curves.  The model folder itself is
only written at the end, into a temp folder renamed into place: a crash never
leaves a half-written model.
"""
from __future__ import annotations

import datetime as _dt
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

# Everything a run needs is imported here, up front, not lazily: a long run must not pick up
# files changed under it (an import at the end of the first epoch once read a newer decode.py
# than the ModelMeta loaded at the start, and 25 minutes of training were lost).
from captchalens._tf import keras, tf
from captchalens.contract import KERAS_FILE, ModelMeta, pixel_preprocessing
from captchalens.decode import decode
from captchalens.files import replace_dir, replacing
from captchalens.tflite import TFLITE_FILE, export_tflite
# Imported lazily by the Solver that measures the saved model: up front here, for the same reason
# (stage 15 of the general reader crashed in that measurement after preprocess.py was edited).
from captchalens import modelfile, preprocess, solver  # noqa: F401

from . import distribute, networks, wide
from .augment import AugmentSpec, make_augment, stretch_problem
from .calibrate import on_validation
from .config import TrainConfig
from .evaluate import record_fresh_metrics
from .generate import GenSpec, cached, spec_record
from .render import RenderSpec, font_key


# The general reader reads each image at the geometric mean of its reference width and the
# image's own width at 48 rows (contract.WIDTH_RULES).  Chosen on 4,000 fresh renders of its own
# mix (stage 14: 42.6 % whole-captcha ignoring case, against 41.1 at 160 wide for every image,
# 41.6 at the image's own aspect); bench/results/zero_shot_variants.md has the held-out sets.
# Each image is also read at other scales of that width (the rule's scales): first at 85 and 115 %,
# the surest read answering (on 4,000 fresh renders of the mix 42.05 -> 43.88 %); since, at nine
# scales from 80 to 120 % in 5 % steps, nearest first, the text most reads give answering (combine
# "vote", reading stopping once the answer is known: 6.6 reads a captcha on the held-out sets), on
# the same renders 43.88 -> 45.08 %, where nine scales with the surest answering read 44.57.
GENERAL_WIDTH_RULE = {"rule": "geometric_mean", "multiple": 8, "min": 64, "max": 320,
                      "scales": [100, 95, 105, 90, 110, 85, 115, 80, 120], "combine": "vote"}


def make_meta(cfg: TrainConfig) -> ModelMeta:
    if cfg.arch in networks.CTC_ARCHITECTURES:
        steps = cfg.input_width // 4
        meta = ModelMeta(
            name=cfg.name, charset=cfg.charset, input_height=cfg.input_height,
            input_width=cfg.input_width, input_channels=1, decoding="ctc_greedy",
            output_shape=[steps, len(cfg.charset) + 1], min_length=cfg.length,
            max_length=cfg.max_length or cfg.length, architecture=cfg.arch)
        if cfg.arch == "general":
            meta.preprocessing["resize"]["width"] = dict(GENERAL_WIDTH_RULE)
        return meta.validate()
    return ModelMeta(
        name=cfg.name, charset=cfg.charset, input_height=cfg.input_height,
        input_width=cfg.input_width, input_channels=1, decoding="fixed",
        output_shape=[cfg.length, len(cfg.charset)], length=cfg.length, architecture=cfg.arch)


def encode_labels(texts: list[str], meta: ModelMeta) -> np.ndarray:
    """Texts -> int labels [N, L] (CTC: padded with -1 to max_length)."""
    index = {c: i for i, c in enumerate(meta.charset)}
    width = meta.length if meta.decoding == "fixed" else meta.lengths[1]
    y = np.full((len(texts), width), -1, np.int32)
    for i, t in enumerate(texts):
        y[i, :len(t)] = [index[c] for c in t]
    return y


def captcha_accuracy(meta: ModelMeta):
    """Keras metric: share of captchas whose every character is right."""
    if meta.decoding == "fixed":
        def captcha_acc(y_true, y_prob):
            pred = tf.argmax(y_prob, axis=-1, output_type=tf.int32)
            return tf.reduce_mean(tf.cast(tf.reduce_all(pred == tf.cast(y_true, tf.int32), axis=-1), tf.float32))
        return captcha_acc
    return None  # CTC: measured by the greedy decoder in evaluate()


class CtcValidation(keras.callbacks.Callback):
    """Whole-captcha accuracy of a CTC model on the validation set, decoded as the
    solver decodes (greedy), exact and ignoring case, written into the epoch's logs
    before the checkpoint and early-stopping callbacks read them."""

    def __init__(self, meta: ModelMeta, x_va, t_va: list[str]):
        super().__init__()
        self.meta, self.x_va, self.t_va = meta, x_va, t_va

    def on_epoch_end(self, epoch, logs=None):
        probs = wide.predict(self.model, self.meta, self.x_va)  # at each image's width, if it has one
        answers = [t for t, _ in decode(probs, self.meta)]
        if logs is not None:
            logs["val_captcha_acc"] = float(np.mean([a == t for a, t in zip(answers, self.t_va)]))
            logs["val_captcha_acc_nocase"] = float(np.mean(
                [a.lower() == t.lower() for a, t in zip(answers, self.t_va)]))


class _Curves(keras.callbacks.Callback):
    """Saves loss/accuracy curves as a PNG after every epoch."""

    def __init__(self, csv_path: Path, png_path: Path):
        super().__init__()
        self.csv_path, self.png_path = csv_path, png_path

    def on_epoch_end(self, epoch, logs=None):
        plot_curves(self.csv_path, self.png_path)


def plot_curves(csv_path: Path, png_path: Path) -> None:
    import csv

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not csv_path.is_file():
        return
    with open(csv_path) as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return
    ep = [int(r["epoch"]) + 1 for r in rows]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    for key in ("loss", "val_loss"):
        if key in rows[0]:
            axes[0].plot(ep, [float(r[key]) for r in rows], marker="o", label=key)
    axes[0].set_xlabel("epoch"); axes[0].set_title("loss")  # noqa: E702
    for key in ("captcha_acc", "val_captcha_acc"):
        if key in rows[0]:
            axes[1].plot(ep, [float(r[key]) for r in rows], marker="o", label=key)
    axes[1].set_xlabel("epoch"); axes[1].set_title("whole-captcha accuracy")  # noqa: E702
    for ax in axes:
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    fig.tight_layout()
    with replacing(png_path) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)


def dataset(x, y: np.ndarray, batch: int, shuffle: bool, seed: int, augment=None):
    """uint8 model inputs (an array, or wide.WideImages: batches of one width each) -> float
    batches through tf.data."""
    if isinstance(x, wide.WideImages):
        ds = wide.batches(x, y, batch, shuffle, seed)
    else:
        ds = tf.data.Dataset.from_tensor_slices((x, y))
        if shuffle:
            ds = ds.shuffle(min(len(x), 50_000), seed=seed, reshuffle_each_iteration=True)
        ds = ds.batch(batch, drop_remainder=shuffle)
    to_float = lambda a, b: (tf.cast(a, tf.float32) / 255.0, b)  # noqa: E731
    ds = ds.map(to_float, num_parallel_calls=tf.data.AUTOTUNE)
    if augment is not None:
        ds = ds.map(augment, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


def fit(model, meta: ModelMeta, cfg: TrainConfig, x_tr, y_tr, x_va, y_va, work: Path, augment=None,
        t_va: list[str] | None = None, dist=None, n_train: int | None = None):
    """Compile and fit with the standard callbacks; returns the Keras history.
    Under a strategy (dist, n_train = the whole set's size): distribute.py's rules."""
    plan = distribute.plan_batches(dist, cfg.batch_size, cfg.lr, n_train or len(x_tr))
    steps_per_epoch = plan.steps
    schedule = keras.optimizers.schedules.CosineDecay(
        0.0, decay_steps=max(1, steps_per_epoch * cfg.epochs - min(steps_per_epoch, 500)),
        warmup_target=plan.lr, warmup_steps=min(steps_per_epoch, 500))
    fixed = meta.decoding == "fixed"
    loss = networks.smoothed_ce(0.1) if fixed else networks.ctc_loss
    with distribute.scope(dist):
        model.compile(optimizer=keras.optimizers.Adam(schedule), loss=loss,
                      metrics=[captcha_accuracy(meta)] if fixed else None, jit_compile=False)
    ctc_val = [] if fixed or t_va is None else [CtcValidation(meta, x_va, t_va)]
    if dist is not None:  # measured on every worker, the same figures: they stop together
        ctc_val = [distribute.validation(meta, x_va, y_va, loss, t_va)]
    monitor = "val_captcha_acc" if fixed or t_va is not None else "val_loss"
    mode = "max" if monitor == "val_captcha_acc" else "min"
    work.mkdir(parents=True, exist_ok=True)
    logs = distribute.log_dir(dist, work)  # a non-chief worker's go to its temp folder
    csv_path = logs / "log.csv"
    # Long epochs also keep a checkpoint every 1000 steps: a stopped run loses minutes, not an epoch.
    backup_freq = 1000 if steps_per_epoch > 2000 else "epoch"
    callbacks = [
        *ctc_val,
        keras.callbacks.BackupAndRestore(str(work / "backup"), save_freq=backup_freq),
        keras.callbacks.ModelCheckpoint(str(work / "best.h5"), monitor=monitor, mode=mode,
                                        save_best_only=True),
        keras.callbacks.EarlyStopping(monitor=monitor, mode=mode, patience=cfg.patience,
                                      restore_best_weights=True),
        keras.callbacks.CSVLogger(str(csv_path), append=True),
        _Curves(csv_path, logs / "curves.png"),
        *cfg.extra_callbacks,
    ]
    if dist is not None:
        tr = distribute.train_input(dist, x_tr, y_tr, plan, cfg.seed, augment, dataset)
        return model.fit(tr, steps_per_epoch=steps_per_epoch, epochs=cfg.epochs, callbacks=callbacks,
                         verbose=cfg.verbose)
    tr = dataset(x_tr, y_tr, cfg.batch_size, True, cfg.seed, augment)
    va = dataset(x_va, y_va, 512, False, cfg.seed)
    return model.fit(tr, validation_data=va, epochs=cfg.epochs, callbacks=callbacks,
                     verbose=cfg.verbose)


def save_model(model, meta: ModelMeta, out: str | os.PathLike, extra_files: dict[str, Path] | None = None) -> Path:
    """Write model + metadata into `out` atomically (temp folder + rename)."""
    out = Path(out).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    os.chmod(tmp, 0o755)
    try:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "HDF5 is legacy": it is what the tfjs converter reads
            model.save(tmp / KERAS_FILE, include_optimizer=False)
        export_tflite(model, meta, tmp / TFLITE_FILE)  # the single-captcha fast path
        meta.files = {**meta.files, "keras": KERAS_FILE, "tflite": TFLITE_FILE}
        meta.params = int(model.count_params())
        meta.macs = networks.count_macs(model, (meta.input_height, meta.input_width, meta.input_channels))
        meta.created = meta.created or _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        os.chmod(meta.save(tmp), 0o644)
        for name, src in (extra_files or {}).items():
            if Path(src).is_file():
                shutil.copy2(src, tmp / name)
        replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def train_generated(cfg: TrainConfig) -> tuple[Path, ModelMeta]:
    """Train on captchas from the `captcha` package (the default model's recipe)."""
    t0 = time.time()
    dist = distribute.setup(cfg.strategy, cfg.peer_timeout)  # first: before any TensorFlow op
    meta = make_meta(cfg)
    problem = stretch_problem(cfg.stretch, cfg.augment, meta.width_rule is not None)
    if problem:
        raise ValueError(problem)
    if cfg.base:
        check_base(meta, cfg.base)
    spec = GenSpec(charset=cfg.charset, min_length=cfg.length,
                   max_length=cfg.max_length or cfg.length, width=tuple(cfg.gen_width),
                   height=tuple(cfg.gen_height), preferred=cfg.gen_preferred,
                   preferred_share=cfg.gen_preferred_share)
    x_tr, t_tr = _training_set(cfg, spec, cfg.train_size, cfg.seed, meta, dist)  # this worker's share
    x_va, t_va = _training_set(cfg, spec, cfg.val_size, cfg.seed + 1_000_003, meta)  # all, on every worker
    y_tr, y_va = encode_labels(t_tr, meta), encode_labels(t_va, meta)
    gen_s = time.time() - t0
    keras.utils.set_random_seed(cfg.seed)
    kw = {"width": cfg.width_mult} if cfg.arch != "baseline" else {}
    with distribute.scope(dist):
        model = networks.build(cfg.arch, meta, **kw)
        base = continue_from(model, meta, cfg.base) if cfg.base else None
    work = Path(cfg.work_dir or str(Path(cfg.out).resolve()) + ".work").resolve()
    augment = None
    if cfg.augment:
        augment = make_augment(AugmentSpec(stretch=cfg.stretch, multiple=meta.width_rule["multiple"])
                               if cfg.stretch else None)
    hist = fit(model, meta, cfg, x_tr, y_tr, x_va, y_va, work, augment=augment, t_va=t_va, dist=dist,
               n_train=cfg.train_size)
    train_s = time.time() - t0 - gen_s
    sources = {"captcha package 0.7.1 (generated)": 1.0 - cfg.render_share}
    if cfg.render_share:
        sources[f"captchalens render ({RenderSpec().scheme})"] = cfg.render_share
    meta.trained_on = {
        "source": " + ".join(k for k, v in sources.items() if v),
        "shares": {k: round(v, 4) for k, v in sources.items() if v},
        "spec": spec_record(spec),
        "train_size": cfg.train_size, "val_size": cfg.val_size, "seed": cfg.seed,
        "epochs_run": len(hist.history.get("loss", [])), "batch_size": cfg.batch_size, "lr": cfg.lr,
        "augment": cfg.augment,
        "stretch": cfg.stretch or None,
        "generate_seconds": round(gen_s, 1), "train_seconds": round(train_s, 1),
    }
    if cfg.render_share:
        meta.trained_on["render"] = {**RenderSpec().describe(), "font_families": font_key()}
    if base is not None:
        meta.trained_on["base"] = base
    if dist is not None:
        plan = distribute.plan_batches(dist, cfg.batch_size, cfg.lr, cfg.train_size)
        meta.trained_on.update(batch_size=plan.global_batch, lr=plan.lr,
                               distribute=distribute.describe(dist, plan))
    meta.trained_on.update(cfg.extra_meta)
    meta.metrics = {k: _last(hist, k) for k in ("val_captcha_acc", "val_captcha_acc_nocase")
                    if k in hist.history}
    model = distribute.model_to_save(dist, model, lambda: networks.build(cfg.arch, meta, **kw))
    if model is None:  # a cluster's non-chief worker: the chief writes the model
        distribute.barrier(dist)
        return None, meta
    meta.calibration = on_validation(model, meta, x_va, t_va)  # "N% sure" means N% right
    path = save_model(model, meta, cfg.out, {"curves.png": work / "curves.png", "log.csv": work / "log.csv"})
    if cfg.fresh_eval:
        meta.metrics = record_fresh_metrics(path, cfg.fresh_eval, workers=cfg.workers)
    distribute.barrier(dist)  # the other workers leave once the model is written
    return path, meta


_SAME = ("architecture", "charset", "decoding", "output_shape", "input_height", "input_width",
         "input_channels", "preprocessing")


def check_base(meta: ModelMeta, base_dir: str | os.PathLike) -> ModelMeta:
    """The base model must read the same contract (checked before generating)."""
    from captchalens.contract import ContractError, load_meta

    bmeta = load_meta(base_dir)  # clear ContractError for a missing or broken folder
    # The width rule is left out: it says how wide an image is read, not what the weights mean.
    same = lambda m, k: pixel_preprocessing(m.preprocessing) if k == "preprocessing" else getattr(m, k)  # noqa: E731
    diff = [k for k in _SAME if same(bmeta, k) != same(meta, k)]
    if diff:
        raise ContractError(f"{base_dir}: cannot continue from this model: its {', '.join(diff)} "
                            f"differ from the model being trained")
    return bmeta


def continue_from(model, meta: ModelMeta, base_dir: str | os.PathLike) -> dict:
    """Load a trained model's weights into `model` to train it further on new
    captchas (the default model is trained in two stages: see the Makefile).
    Returns the base's training record, so the new metadata keeps the history."""
    from captchalens.contract import ContractError
    from captchalens.modelfile import load_keras

    base_dir = Path(base_dir)
    bmeta = check_base(meta, base_dir)
    base = load_keras(base_dir / bmeta.files.get("keras", KERAS_FILE))  # runs nothing it holds
    record = {"folder": base_dir.name, "name": bmeta.name, "trained_on": bmeta.trained_on,
              "metrics": bmeta.metrics}
    if [w.shape for w in base.get_weights()] == [w.shape for w in model.get_weights()]:
        model.set_weights(base.get_weights())
        return record
    try:  # a larger --width-mult: grown so that it starts out reading exactly as the base does
        grown = networks.widen_from(model, base)
    except ValueError as e:
        raise ContractError(f"{base_dir}: cannot continue from this model: its layers differ "
                            f"and cannot be grown into this one's: {e}") from None
    record["widened"] = {"from_params": int(base.count_params()), "to_params": int(model.count_params()),
                         "layers": len(grown)}
    return record


def _training_set(cfg: TrainConfig, spec: GenSpec, n: int, seed: int, meta: ModelMeta, dist=None):
    """n captchas: the `captcha` package's, plus a render_share of the broad
    renderer's (training/render.py), in one seeded random order. With `dist`,
    this worker's contiguous share of each source's indices only."""
    n_render = int(round(n * cfg.render_share))
    first, count = distribute.shard_range(dist, n - n_render)
    x, texts = cached(spec, count, seed, meta, cfg.cache, workers=cfg.workers, start=first)
    if not n_render:
        return x, texts
    rspec = RenderSpec(min_length=spec.min_length, max_length=spec.max_length)
    first, count = distribute.shard_range(dist, n_render)
    xr, tr = cached(rspec, count, seed, meta, cfg.cache, workers=cfg.workers, start=first)
    order = np.random.default_rng(seed).permutation(len(texts) + len(tr))
    both = texts + tr  # once: building it per item made this quadratic (400k captchas: hours)
    return wide.concat([x, xr])[order], [both[i] for i in order]


def _last(hist, key):
    v = hist.history.get(key)
    return round(float(max(v)), 5) if v else None
