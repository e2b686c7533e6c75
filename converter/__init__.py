"""Keras model folder -> TF.js model for the extension (`captchalens convert`).

    from captchalens.converter import convert
    convert("runs/mysite", name="mysite")   # -> extension/models/mysite/ + index.json + vendor/

Importing this package does not import TensorFlow (only converting does).
"""
from .core import ConvertError, ConvertResult, convert  # noqa: F401

__all__ = ["convert", "ConvertError", "ConvertResult"]
