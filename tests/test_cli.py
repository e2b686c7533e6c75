"""`captchalens solve` and `dec_batch`, as a user meets them — answers and errors."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from captchalens import ImageError, dec_batch
from captchalens.cli import main
from captchalens.contract import KERAS_FILE, ContractError
from captchalens.solver import Solver
from captchalens.training.generate import GenSpec, draw


@pytest.fixture(scope="module")
def captchas(tmp_path_factory):
    folder = tmp_path_factory.mktemp("captchas")
    for i in range(3):
        im, text = draw(GenSpec(), seed=11, index=i)
        im.save(folder / f"{i}_{text}.png")
    return folder


def _expected(model, paths):
    return [a.text for a in Solver(model).solve_files(paths)]


def test_solve_prints_the_answer_for_one_file(tiny_model, captchas, capsys):
    f = sorted(captchas.iterdir())[0]
    assert main(["solve", "--model", str(tiny_model), str(f)]) == 0
    assert capsys.readouterr().out.strip() == _expected(tiny_model, [f])[0]


def test_solve_json_gives_one_object_per_image_of_a_folder(tiny_model, captchas, capsys):
    assert main(["solve", "--json", "--model", str(tiny_model), str(captchas)]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    files = sorted(captchas.iterdir())
    assert [r["path"] for r in rows] == [str(p) for p in files]
    assert [r["text"] for r in rows] == _expected(tiny_model, files)
    assert all(0 <= r["confidence"] <= 1 and set(r) == {"path", "text", "confidence"} for r in rows)


def test_dec_batch_returns_a_string_for_a_file_and_a_list_for_a_folder(tiny_model, captchas):
    files = sorted(captchas.iterdir())
    assert dec_batch(files[1], model=tiny_model) == _expected(tiny_model, [files[1]])[0]
    assert dec_batch(captchas, model=tiny_model) == _expected(tiny_model, files)


def test_bad_inputs_get_clear_errors_naming_the_file(tiny_model, tmp_path, capsys):
    (tmp_path / "notes.png").write_text("this is not an image")
    assert main(["solve", "--model", str(tiny_model), str(tmp_path / "notes.png")]) == 1
    assert "notes.png: not a readable image" in capsys.readouterr().err
    assert main(["solve", "--model", str(tiny_model), str(tmp_path / "gone.png")]) == 1
    assert "gone.png: no such file" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["solve", "--model", str(tiny_model), str(empty)]) == 1
    assert "holds no images" in capsys.readouterr().err
    with pytest.raises(ImageError, match="notes.png"):
        dec_batch(tmp_path / "notes.png", model=tiny_model)


def test_missing_or_corrupt_models_are_named(tiny_model, captchas, tmp_path, capsys):
    f = str(sorted(captchas.iterdir())[0])
    assert main(["solve", "--model", str(tmp_path), f]) == 1
    assert "not a CaptchaLens model folder" in capsys.readouterr().err
    broken = tmp_path / "broken"
    shutil.copytree(tiny_model, broken)
    (broken / KERAS_FILE).write_bytes(b"\0" * 100)
    with pytest.raises(ContractError, match="cannot load the model"):
        Solver(broken)
    (broken / KERAS_FILE).unlink()
    assert main(["solve", "--model", str(broken), f]) == 1
    assert "no weights file" in capsys.readouterr().err


def test_the_installed_command_runs_without_tensorflow_noise(tiny_model, captchas):
    exe = Path(sys.executable).parent / "captchalens"
    f = sorted(captchas.iterdir())[0]
    env = {k: v for k, v in os.environ.items() if not k.startswith("TF_")}
    r = subprocess.run([str(exe), "solve", "--json", "--model", str(tiny_model), str(f)],
                       capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["text"] == _expected(tiny_model, [f])[0]
    assert r.stderr == ""  # no CUDA/oneDNN/absl start-up lines reach the user
