"""The /demo page's captchas: drawn fresh per page view, answers remembered for a while."""
from __future__ import annotations

import base64
import io
import secrets
import threading
from collections import OrderedDict

DEMO_SIZE = (160, 60)  # the size the default model was trained at
DEMO_CHARSET = "0123456789abcdefghijklmnopqrstuvwxyz"
DEMO_LENGTH = 4
KEEP = 512  # challenges remembered; older ones are forgotten ("expired")


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

        text = "".join(secrets.choice(DEMO_CHARSET) for _ in range(DEMO_LENGTH))
        with self._lock:
            if self._captcha is None:
                self._captcha = ImageCaptcha(width=DEMO_SIZE[0], height=DEMO_SIZE[1])
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
