"""Train on a folder of your own labelled captchas.

    captchalens train --data my_captchas/ --out models/mysite
    captchalens convert --model models/mysite --name mysite

Everything about the new scheme comes from the labels (file name = label, or
labels.csv): the character set, the lengths and the input size (from the
images' typical shape).  The network reads with CTC on top of the default
model's trunk (fine-tuning) — on small sets that generalizes far better than
one head per position, and far better than random weights; only when there is
no model to start from and every label has one length does it use fixed-length
heads (bench/results/retrain.md).  Small sets get strong augmentation, many
epochs of a cosine schedule and early stopping on a held-back validation split
chosen by a hash of each image's pixels.  A summary is printed at the start (what was read,
what was skipped and why, the scheme, the split) and at the end (validation
whole-captcha accuracy, time taken, the next command).
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import statistics
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from captchalens._tf import keras, tf
from captchalens.alphabet import FAMILIES, widen
from captchalens.decode import decode

from . import distribute
from .folder import DataError, load_folder, split

INPUT_HEIGHT = 48  # every model reads 48 rows: the default model's trunk collapses exactly 6
MIN_WIDTH, MAX_WIDTH = 64, 256  # input width = 48 x the images' median aspect, within these
MIN_IMAGES = 10  # below this there is nothing to learn from
FEW_IMAGES = 300  # below this, say that more labels would help
TARGET_STEPS = 1500  # optimizer steps a run aims for (small sets: many epochs)
MIN_EPOCHS, MAX_EPOCHS = 10, 200
SCRATCH_WIDTH = 0.75  # channel multiplier when not fine-tuning (the default model's)
LR = 2e-3  # peak learning rate (warm-up, then cosine decay to 0), from scratch or the default model
# Fine-tuning the general reader: a quarter of LR keeps more of what it reads. Measured on
# 200 labels of held-out schemes, whole captcha on 500 unseen (2e-3 / 5e-4 / 2e-4): serif-wave
# 60.0 / 71.0 / 74.8 %, casual-colour 40.6 / 52.4 / 51.2 %; mono-dark 94.0 / 96.6 %;
# captcha_images_v2 with 25 labels 76.9 / 79.5 %, with 100 98.4 / 98.2 %.
GENERAL_LR = 5e-4
# Fewer held-back captchas than this: epochs are judged by their character errors (then the loss),
# not whole-captcha accuracy, which moves in steps of 1/N and is mostly chance on a handful. Judged
# offline on each epoch of the same seven runs (bench/results/epoch_choice.md; test: 500 unseen,
# ignoring case), whole-captcha first vs character errors first: serif-wave 50 labels 63.2 vs
# 72.4 % (whole-captcha kept a lucky epoch 17 of a run that only ever lost ground), the six others
# the same epoch.
FEW_HELD_BACK = 50
# Fine-tuning the general reader: an L2 pull of every copied weight back toward its starting
# value (L2-SP, Li et al. 2018), so that a few hundred labels adapt the reader rather than
# overwrite what it reads. Strength per summed squared distance; 0 = off. Kept off: 0.1 read
# more on three held-out schemes and less on captcha_images_v2, all within run-to-run noise
# (bench/results/anchor.md, one run per cell).
GENERAL_ANCHOR = 0.0
RARE = 5  # a character seen fewer times than this in training is flagged
BN_MOMENTUM = 0.9  # batch-norm running statistics keep up with few steps per epoch (Keras: 0.99)
# Layers of the default model's trunk (training/networks.py); copied when fine-tuning.
TRUNK = ("stem", "sep2a", "sep2b", "sep3a", "sep3b", "sep4a", "sep4b", "collapse")
# Layers after the trunk that read the column sequence (the general architecture's): copied
# too when the new model has them with the same shapes.
SEQUENCE = ("context", "context2")
STEM_FILTERS = {"general": 24}  # stem filters at width 1 (the others': 32)
CTC_ARCHS = ("ctc", "general")
PROGRESS_ENV = "CAPTCHALENS_PROGRESS"  # a file to append JSON lines of progress to (the host's train jobs)


@dataclass
class RetrainConfig:
    """Settings of a folder run; None = chosen from the data."""

    data: str
    out: str
    name: str | None = None  # default: the --out folder's name
    arch: str = "auto"  # auto | small | baseline | ctc
    init: str = "auto"  # auto | finetune | scratch
    base: str | None = None  # model to fine-tune from (default: base_dir says)
    charset: str | None = None  # declared charset: labels using other characters are skipped
    lengths: tuple[int, int] | None = None  # keep labels of these lengths only
    input_size: tuple[int, int] | None = None  # (width, height)
    width_mult: float | None = None
    val_share: float = 0.15
    split_seed: int = 0
    epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    anchor: float | None = None  # L2-SP strength toward the base's weights (None: GENERAL_ANCHOR / 0)
    patience: int | None = None
    seed: int = 1
    augment: bool = True
    verbose: bool = True
    extra_callbacks: list = field(default_factory=list)
    strategy: str | None = None  # None | "multi_worker" | "mirrored" (training/distribute.py)
    work_dir: str | None = None  # checkpoints (default <out>.work; shared by a cluster's workers)
    peer_timeout: float = distribute.PEER_TIMEOUT


def _say(*a) -> None:
    print(*a, flush=True)


def _progress(**fields) -> None:
    """One JSON line ({"t": unix time, "phase": ..., ...}) into $CAPTCHALENS_PROGRESS, when set."""
    path = os.environ.get(PROGRESS_ENV)
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps({"t": round(time.time(), 3), **fields}) + "\n")


def _fmt_time(s: float) -> str:
    return f"{s:.0f} s" if s < 90 else f"{int(s // 60)} min {int(s % 60):02d} s"


# ---- the scheme, from the labels ---------------------------------------------

@dataclass
class Plan:
    """What the folder says, and what we will train."""

    charset: str
    min_len: int
    max_len: int
    length_counts: dict[int, int]
    arch: str
    decoding: str
    input_width: int
    input_height: int
    typical_size: tuple[int, int]
    notes: list[str] = field(default_factory=list)


def _lengths_text(counts: dict[int, int]) -> str:
    return ", ".join(f"{n} chars: {k}" for n, k in sorted(counts.items()))


def choose_input(images: list[np.ndarray]) -> tuple[int, int, tuple[int, int]]:
    """(width, height, typical image size): height 48, width 48 x median aspect."""
    aspect = statistics.median(im.shape[1] / im.shape[0] for im in images)
    width = int(round(INPUT_HEIGHT * aspect / 8.0)) * 8
    size = (int(statistics.median(im.shape[1] for im in images)),
            int(statistics.median(im.shape[0] for im in images)))
    return min(MAX_WIDTH, max(MIN_WIDTH, width)), INPUT_HEIGHT, size


def plan(cfg: RetrainConfig, images: list[np.ndarray], texts: list[str]) -> Plan:
    """Infer the charset and lengths, choose fixed heads or CTC and the input size."""
    chars = "".join(sorted(set("".join(texts))))
    charset = cfg.charset or chars
    counts = dict(sorted(Counter(len(t) for t in texts).items()))
    lo, hi = min(counts), max(counts)
    arch = cfg.arch
    notes = []
    if arch == "auto":
        # CTC even for one length: its classifier is shared by every position, which on
        # small sets generalizes far better than one head per position (bench/results/retrain.md).
        arch = "ctc"
    elif arch not in CTC_ARCHS and lo != hi:
        raise DataError(
            f"the labels have different lengths ({_lengths_text(counts)}), but a fixed-length "
            f"model (--arch {arch}) reads one length. Use --arch ctc (or --arch auto) for "
            f"variable lengths, or --length N to train on the N-character labels only.")
    if lo != hi:
        top, k = max(counts.items(), key=lambda kv: kv[1])
        if k >= 0.95 * len(texts):
            odd = [t for t in texts if len(t) != top][:3]
            notes.append(f"{len(texts) - k} label(s) are not {top} characters long (e.g. "
                         f"{', '.join(odd)}); if they are typos, fix them and train again")
    width, height, size = choose_input(images)
    if cfg.input_size:
        width, height = cfg.input_size
        if width % 8 or height % 8:
            raise DataError(f"--input {width}x{height}: width and height must be multiples of 8")
    if arch in CTC_ARCHS and width // 4 < 2 * hi + 1:  # room for a blank between repeated characters
        need = int(math.ceil((2 * hi + 1) * 4 / 8.0)) * 8
        if cfg.input_size or need > MAX_WIDTH:
            raise DataError(f"labels of up to {hi} characters need an input at least {need} pixels "
                            f"wide for CTC ({width} here)")
        width = need
    return Plan(charset=charset, min_len=lo, max_len=hi, length_counts=counts, arch=arch,
                decoding="ctc_greedy" if arch in CTC_ARCHS else "fixed", input_width=width,
                input_height=height, typical_size=size, notes=notes)


def make_meta(p: Plan, name: str):
    from captchalens.contract import ModelMeta

    if p.decoding == "ctc_greedy":
        return ModelMeta(name=name, charset=p.charset, input_height=p.input_height,
                         input_width=p.input_width, input_channels=1, decoding="ctc_greedy",
                         output_shape=[p.input_width // 4, len(p.charset) + 1], min_length=p.min_len,
                         max_length=p.max_len, architecture=p.arch).validate()
    return ModelMeta(name=name, charset=p.charset, input_height=p.input_height,
                     input_width=p.input_width, input_channels=1, decoding="fixed",
                     output_shape=[p.max_len, len(p.charset)], length=p.max_len,
                     architecture=p.arch).validate()


# ---- fine-tuning ---------------------------------------------------------------

@dataclass
class Init:
    """Where the weights start: a base model's trunk, or random."""

    mode: str  # "finetune" | "scratch"
    why: str
    base: str | None = None
    base_model: object = None
    base_meta: object = None
    width: float | None = None
    copy_head: bool = False

    def settle(self, meta) -> "Init":
        """Once the new model's metadata is final: reuse the heads too if the base reads
        exactly the same scheme (e.g. a site's model refined with new samples)."""
        if self.mode == "finetune":
            b = self.base_meta
            self.copy_head = (b.charset == meta.charset and b.decoding == meta.decoding
                              and b.output_shape == meta.output_shape and b.lengths == meta.lengths
                              and b.input_width == meta.input_width and b.architecture == meta.architecture)
            what = ("every layer" if self.copy_head
                    else "its trunk, and its classifier for the characters in common"  # transfer()
                    if b.decoding == meta.decoding == "ctc_greedy" else "its trunk; new output heads")
            self.why = f"fine-tuning {self.why} ({b.name}, {what})"
        return self


def widen_charset(seen: str, base_charset: str) -> str:
    """The labels' characters plus, for each family they use (digits, upper-case, lower-case
    letters), every character of that family the base reads, in the base's order (other label
    characters after): alphabet.widen. Sites draw from alphabets, and 50 labels of 5 characters
    rarely show all of one: a character never seen would be dropped from the classifier, and
    every captcha holding it misread (the label curve's serif-wave scheme, 0-9A-Za-z: worse
    after 50 labels than with none). A family the labels never use stays out: a site whose
    labels are all lower case gets a model that answers in lower case."""
    return widen(seen, base_charset)


def _families_text(charset: str) -> str:
    names = [name for name, chars in FAMILIES if set(chars) <= set(charset)]
    return ", ".join(names[:-1]) + (" and " if len(names) > 1 else "") + names[-1] if names else "character"


def base_dir(cfg: RetrainConfig) -> Path:
    """--base, else $CAPTCHALENS_MODEL (the model used wherever none is named), else the
    shipped general reader (it reads schemes it never saw), else the shipped default."""
    if cfg.base:
        return Path(cfg.base)
    from captchalens.contract import META_FILE
    from captchalens.paths import DEFAULT_MODEL, GENERAL_MODEL, MODEL_ENV, default_model_dir

    if os.environ.get(MODEL_ENV):
        return default_model_dir()
    return GENERAL_MODEL if (GENERAL_MODEL / META_FILE).is_file() else DEFAULT_MODEL


def choose_init(cfg: RetrainConfig, meta) -> Init:
    """Fine-tune when a base model with a compatible trunk exists (see TRUNK)."""
    if cfg.init == "scratch":
        return Init("scratch", "from scratch (--from-scratch)")
    from captchalens.contract import ContractError, load_meta, pixel_preprocessing
    from captchalens.modelfile import UnsafeModelError, load_keras

    base = base_dir(cfg)
    label = f"the {base.name} model" if not cfg.base else str(base)

    def no(reason: str) -> Init:
        if cfg.init == "finetune":
            raise ContractError(f"cannot fine-tune from {label}: {reason}")
        return Init("scratch", f"from scratch ({reason})")

    try:
        bmeta = load_meta(base)
    except ContractError as e:
        return no(f"no usable model there: {e}" if cfg.base else "it is not installed")
    if (bmeta.input_channels != meta.input_channels
            or pixel_preprocessing(bmeta.preprocessing) != pixel_preprocessing(meta.preprocessing)):
        return no("its input channels or preprocessing differ")
    try:
        bmodel = load_keras(base / bmeta.files.get("keras", "model.h5"))  # runs nothing it holds
    except UnsafeModelError as e:
        raise ContractError(f"cannot start from {label}: {e}") from None
    except ContractError as e:
        return no(f"its weights do not load ({str(e).splitlines()[0][:160]})")
    names = {layer.name for layer in bmodel.layers}
    if not set(TRUNK) <= names:
        return no(f"its architecture ({bmeta.architecture or 'unknown'}) has no reusable trunk")
    width = base_width(bmodel, bmeta)
    if width is None:
        return no("its layers' widths match no width multiplier of its architecture")
    if cfg.width_mult is not None and abs(cfg.width_mult - width) > 1e-6:
        return no(f"--width-mult {cfg.width_mult} differs from its {width:g}")
    return Init("finetune", label, str(base), bmodel, bmeta, width)


def _filters(model, names) -> dict[str, int]:
    out = {}
    for name in names:
        try:
            out[name] = model.get_layer(name).filters
        except ValueError:
            pass
    return out


def base_width(bmodel, bmeta) -> float | None:
    """The width multiplier the base was built with. Its stem gives it only to within
    rounding (29 stem filters of the general architecture's 24 at width 1 are any width from
    1.1875 to 1.229, and 1.2083 makes 116 of the 96 filters that width 1.2 made 115), so the
    candidates in that interval, round ones first, are rebuilt until one makes every trunk and
    sequence layer as wide as the base's. None if none does."""
    from . import networks

    stem, unit = bmodel.get_layer("stem").filters, STEM_FILTERS.get(bmeta.architecture, 32)
    want = _filters(bmodel, TRUNK + SEQUENCE)
    lo, hi = (stem - 0.5) / unit, (stem + 0.5) / unit
    candidates = []
    for grid in (8, 20, 40, 100, 1000):  # 1/8, 0.05, 0.025, 0.01, 0.001
        candidates += [k / grid for k in range(math.ceil(lo * grid), math.floor(hi * grid) + 1)]
    candidates.append(stem / unit)
    arch = bmeta.architecture if bmeta.architecture in networks.ARCHITECTURES else "small"
    seen = set()
    for w in candidates:
        if w in seen or w <= 0:
            continue
        seen.add(w)
        if _filters(networks.build(arch, bmeta, width=w), want) == want:
            return w
    return None


def prefers_fixed(init: Init, p: Plan) -> bool:
    """--arch auto, labels of one length: fixed-length heads rather than CTC when
    starting from random weights (CTC from scratch idles on blanks for longer than a
    small set allows — bench/results/retrain.md), or when the base is a fixed-length
    model of this very scheme (continue it whole)."""
    if p.min_len != p.max_len:
        return False
    if init.mode == "scratch":
        return True
    b = init.base_meta
    return b.decoding == "fixed" and b.charset == p.charset and b.length == p.max_len


def transfer(model, base, copy_head: bool = False, charsets: tuple[str, str] | None = None) -> list[str]:
    """Copy weights layer by layer (same name, same shapes): the trunk and the sequence
    readers; the heads only if copy_head. With charsets (base's, new model's) of two CTC
    models, the new classifier starts as the base's restricted to the new charset: each
    character's (and the blank's) column is copied, so fine-tuning starts from what the base
    already reads."""
    copied = []
    base_layers = {layer.name: layer for layer in base.layers}
    reused = TRUNK + SEQUENCE
    for layer in model.layers:
        src = base_layers.get(layer.name)
        if src is None or not layer.weights:
            continue
        if not copy_head and not any(layer.name == t or layer.name.startswith(t + "_") for t in reused):
            continue
        w = src.get_weights()
        if [a.shape for a in w] == [tuple(v.shape) for v in layer.weights]:
            layer.set_weights(w)
            copied.append(layer.name)
    if not copy_head and charsets and "logits" in base_layers and _copy_columns(
            base_layers["logits"], model.get_layer("logits"), *charsets):
        copied.append("logits (columns of the characters in common)")
    return copied


def anchor_to_start(model, copied: list[str], strength: float) -> int:
    """L2-SP: add strength x the summed squared distance of each copied layer's trainable
    weights from their values now (the base's, just copied) to the model's loss. Returns how
    many weights are anchored (0 when strength is 0)."""
    if not strength:
        return 0
    names = {c.split(" ", 1)[0] for c in copied}
    pairs = [(v, tf.constant(v.numpy())) for layer in model.layers if layer.name in names
             for v in layer.trainable_weights]
    if not pairs:
        return 0
    k = tf.constant(float(strength))
    model.add_loss(lambda: k * tf.add_n([tf.reduce_sum(tf.square(v - v0)) for v, v0 in pairs]))
    return int(sum(np.prod(v.shape) for v, _ in pairs))


def _copy_columns(src, dst, base_charset: str, charset: str) -> bool:
    """CTC classifiers [d, len(charset) + 1]: copy the columns of shared characters and the blank."""
    (wk, wb), (dk, db) = src.get_weights(), dst.get_weights()
    if wk.shape[0] != dk.shape[0] or wk.shape[1] != len(base_charset) + 1 or dk.shape[1] != len(charset) + 1:
        return False
    index = {c: i for i, c in enumerate(base_charset)}
    for j, c in enumerate(charset):
        i = index.get(c)
        if i is not None:
            dk[:, j], db[j] = wk[:, i], wb[i]
    dk[:, -1], db[-1] = wk[:, -1], wb[-1]
    dst.set_weights([dk, db])
    return True


# ---- training --------------------------------------------------------------------

class Validate(keras.callbacks.Callback):
    """Each epoch: whole-captcha accuracy on the held-back split, decoded exactly
    as the solver decodes; keeps the best weights (accuracy, then lower loss; with
    fewer than FEW_HELD_BACK held back, fewer character errors, then lower loss),
    stops after `patience` epochs without progress (not in the first half of the
    run: CTC from scratch can idle on blanks for many epochs before it reads
    anything) and restores the best."""

    def __init__(self, meta, x_va, y_va, t_va, loss_fn, patience, work: Path, say, score_start: bool = False,
                 dist=None):
        super().__init__()
        self.score_start, self.dist, self.best_weights = score_start, dist, None
        self.meta, self.x_va, self.y_va, self.t_va = meta, x_va, y_va, t_va
        self.loss_fn, self.patience, self.work, self.say = loss_fn, patience, work, say
        self.by_chars = judged_by_chars(len(t_va))
        self.best = None  # (acc, -loss), or (-character error rate, -loss)
        self.best_acc = 0.0
        self.best_epoch = self.last_epoch = -1
        self.t0 = time.time()

    def on_train_begin(self, logs=None):
        state = self.work / "best.json"
        if state.is_file() and (self.work / "best.weights.h5").is_file():  # resuming
            s = json.loads(state.read_text())
            self.best, self.best_epoch, self.best_acc = tuple(s["score"]), s["epoch"], s.get("acc", 0.0)
        elif self.score_start:
            # The starting weights count too: a reader fine-tuned on a handful of labels must
            # never end worse on them than it began.
            acc, cer, loss = self._score()
            self.best, self.best_epoch, self.best_acc = self._rank(acc, cer, loss), -1, acc
            self._keep_best()
            if self.say:
                self.say(f"  start      validation {100 * acc:5.1f}% (before training)"
                         + (f"  chars {100 * (1 - cer):5.1f}%" if self.by_chars else ""))

    def _keep_best(self) -> None:
        """The best weights into the work folder (a cluster: the chief's, and in memory)."""
        if self.dist is not None:
            self.best_weights = self.model.get_weights()  # every worker: a collective
            if not self.dist.is_chief:  # saving reads batch-norm statistics (collectives) too: into a temp
                with tempfile.TemporaryDirectory() as tmp:
                    self.model.save_weights(Path(tmp) / "best.weights.h5")
                return
        else:  # restored from memory: the start's weights (score_start), saved before the loss tracker
            self.best_weights = self.model.get_weights()  # had variables, do not load back into it
        self.model.save_weights(self.work / "best.weights.h5")
        (self.work / "best.json").write_text(json.dumps({"score": self.best, "epoch": self.best_epoch,
                                                          "acc": self.best_acc}))

    def _score(self) -> tuple[float, float, float]:
        """(whole-captcha accuracy, character error rate, loss) on the held-back split."""
        probs = (self.model.predict(self.x_va, batch_size=256, verbose=0) if self.dist is None
                 else distribute.predict_local(self.model, self.x_va))
        acc, cer = answer_scores([t for t, _ in decode(probs, self.meta)], self.t_va)
        return acc, cer, float(np.mean(self.loss_fn(self.y_va, probs)))

    def _rank(self, acc: float, cer: float, loss: float) -> tuple[float, float]:
        return (-round(cer, 6), -loss) if self.by_chars else (round(acc, 6), -loss)

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        self.last_epoch = epoch
        acc, cer, loss = self._score()
        logs["val_captcha_acc"], logs["val_loss"] = acc, loss
        score = self._rank(acc, cer, loss)
        better = self.best is None or score > self.best
        if better:
            self.best, self.best_epoch, self.best_acc = score, epoch, acc
            self._keep_best()
        if self.say:
            train_acc = logs.get("captcha_acc")
            self.say(f"  epoch {epoch + 1:3d}/{self.params['epochs']}  loss {logs.get('loss', 0):.3f}"
                     + (f"  train {100 * train_acc:5.1f}%" if train_acc is not None else "")
                     + f"  validation {100 * acc:5.1f}%"
                     + (f" chars {100 * (1 - cer):5.1f}%" if self.by_chars else "")
                     + f"{' *' if better else '  '}"
                     f"  {_fmt_time(time.time() - self.t0)}")
        if should_stop(epoch, self.best_epoch, self.params["epochs"], self.patience):
            self.model.stop_training = True

    def on_train_end(self, logs=None):
        if self.best_weights is not None:
            self.model.set_weights(self.best_weights)
        elif (self.work / "best.weights.h5").is_file():
            self.model.load_weights(self.work / "best.weights.h5")


def fit(model, meta, x_tr, y_tr, x_va, y_va, t_va, *, epochs, batch, lr, patience, seed, augment,
        work: Path, say=None, extra_callbacks=(), score_start: bool = False, dist=None, n_train=None):
    """Adam with warm-up + cosine decay over the whole run; augmentation in tf.data;
    the best epoch on the validation split is kept. Returns (epochs run, best epoch, best acc)."""
    from . import networks
    from .train import captcha_accuracy, dataset, plot_curves

    plan = distribute.plan_batches(dist, batch, lr, n_train or len(x_tr))  # one process: as given
    steps, lr = plan.steps, plan.lr
    total = steps * epochs
    warm = min(total // 10, 2 * steps)
    schedule = keras.optimizers.schedules.CosineDecay(
        0.0, decay_steps=max(1, total - warm), warmup_target=lr, warmup_steps=warm)
    fixed = meta.decoding == "fixed"
    loss_fn = networks.smoothed_ce(0.1) if fixed else networks.ctc_loss
    with distribute.scope(dist):
        model.compile(optimizer=keras.optimizers.Adam(schedule), loss=loss_fn,
                      metrics=[captcha_accuracy(meta)] if fixed else None, jit_compile=False)
    logs = distribute.log_dir(dist, work)  # a non-chief worker's go to its temp folder
    csv_path = logs / "log.csv"
    validate = Validate(meta, x_va.astype(np.float32) / 255.0, tf.constant(y_va), t_va, loss_fn,
                        patience, work, say, score_start, dist)
    callbacks = [
        keras.callbacks.BackupAndRestore(str(work / "backup")),  # an interrupted run resumes
        validate,
        keras.callbacks.CSVLogger(str(csv_path), append=True),
        keras.callbacks.LambdaCallback(  # the curves PNG every 10 epochs and at the end
            on_epoch_end=lambda e, _: e % 10 == 9 and plot_curves(csv_path, logs / "curves.png"),
            on_train_end=lambda _: plot_curves(csv_path, logs / "curves.png")),
        *extra_callbacks,
    ]
    from .augment import make_augment

    if dist is not None:
        tr = distribute.train_input(dist, x_tr, y_tr, plan, seed, make_augment() if augment else None, dataset)
        model.fit(tr, steps_per_epoch=steps, epochs=epochs, callbacks=callbacks, verbose=0)
    else:
        tr = dataset(x_tr, y_tr, batch, True, seed, make_augment() if augment else None)
        model.fit(tr, epochs=epochs, callbacks=callbacks, verbose=0)
    return validate.last_epoch + 1, validate.best_epoch + 1, validate.best_acc


def judged_by_chars(n_held_back: int) -> bool:
    """Whether so few captchas are held back that epochs are judged by character errors."""
    return n_held_back < FEW_HELD_BACK


def should_stop(epoch: int, best_epoch: int, epochs: int, patience: int) -> bool:
    """Early stopping: `patience` epochs without progress, and not in the first half of the run."""
    return epoch + 1 >= epochs // 2 and epoch - best_epoch >= patience


def default_patience(epochs: int) -> int:
    return max(10, epochs // 4)


def answer_scores(answers: list[str], truths: list[str]) -> tuple[float, float]:
    """(whole-captcha accuracy, character error rate: edit distance over the truths' characters)."""
    acc = float(np.mean([a == t for a, t in zip(answers, truths)]))
    return acc, sum(edit_distance(a, t) for a, t in zip(answers, truths)) / max(1, sum(map(len, truths)))


def _answer_probs(model, meta, images: list[np.ndarray], truths: list[str], work: Path):
    """A reader's answering probabilities on `images` as the solver reads them (every scale of
    its width rule, combined as its rule says), and reads_nll of the truths, from a copy
    written in the work folder."""
    from captchalens.solver import Solver

    from .train import save_model

    path = save_model(model, meta, work / "as-read", {})
    try:
        solver = Solver(path)
        return solver.answer_probs(images), reads_nll(solver, images, truths)
    finally:
        shutil.rmtree(path, ignore_errors=True)


def reads_nll(solver, images: list[np.ndarray], truths: list[str], allowed: str | None = None) -> float | None:
    """truth_nll over every read a solver makes of `images` (each scale of its width rule, with
    the characters `allowed` only), averaged. Which read answers depends on confidences and
    their temperature, so two readers of the same weights can answer from different reads;
    every read is the same for both."""
    from captchalens.decode import restrict

    each = []
    for percent in solver.meta.width_scales:
        probs = solver.probs(images, percent)
        nll = truth_nll(probs if allowed is None else restrict(probs, solver.meta, allowed), solver.meta, truths)
        if nll is None:
            return None
        each.append(nll)
    return float(np.mean(each))


# How much surer (mean CTC nats) a new model must be to break a tie: the base's own weights,
# kept when training never beat them and read through a head cut to the site's characters,
# give the same likelihoods up to float rounding, and must not win by it.
NLL_MARGIN = 1e-3


def beats_base(answers: list[str], base_answers: list[str], truths: list[str],
               nll: float | None = None, base_nll: float | None = None) -> bool:
    """Whether a site's new model reads its held-back captchas better than the reader it started
    from: fewer character errors (edit distance) and no fewer whole captchas.  With a few dozen
    labels only a handful are held back, so whole captchas alone move in steps of 20-25 %;
    character errors see the difference between them.  When both read them equally (often all
    of one or two), the one surer of the right answers wins (`nll`, `base_nll`: truth_nll, lower
    is surer); without those a tie keeps the base, which has read many schemes."""
    right = sum(a == t for a, t in zip(answers, truths))
    base_right = sum(a == t for a, t in zip(base_answers, truths))
    errors = sum(edit_distance(a, t) for a, t in zip(answers, truths))
    base_errors = sum(edit_distance(a, t) for a, t in zip(base_answers, truths))
    if (errors, right) == (base_errors, base_right) and nll is not None and base_nll is not None:
        return nll < base_nll - NLL_MARGIN
    return errors < base_errors and right >= base_right


def truth_nll(probs: np.ndarray, meta, truths: list[str]) -> float | None:
    """The mean CTC negative log-likelihood of the right answers under a CTC reader's
    probabilities (each step renormalised over the classes left, after an alphabet's
    restriction); None for fixed-length heads or a truth with a character outside the charset."""
    if meta.decoding == "fixed" or any(c not in meta.charset for t in truths for c in t):
        return None
    from .networks import ctc_loss
    from .train import encode_labels

    p = np.asarray(probs, np.float32)
    p = p / np.maximum(p.sum(-1, keepdims=True), np.float32(1e-12))
    loss = ctc_loss(tf.constant(encode_labels(truths, meta)), tf.constant(np.clip(p, 1e-7, 1.0)))
    return float(np.mean(loss.numpy()))


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance: characters inserted, deleted or replaced to turn a into b."""
    row = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        diag, row[0] = row[0], i
        for j, cb in enumerate(b, 1):
            diag, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, diag + (ca != cb))
    return row[-1]


def _schedule(cfg: RetrainConfig, n_train: int, init=None) -> dict:
    batch = cfg.batch_size or (32 if n_train < 2000 else 64)
    batch = max(1, min(batch, n_train))
    steps = max(1, n_train // batch)
    epochs = cfg.epochs or int(min(MAX_EPOCHS, max(MIN_EPOCHS, math.ceil(TARGET_STEPS / steps))))
    patience = cfg.patience or default_patience(epochs)
    from_general = init is not None and init.mode == "finetune" and init.base_meta.architecture == "general"
    lr = cfg.lr or (GENERAL_LR if from_general else LR)
    anchor = cfg.anchor if cfg.anchor is not None else (GENERAL_ANCHOR if from_general else 0.0)
    return {"batch": batch, "steps": steps, "epochs": epochs, "patience": patience, "lr": lr,
            "anchor": anchor}


def _fingerprint(*parts) -> str:
    return hashlib.sha1(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _prepare_work(work: Path, fingerprint: str, say) -> bool:
    """Keep an interrupted run's state only if it is the same run; returns resuming."""
    stamp = work / "run.json"
    interrupted = (work / "backup").is_dir() and any((work / "backup").iterdir())
    resuming = interrupted and stamp.is_file() and \
        json.loads(stamp.read_text()).get("fingerprint") == fingerprint
    if not resuming and work.exists():
        if interrupted and say:
            say("  (an interrupted run of different data or settings was found; starting afresh)")
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    stamp.write_text(json.dumps({"fingerprint": fingerprint}))
    return resuming


def _split_warnings(texts_tr: list[str], texts_va: list[str], charset: str) -> list[str]:
    seen = Counter("".join(texts_tr))
    notes = []
    only_val = sorted(set("".join(texts_va)) - set(seen))
    if only_val:
        notes.append(f"characters only in the validation part, never trained on: "
                     f"{''.join(only_val)!r}; add labelled captchas that use them")
    rare = sorted(c for c in set(charset) if 0 < seen[c] < RARE)
    if rare:
        notes.append(f"characters seen fewer than {RARE} times in training: {''.join(rare)!r}")
    return notes


def retrain(cfg: RetrainConfig):
    """Train a model on cfg.data and write it to cfg.out. Returns (path, meta)."""
    say = _say if cfg.verbose else None
    t0, c0 = time.time(), time.process_time()
    from captchalens.home import safe_name

    name = cfg.name or Path(cfg.out).resolve().name
    try:
        name = safe_name(name, "model name")
    except ValueError as e:
        raise DataError(f"{e}; choose one with --name") from None
    if not 0.0 < cfg.val_share <= 0.5:
        raise DataError(f"--val-share {cfg.val_share}: must be above 0 and at most 0.5")
    if cfg.anchor is not None and not (math.isfinite(cfg.anchor) and cfg.anchor >= 0):
        raise DataError(f"--anchor {cfg.anchor:g}: must be 0 (off) or a positive strength")
    if cfg.charset is not None and len(set(cfg.charset)) != len(cfg.charset):
        raise DataError(f"--charset {cfg.charset!r} repeats characters")
    out = Path(cfg.out).resolve()
    from captchalens.contract import META_FILE

    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / META_FILE).is_file())):
        raise DataError(f"--out {cfg.out} exists and is not a model folder: refusing to replace it; "
                        f"give a new folder")
    dist = distribute.setup(cfg.strategy, cfg.peer_timeout, say=say)  # before any TensorFlow op
    images, texts, report = load_folder(cfg.data, cfg.charset, cfg.lengths,
                                        charset_name="the --charset you gave")
    if len(texts) < MIN_IMAGES:
        raise DataError(f"only {len(texts)} usable labelled captcha(s) in {cfg.data}: too few to "
                        f"train (at least {MIN_IMAGES}; a few hundred is better)\n{report.summary()}")
    p = plan(cfg, images, texts)
    meta = make_meta(p, name)
    init = choose_init(cfg, meta)
    if cfg.arch == "auto" and prefers_fixed(init, p):
        p = plan(replace(cfg, arch="small"), images, texts)
        meta = make_meta(p, name)
    elif cfg.arch == "auto" and init.mode == "finetune" and init.base_meta.architecture == "general":
        # The general reader's own architecture, so its every layer carries over (its column
        # readers, and its classifier for the characters this site uses).
        widened = None if cfg.charset else widen_charset(p.charset, init.base_meta.charset)
        seen = len(p.charset)
        p = plan(replace(cfg, arch="general", charset=widened), images, texts)
        if widened and len(widened) > seen:
            p.notes.append(f"charset widened from the {seen} characters in the labels to "
                           f"every {_families_text(widened)} the general reader knows: a few dozen labels "
                           f"rarely show all of a site's characters (--charset to give them yourself)")
        meta = make_meta(p, name)
    init.settle(meta)
    tr, va = split(len(texts), report.keys, cfg.val_share, cfg.split_seed)  # by content: copies never straddle it
    if len(va) == 0:  # tiny folders: hold back at least one captcha
        tr, va = tr[:-1], tr[-1:]
    width = init.width if init.mode == "finetune" else (cfg.width_mult or SCRATCH_WIDTH)
    sched = _schedule(cfg, len(tr), init)
    t_tr, t_va = [texts[i] for i in tr], [texts[i] for i in va]
    notes = p.notes + _split_warnings(t_tr, t_va, p.charset)
    if p.decoding == "ctc_greedy" and init.mode == "scratch" and len(tr) < 1500:
        notes.append("CTC from random weights read nothing after training on 738 captchas (it did on "
                     "2,500); fine-tuning the default model (the default) avoids that")
    if len(texts) < FEW_IMAGES:
        notes.append(f"only {len(texts)} labelled captchas: a few hundred or more train a better model")

    if say:
        say(f"training on {Path(cfg.data).resolve()}")
        say("  " + report.summary().replace("\n", "\n  "))
        say(f"  charset ({len(p.charset)}): {p.charset}")
        say(f"  lengths: {_lengths_text(p.length_counts)}")
        lens = f"{p.min_len}" if p.min_len == p.max_len else f"{p.min_len}-{p.max_len}"
        hint = ""
        if cfg.arch == "auto" and p.min_len == p.max_len:
            hint = (" (--arch ctc for CTC)" if p.decoding == "fixed"
                    else " (--arch small for fixed-length heads)")
        say("  decoding: " + (f"fixed length, {p.max_len} output heads{hint}" if p.decoding == "fixed"
                              else f"CTC, {lens} characters, {p.input_width // 4} steps{hint}"))
        say(f"  input: {p.input_width}x{p.input_height} grayscale (images are typically "
            f"{p.typical_size[0]}x{p.typical_size[1]})")
        say(f"  split: {len(tr)} train / {len(va)} validation ({100 * cfg.val_share:g}% held back, "
            f"chosen by a hash of each image"
            + ("; so few that epochs are judged by their character errors" if judged_by_chars(len(va)) else "")
            + ")")
        say(f"  start: {init.why}")
        say(f"  schedule: up to {sched['epochs']} epoch(s) of {sched['steps']} step(s), "
            f"batch {sched['batch']}, peak learning rate {sched['lr']:g}, early stop after "
            f"{sched['patience']} epochs without progress, augmentation {'on' if cfg.augment else 'off'}"
            + (f", weights pulled toward the base's (L2-SP {sched['anchor']:g})"
               if sched["anchor"] and init.mode == "finetune" else ""))
        for n in notes:
            say(f"  note: {n}")

    from captchalens.contract import ContractError
    from captchalens.preprocess import Preprocessor

    from . import networks
    from .augment import AugmentSpec
    from .train import encode_labels, save_model

    held_back = [images[i] for i in va]  # read by the base too, at the end, as it reads a site
    x = Preprocessor(meta)(images)
    x = np.clip(np.rint(x * 255.0), 0, 255).astype(np.uint8)  # as train.dataset expects
    del images
    y = encode_labels(texts, meta)
    keras.utils.set_random_seed(cfg.seed)
    kw = {} if p.arch == "baseline" else {"width": width}
    with distribute.scope(dist):
        model = networks.build(p.arch, meta, **kw)
        for layer in model.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.momentum = BN_MOMENTUM
        ctc_pair = (init.mode == "finetune" and meta.decoding == init.base_meta.decoding == "ctc_greedy")
        copied = (transfer(model, init.base_model, init.copy_head,
                           (init.base_meta.charset, meta.charset) if ctc_pair else None)
                  if init.mode == "finetune" else [])
        if init.mode == "finetune":
            missed = [n for n in TRUNK if n not in copied]
            if missed:  # fine-tuning half a network from random weights reads far worse, silently
                raise ContractError(f"cannot fine-tune from {init.base}: its layers "
                                    f"{', '.join(missed)} do not fit the new model's shapes")
        anchored = anchor_to_start(model, copied, sched["anchor"])
    init.base_model = None
    work = Path(cfg.work_dir or str(out) + ".work").resolve()
    fingerprint = _fingerprint(meta.to_json(), report.files, texts, cfg.seed, cfg.split_seed,
                               cfg.val_share, sched, init.mode, init.base, cfg.augment)
    if (dist is None or dist.is_chief) and _prepare_work(work, fingerprint, say) and say:
        say(f"  resuming the interrupted run in {work}")
    distribute.barrier(dist)  # the others start once the chief has settled the work folder
    mine = distribute.shard_indices(dist, tr)  # a cluster: this worker's files of the training split
    if say:
        say("")
    _progress(phase="training", epoch=0, epochs=sched["epochs"], train=len(tr), val=len(va), init=init.mode)
    progress = keras.callbacks.LambdaCallback(on_epoch_end=lambda e, logs: _progress(
        phase="training", epoch=e + 1, epochs=sched["epochs"], val_acc=logs.get("val_captcha_acc"),
        loss=logs.get("loss")))
    epochs_run, best_epoch, best_acc = fit(
        model, meta, x[mine], y[mine], x[va], y[va], t_va, epochs=sched["epochs"], batch=sched["batch"],
        lr=sched["lr"], patience=sched["patience"], seed=cfg.seed, augment=cfg.augment, work=work,
        say=say, extra_callbacks=[*cfg.extra_callbacks, progress],
        score_start=any(c.startswith("logits") for c in copied), dist=dist, n_train=len(tr))

    # A site model of the general reader reads as it does: the same width rule and scales (the
    # network takes any width; it trained at the one the site's captchas have).
    rule = (init.base_meta.width_rule if init.mode == "finetune" and dist is None and p.arch == "general"
            and init.base_meta.architecture == "general" else None)
    # Final figures on the validation split, through the solver's own decoding (and scales).
    if rule:
        meta.preprocessing["resize"]["width"] = dict(rule)
        meta.validate()
        ruled = networks.build(p.arch, meta, **kw)
        ruled.set_weights(model.get_weights())
        model = ruled
        probs, nll = _answer_probs(model, meta, held_back, t_va, work)
    else:
        probs = (model.predict(x[va].astype(np.float32) / 255.0, batch_size=256, verbose=0) if dist is None
                 else distribute.predict_local(model, x[va]))
        nll = truth_nll(probs, meta, t_va)  # its one read
    answers = [t for t, _ in decode(probs, meta)]
    right = sum(a == t for a, t in zip(answers, t_va))
    from .evaluate import _char_pairs

    pairs = [pr for a, t in zip(answers, t_va) for pr in _char_pairs(t, a)]
    chars_total = sum(len(t) for t in t_va)
    char_acc = sum(a == b for a, b in pairs) / max(1, chars_total)
    wall, cpu = time.time() - t0, time.process_time() - c0
    meta.trained_on = {
        "source": "folder",
        "folder": str(Path(cfg.data).resolve()),
        "images_used": report.used,
        "skipped": {"unreadable": len(report.unreadable), "bad_label": len(report.bad_label),
                    "not_images": len(report.not_images)},
        "length_counts": {str(k): v for k, v in p.length_counts.items()},
        "split": {"method": "sha1(seed:sha256 of the image's pixels) < val_share", "val_share": cfg.val_share,
                  "seed": cfg.split_seed, "train": int(len(tr)), "val": int(len(va))},
        "seed": cfg.seed,
        "init": {"mode": init.mode, "base": init.base, "layers_copied": len(copied),
                 "description": init.why},
        "width_mult": width, "epochs": sched["epochs"], "epochs_run": epochs_run, "best_epoch": best_epoch,
        "batch_size": sched["batch"], "lr": sched["lr"], "patience": sched["patience"],
        "anchor": {"strength": sched["anchor"], "weights": anchored} if anchored else None,
        "augment": AugmentSpec().to_json() if cfg.augment else None,
        "train_seconds": round(wall, 1), "cpu_seconds": round(cpu, 1),
    }
    meta.metrics = {"val_captcha_acc": round(right / len(t_va), 5), "val_char_acc": round(char_acc, 5),
                    "val_n": int(len(t_va))}
    base_right = None
    if init.mode == "finetune" and (dist is None or dist.is_chief):
        # What the site is read with without this model: the base as the extension reads it (its
        # width rule and scales, with the site's alphabet from the training labels' characters).
        from captchalens.alphabet import read_with
        from captchalens.solver import get_solver

        seen = "".join(sorted(set("".join(texts[i] for i in tr))))
        base = get_solver(init.base)
        allowed = read_with(base.meta.charset, seen)
        base_probs = base.answer_probs(held_back, allowed)
        base_answers = [a for a, _ in decode(base_probs, base.meta)]
        base_right = sum(a == t for a, t in zip(base_answers, t_va))
        base_nll = reads_nll(base, held_back, t_va, allowed)
        meta.metrics.update(
            val_cer=round(answer_scores(answers, t_va)[1], 5),
            base_val_captcha_acc=round(base_right / len(t_va), 5),
            base_val_cer=round(answer_scores(base_answers, t_va)[1], 5),
            beats_base=beats_base(answers, base_answers, t_va, nll, base_nll))
        if nll is not None and base_nll is not None:
            meta.metrics.update(val_nll=round(nll, 4), base_val_nll=round(base_nll, 4))
    del held_back
    from .calibrate import on_probs

    meta.calibration = on_probs(probs, meta, t_va)  # "N% sure" means N% right
    if dist is not None:
        batches = distribute.plan_batches(dist, sched["batch"], sched["lr"], len(tr))
        meta.trained_on.update(batch_size=batches.global_batch, lr=batches.lr,
                               distribute=distribute.describe(dist, batches))
    model = distribute.model_to_save(dist, model, lambda: networks.build(p.arch, meta, **kw))
    if model is None:  # a cluster's non-chief worker: the chief writes the model
        distribute.barrier(dist)
        return None, meta
    path = save_model(model, meta, out, {"curves.png": work / "curves.png", "log.csv": work / "log.csv"})
    shutil.rmtree(work, ignore_errors=True)  # its log and curves are in the model folder now
    distribute.barrier(dist)  # the other workers leave once the model is written
    _progress(phase="trained", epochs_run=epochs_run, best_epoch=best_epoch,
              val_acc=meta.metrics["val_captcha_acc"])
    wall = time.time() - t0
    if say:
        say(f"\nwrote {path} ({meta.params:,} parameters)")
        say(f"  validation whole-captcha accuracy: {100 * right / len(t_va):.1f}% ({right} of {len(t_va)} "
            f"held-back captchas), per character {100 * char_acc:.1f}%")
        say(f"  best epoch {best_epoch} of {epochs_run} run; time {_fmt_time(wall)} "
            f"(CPU {_fmt_time(time.process_time() - c0)})")
        if base_right is not None:
            say(f"  the base it started from ({init.base_meta.name if init.base_meta else init.base}) reads "
                f"{base_right} of the same {len(t_va)} with the labels' characters, as it reads a site "
                f"without a model of its own")
            m = meta.metrics
            say(f"  character errors: {100 * m['val_cer']:.1f}% of the held-back characters, the base's "
                f"{100 * m['base_val_cer']:.1f}%")
            if not m["beats_base"]:
                say("  note: this model does not read them better than its base (fewer character errors and "
                    "no fewer whole captchas, or as many and surer of the right answers): until more "
                    "captchas are labelled, the site is read better without it")
        if right == 0:
            say("  warning: the model reads none of the held-back captchas: label more captchas "
                "(a few hundred), and check the notes above")
        say(f"next: captchalens convert --model {cfg.out} --name {name}")
    return path, meta


def config_from_args(args, strategy: str | None = None) -> RetrainConfig:
    """`captchalens train --data ...` flags -> RetrainConfig (None = choose from the data)."""
    lengths = getattr(args, "length", None)
    return RetrainConfig(
        data=args.data, out=args.out, name=args.name, arch=args.arch or "auto",
        init=getattr(args, "init", None) or "auto", base=getattr(args, "base", None),
        charset=getattr(args, "charset", None), lengths=tuple(lengths) if lengths else None,
        input_size=tuple(args.input) if getattr(args, "input", None) else None,
        width_mult=getattr(args, "width_mult", None), val_share=getattr(args, "val_share", 0.15),
        epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, patience=args.patience,
        anchor=getattr(args, "anchor", None), seed=args.seed, augment=not getattr(args, "no_augment", False),
        verbose=True, strategy=strategy, work_dir=getattr(args, "work_dir", None),
        peer_timeout=getattr(args, "peer_timeout", distribute.PEER_TIMEOUT))


def train_folder(args, strategy: str | None = None) -> int:
    """Entry point of `captchalens train --data DIR --out DIR` (strategy: distribute.py's kind)."""
    path, _ = retrain(config_from_args(args, strategy))
    if path is None:
        print(f"\nthis worker's part is done; the chief writes {args.out}")
    return 0

