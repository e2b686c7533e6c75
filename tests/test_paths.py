"""captchalens/paths.py is the one place that knows where things live; it works from an
installed (non-editable) package as well as from the checkout."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROBE = """
import json, sys
from captchalens import paths
out = {"package_models": str(paths.PACKAGE_MODELS), "default": str(paths.default_model_dir()),
       "checkout": str(paths.checkout(required=False))}
try:
    out["node_solver"] = str(paths.node_solver())
except paths.CheckoutMissing as e:
    out["error"] = str(e)
print(json.dumps(out))
"""


def run_probe(site: Path, **env) -> dict:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CAPTCHALENS_")}
    proc = subprocess.run([sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, {str(site)!r})\n" + PROBE],
                          env={**clean, **env}, capture_output=True, text=True, timeout=60, cwd=site)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_the_checkout_finds_its_extension_and_shipped_models():
    got = run_probe(ROOT)
    assert got["package_models"] == str(ROOT / "captchalens" / "models")
    assert got["default"] == str(ROOT / "captchalens" / "models" / "default")
    assert got["checkout"] == str(ROOT)
    assert got["node_solver"] == str(ROOT / "extension" / "node" / "node_solver.js")


def test_an_installed_package_finds_its_models_and_says_where_the_checkout_must_be(tmp_path):
    site = tmp_path / "site-packages"
    shutil.copytree(ROOT / "captchalens", site / "captchalens",
                    ignore=shutil.ignore_patterns("*.h5", "*.tflite", "*.png", "__pycache__"))
    got = run_probe(site)
    assert got["package_models"] == str(site / "captchalens" / "models")  # package data, wherever installed
    assert got["checkout"] == "None"
    assert "CAPTCHALENS_CHECKOUT" in got["error"] and str(site) in got["error"]
    got = run_probe(site, CAPTCHALENS_CHECKOUT=str(ROOT))  # told where the checkout is
    assert got["node_solver"] == str(ROOT / "extension" / "node" / "node_solver.js")
    assert got["package_models"] == str(site / "captchalens" / "models")


def test_captchalens_model_names_the_default_everywhere(tmp_path):
    got = run_probe(ROOT, CAPTCHALENS_MODEL=str(tmp_path))
    assert got["default"] == str(tmp_path)
