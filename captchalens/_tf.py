"""Import TensorFlow without its CUDA/oneDNN start-up noise reaching the user.

Import `tf` and `keras` (tf_keras, i.e. Keras 2) from here, never directly:
the tensorflowjs converter reads tf_keras models, and TF.js 4.22 cannot load
Keras 3 layers models.
"""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # C++ INFO/WARNING/ERROR logs
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")  # tf.keras -> tf_keras everywhere

import contextlib  # noqa: E402
import io  # noqa: E402
import logging  # noqa: E402
import warnings  # noqa: E402

warnings.filterwarnings("ignore", module=r"tensorflow.*|tf_keras.*|keras.*|absl.*")
logging.getLogger("tensorflow").setLevel(logging.ERROR)
logging.getLogger("absl").setLevel(logging.ERROR)


@contextlib.contextmanager
def _quiet_stderr():
    """Swallow what TF writes to fd 2 while importing (absl pre-init messages)."""
    try:
        fd = os.dup(2)
    except OSError:
        yield
        return
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(fd, 2)
        os.close(fd)


with _quiet_stderr(), contextlib.redirect_stderr(io.StringIO()):
    import tensorflow as tf  # noqa: E402
    import tf_keras as keras  # noqa: E402

tf.get_logger().setLevel(logging.ERROR)
try:
    import absl.logging

    absl.logging.set_verbosity(absl.logging.ERROR)
except ImportError:  # pragma: no cover
    pass

__all__ = ["tf", "keras"]
