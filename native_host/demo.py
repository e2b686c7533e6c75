"""The /demo page's captchas: drawn fresh per page view, answers remembered for a while."""
from __future__ import annotations

import base64
import io
import secrets
import threading
from collections import OrderedDict

KEEP = 512  # challenges remembered; older ones are forgotten ("expired")


def demo_scheme(model_dir=None) -> tuple[str, int, tuple[int, int]]:
    """(charset, length, (width, height)) of the `captcha`-package captchas the host's default
    model ($CAPTCHALENS_MODEL, else the shipped default) was trained on, read from its
    metadata: nothing about the model is typed here a second time.  A default trained on a
    labelled folder has no such scheme: the page then shows the shipped default's."""
    from captchalens.contract import load_meta
    from captchalens.paths import DEFAULT_MODEL, default_model_dir
    from captchalens.training.generate import trained_spec

    meta = load_meta(model_dir or default_model_dir())
    spec = trained_spec(meta)
    if spec is None and model_dir is None:
        meta = load_meta(DEFAULT_MODEL)
        spec = trained_spec(meta)
    if spec is None:
        from captchalens.training.generate import GenSpec

        spec = GenSpec(charset=meta.charset, min_length=meta.lengths[0], max_length=meta.lengths[0])
    size = spec.preferred or (spec.width[0], spec.height[0])
    return spec.charset, spec.min_length, (int(size[0]), int(size[1]))


class DemoChallenges:
    """Fresh captchas with their answers, keyed by a random id; each can be checked once."""

    def __init__(self, keep: int = KEEP):
        self._answers: OrderedDict[str, str] = OrderedDict()
        self._lock = threading.Lock()
        self._keep = keep
        self._captcha = None

    def new(self) -> tuple[str, str]:
        """-> (challenge id, data: URL of a fresh captcha PNG)."""
        from captcha.image import ImageCaptcha

        with self._lock:
            if self._captcha is None:
                self._charset, self._length, (w, h) = demo_scheme()
                self._captcha = ImageCaptcha(width=w, height=h)
        text = "".join(secrets.choice(self._charset) for _ in range(self._length))
        with self._lock:
            im = self._captcha.generate_image(text)
        buf = io.BytesIO()
        im.save(buf, "PNG")
        cid = secrets.token_urlsafe(12)
        with self._lock:
            self._answers[cid] = text
            while len(self._answers) > self._keep:
                self._answers.popitem(last=False)
        return cid, "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")

    def check(self, cid: str, guess: str) -> tuple[bool | None, str | None]:
        """-> (right?, the answer); (None, None) for an unknown or already checked challenge."""
        with self._lock:
            answer = self._answers.pop(cid or "", None)
        if answer is None:
            return None, None
        return secrets.compare_digest((guess or "").strip().lower().encode(), answer.encode()), answer
