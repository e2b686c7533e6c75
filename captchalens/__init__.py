"""CaptchaLens: an open text-captcha solver.

    from captchalens import dec_batch
    print(dec_batch("captcha.png"))
"""
__version__ = "0.1.0"

from .contract import ContractError  # noqa: E402
from .images import ImageError  # noqa: E402


def dec_batch(path, model=None):
    """Solve a captcha file (-> str) or a folder of them (-> list of str)."""
    from .api import dec_batch as _dec_batch  # TF is imported on first use only

    return _dec_batch(path, model)


__all__ = ["dec_batch", "ContractError", "ImageError", "__version__"]
