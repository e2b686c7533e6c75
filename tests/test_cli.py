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


# ---- many files: streamed, and one bad file costs only itself ------------------------

@pytest.fixture
def mixed(captchas, tmp_path):
    """A folder of good captchas, a text file named .png, and a FIFO named .png."""
    folder = tmp_path / "mixed"
    shutil.copytree(captchas, folder)
    (folder / "x_notes.png").write_text("this is not an image")
    os.mkfifo(folder / "y_pipe.png")
    return folder


def _run(*argv):
    exe = Path(sys.executable).parent / "captchalens"
    return subprocess.run([str(exe), *map(str, argv)], capture_output=True, text=True, timeout=120)


def test_a_bad_file_or_a_fifo_costs_only_itself(tiny_model, captchas, mixed, tmp_path):
    good = sorted(captchas.iterdir())
    r = _run("solve", "--json", "--model", tiny_model, mixed)  # a timeout here means it hung
    assert r.returncode == 1
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert [Path(row["path"]).name for row in rows] == [p.name for p in good]  # every good file, in order
    assert [row["text"] for row in rows] == _expected(tiny_model, good)
    assert f"{mixed / 'x_notes.png'}: not a readable image" in r.stderr
    assert f"{mixed / 'y_pipe.png'}: is a FIFO (named pipe), not an image file; not opened" in r.stderr
    assert "2 of 5 files not solved" in r.stderr
    # Named on the command line, a FIFO or a missing file is the same: named, and the rest go on.
    r = _run("solve", "--model", tiny_model, mixed / "y_pipe.png", good[0], tmp_path / "gone.png")
    assert r.returncode == 1
    assert r.stdout.split("\t")[1] == _expected(tiny_model, [good[0]])[0]
    assert "y_pipe.png: is a FIFO" in r.stderr and "gone.png: no such file or folder" in r.stderr


def test_answers_come_as_files_are_read_a_chunk_at_a_time(tiny_model, captchas, monkeypatch):
    import captchalens.solver as solver_module

    reads = []
    real = solver_module.read_rgba
    monkeypatch.setattr(solver_module, "read_rgba", lambda p: reads.append(p) or real(p))
    files = sorted(captchas.iterdir()) * 3
    stream = Solver(tiny_model).solve_stream(iter(files), chunk=2)
    path, first = next(stream)
    assert (path, len(reads)) == (files[0], 2)  # the first answer came after one chunk, not all files
    rest = list(stream)
    assert len(reads) == len(files)
    assert [first.text] + [a.text for _, a in rest] == _expected(tiny_model, files)


def test_dec_batch_on_a_folder_names_every_bad_file_and_keeps_the_other_answers(tiny_model, captchas, mixed):
    with pytest.raises(ImageError) as caught:
        dec_batch(mixed, model=tiny_model)
    message = str(caught.value)
    assert message.startswith("2 of 5 images could not be read")
    assert "x_notes.png: not a readable image" in message and "y_pipe.png: is a FIFO" in message
    answers = caught.value.answers  # one per file in name order, None for the bad ones
    assert [a.text if a else None for a in answers] == _expected(tiny_model, sorted(captchas.iterdir())) + [None, None]
