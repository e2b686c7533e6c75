"""Training a site's model from the host, through both front doors: corrections in a site's
folder -> train_start -> progress -> the model solves in the host and its TF.js files come back
whole; one job at a time, cancellable, and every bad state says what is wrong."""
from __future__ import annotations

import base64
import hashlib
import json
import shutil
import time
from pathlib import Path

import pytest
from support_host import HttpOps, NativeOps, NativeProcess, b64, extension_id

from captchalens.training.generate import GenSpec, draw

TINY = "--width-mult 0.25 --epochs 2"  # the jobs' schedule here: seconds, not minutes
TOKEN = "jobs-test-token-" + "x" * 32
SCHEME = GenSpec(charset="abc12", min_length=4, max_length=4, width=(120, 120), height=(40, 40))
JOB_DEADLINE_S = 240.0  # a tiny job takes ~45 s on 2 busy cores


def add_samples(home: Path, site: str, n: int, seed: int = 3) -> list[str]:
    """n captchas of a scheme no shipped model reads, as the host stores corrections."""
    folder = home / "samples" / site
    folder.mkdir(parents=True, exist_ok=True)
    texts = []
    for i in range(n):
        im, text = draw(SCHEME, seed, i)
        im.save(folder / (f"{text}.png" if not (folder / f"{text}.png").exists() else f"{text}_{i}.png"))
        texts.append(text)
    return texts


def wait_for(door, job_id: str, phases, deadline_s: float = JOB_DEADLINE_S) -> tuple[dict, list[dict]]:
    """Poll train_status until the job is in one of `phases`; (that status, every status seen)."""
    seen, end = [], time.monotonic() + deadline_s
    while time.monotonic() < end:
        r = door.call("train_status", {"id": job_id})
        assert r.ok, r
        seen.append(r.body)
        if r.body["phase"] in phases:
            return r.body, seen
        time.sleep(0.25)  # poll interval, bounded by the deadline
    raise AssertionError(f"job {job_id} not {phases} after {deadline_s} s: {seen[-1]}")


@pytest.fixture(scope="module", params=["http", "native"])
def door(request, tmp_path_factory, random_model):
    base = tmp_path_factory.mktemp(f"jobs-{request.param}")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CAPTCHALENS_HOME", str(base / "home"))
        mp.setenv("CAPTCHALENS_TRAIN_ARGS", TINY)
        if request.param == "http":
            from captchalens.native_host import create_app

            yield HttpOps(create_app({"PORT": 8765, "MODEL_DIRS": [str(random_model)], "TOKEN": TOKEN,
                                      "EXTENSION_ID": extension_id(), "RELOAD_INTERVAL": 0.0}),
                          base / "home", TOKEN)
            return
        from captchalens.native_host import install

        (base / "profile").mkdir()
        install.install([base / "profile"], [str(random_model)])
        proc = NativeProcess(base / "profile" / "NativeMessagingHosts" / "io.captchalens.host.json",
                             env={"CAPTCHALENS_TRAIN_ARGS": TINY})
        try:
            yield NativeOps(proc, base / "home")
        finally:
            assert proc.close() == 0, proc.output()
            assert proc.garbage == []


def test_sites_count_each_sites_samples_and_too_few_or_unknown_sites_are_refused(door):
    add_samples(door.home, "few.example", 4)
    r = door.call("sites")
    assert r.ok and r.body["min_samples"] == 10
    assert {"site": "few.example", "samples": 4, "model": "few.example", "has_model": False} in r.body["sites"]
    r = door.call("train_start", {"site": "few.example"})
    assert (r.status, r.body) == (400, "site 'few.example' has 4 sample(s); training needs at least 10 "
                                       "(a few hundred train a better model): correct more of its captchas first")
    r = door.call("train_start", {"site": "nowhere.example"})
    assert r.status == 404 and "no samples for site 'nowhere.example'" in r.body and "few.example" in r.body
    for bad, words in ((None, "'site' is missing"), ("a/../b", "not a host name")):
        r = door.call("train_start", {"site": bad})
        assert r.status == 400 and words in r.body, r
    assert not (door.home / "jobs").exists() or not any((door.home / "jobs").iterdir())


def test_a_job_trains_converts_and_installs_the_sites_model_then_a_retrain_goes_on_from_it(door):
    texts = add_samples(door.home, "shop.example", 30)
    r = door.call("train_start", {"site": "shop.example"})
    assert r.ok and r.status in (200, 202) and r.body["phase"] in ("reading", "training"), r
    job = r.body["id"]
    assert r.body["base"] is None and r.body["samples"] == 30 and r.body["model"] == "shop.example"
    again = door.call("train_start", {"site": "shop.example"})
    assert again.status == 409 and f"already running: {job} for 'shop.example'" in again.body
    done, seen = wait_for(door, job, ("done", "failed", "cancelled"))
    assert done["phase"] == "done", done
    assert (done["epoch"], done["epochs"]) == (2, 2) and 0.0 <= done["val_acc"] <= 1.0 and done["elapsed_s"] > 0
    assert {s["phase"] for s in seen} <= {"reading", "training", "converting", "installing", "done"}
    mid = [s for s in seen if s["phase"] == "training" and s["left_s"] is not None]
    assert all(s["left_s"] > 0 and s["epoch"] >= 1 for s in mid)
    # The host serves it at once, and solves with it.
    listed = door.call("models").body
    model = next((m for m in listed["models"] if m["name"] == "shop.example"), listed)
    assert model["charset"] == "12abc" and model["length"] == 4
    png = (door.home / "samples" / "shop.example" / f"{texts[0]}.png").read_bytes()
    r = door.call("solve", {"image": b64(png), "model": "shop.example"})
    assert r.ok and r.body["model"] == "shop.example" and set(r.body["text"]) <= set("12abc")
    assert door.call("sites").body["sites"][-1] == {"site": "shop.example", "samples": 30,
                                                    "model": "shop.example", "has_model": True}
    # Its TF.js files come back byte for byte, in chunks small enough for a native frame.
    tfjs = door.home / "tfjs" / "shop.example"
    listing = door.call("model_files", {"name": "shop.example"}).body
    names = [f["file"] for f in listing["files"]]
    model_json = json.loads((tfjs / "model.json").read_bytes())
    shards = [p for g in model_json["weightsManifest"] for p in g["paths"]]
    assert sorted(names) == sorted(["model.json", "captchalens.json", *shards])
    for f in listing["files"]:
        got, offset = b"", 0
        while True:
            part = door.call("model_files", {"name": "shop.example", "file": f["file"], "offset": offset,
                                             "length": 40_000}).body
            assert part["total"] == f["bytes"] and part["offset"] == offset
            got += base64.b64decode(part["data"])
            offset += part["length"]
            if offset >= part["total"]:
                break
        assert got == (tfjs / f["file"]).read_bytes()
    installed = door.home / "models" / "shop.example"
    assert (tfjs / "captchalens.json").read_bytes() == (installed / "captchalens.json").read_bytes()
    source = model_json["userDefinedMetadata"]["captchalens"]["source_sha256"]
    assert source == hashlib.sha256((installed / "model.h5").read_bytes()).hexdigest()
    assert "TF.js matches the host" in Path(done["log"]).read_text()
    # Retraining goes on from the site's previous model (once: a job is a minute on 2 busy cores,
    # and the second runs the same service call as the first).
    if door.name != "http":
        return
    first = json.loads((installed / "captchalens.json").read_text())
    r = door.call("train_start", {"site": "shop.example"})
    assert r.ok and r.body["base"] == str(installed), r
    done, _ = wait_for(door, r.body["id"], ("done", "failed", "cancelled"))
    assert done["phase"] == "done", done
    second = json.loads((installed / "captchalens.json").read_text())
    assert second["trained_on"]["init"]["base"] == str(installed)
    assert second["trained_on"]["init"]["mode"] == "finetune" and first["trained_on"]["init"]["mode"] == "scratch"
    assert done["result"]["init"]["base"] == str(installed)


def test_a_cancelled_job_stops_and_installs_nothing(door):
    add_samples(door.home, "cancel.example", 30, seed=5)
    job = door.call("train_start", {"site": "cancel.example"}).body["id"]
    wait_for(door, job, ("training", "converting", "done", "failed"))
    r = door.call("train_cancel", {"id": job})
    assert r.ok, r
    status, _ = wait_for(door, job, ("cancelled", "done", "failed"), 30)
    assert status["phase"] == "cancelled"
    assert not (door.home / "models" / "cancel.example").exists()
    assert not (door.home / "tfjs" / "cancel.example").exists()
    assert not (door.home / "jobs" / job / "model").exists()
    r = door.call("train_cancel", {"id": job})
    assert r.status == 409 and "is not running: it is cancelled" in r.body
    r = door.call("train_status", {"id": "latest"})
    assert r.ok and r.body["id"] == job
    assert door.call("train_status", {"id": "nope"}).status == 404


def test_a_failed_job_says_why_and_keeps_its_log(door):
    folder = door.home / "samples" / "broken.example"
    folder.mkdir(parents=True)
    for i in range(12):  # image names, but not images: the trainer reads none of them
        (folder / f"ab1{i % 10}_{i}.png").write_bytes(b"not a png at all")
    job = door.call("train_start", {"site": "broken.example"}).body["id"]
    status, _ = wait_for(door, job, ("done", "failed", "cancelled"))
    assert status["phase"] == "failed"
    assert status["error"].startswith(f"training failed: nothing usable in {folder}: "), status
    assert "12 unreadable image(s) skipped" in status["error"]
    log = Path(status["log"])
    assert log == door.home / "jobs" / job / "log.txt" and f"nothing usable in {folder}" in log.read_text()
    assert not (door.home / "models" / "broken.example").exists()


def clean_samples(home: Path, site: str, n: int) -> None:
    """n plain captchas (black DejaVu Sans on white) that the general reader reads already."""
    import random

    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.truetype("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf", 30)
    folder, rng = home / "samples" / site, random.Random(1)
    folder.mkdir(parents=True)
    for _ in range(n):
        text = "".join(rng.choice("abcdefghkmnprstuvwxyz2345678") for _ in range(5))
        im = Image.new("RGB", (160, 50), "white")
        ImageDraw.Draw(im).text((12, 7), text, font=font, fill="black")
        im.save(folder / f"{text}.png")


def test_a_first_model_no_better_than_the_general_reader_is_not_installed(tmp_path, monkeypatch, random_model):
    """A site's first model fine-tunes the general reader; on captchas that reader reads without a
    miss, the new model cannot read the held-back ones better, so the job ends done but kept: it
    skips converting, installs nothing, and the site stays read without a model of its own."""
    from captchalens.native_host import create_app

    monkeypatch.setenv("CAPTCHALENS_HOME", str(tmp_path))
    monkeypatch.setenv("CAPTCHALENS_TRAIN_ARGS", "--epochs 1 --lr 0.5")  # a fine-tune of the general
    # reader (its width) at a rate that undoes it: the trainer keeps the start, the base's own weights
    door = HttpOps(create_app({"PORT": 8765, "MODEL_DIRS": [str(random_model)], "TOKEN": TOKEN,
                               "EXTENSION_ID": extension_id(), "RELOAD_INTERVAL": 0.0}), tmp_path, TOKEN)
    clean_samples(tmp_path, "clean.example", 30)
    job = door.call("train_start", {"site": "clean.example"}).body["id"]
    done, seen = wait_for(door, job, ("done", "failed", "cancelled"))
    assert done["phase"] == "done" and done["result"]["kept"] is True, done
    metrics = done["result"]["metrics"]
    assert metrics["base_val_captcha_acc"] == 1.0 and metrics["base_val_cer"] == 0.0, metrics
    assert metrics["beats_base"] is False and done["result"]["init"]["mode"] == "finetune"
    assert done["result"]["files"] == [] and "converting" not in {s["phase"] for s in seen}
    assert not (tmp_path / "models" / "clean.example").exists()
    assert not (tmp_path / "tfjs" / "clean.example").exists()
    assert not (tmp_path / "jobs" / job / "model").exists()
    assert {"site": "clean.example", "samples": 30, "model": "clean.example",
            "has_model": False} in door.call("sites").body["sites"]
    assert "does not read them better than its base" in Path(done["log"]).read_text()
    assert door.call("model_files", {"name": "clean.example"}).status == 404


def test_a_first_model_that_reads_better_than_the_general_reader_reads_as_it_does_and_is_installed(
        tmp_path, monkeypatch, random_model):
    """A fine-tune of the general reader (its width, a few epochs) on a scheme it reads badly: the
    new model beats it on the held-back corrections, keeps its width rule and scales, passes the
    converter's TF.js check at them, and the host solves with it."""
    from captchalens.contract import load_meta
    from captchalens.native_host import create_app
    from captchalens.paths import default_model_dir

    monkeypatch.setenv("CAPTCHALENS_HOME", str(tmp_path))
    monkeypatch.setenv("CAPTCHALENS_TRAIN_ARGS", "--epochs 3")
    door = HttpOps(create_app({"PORT": 8765, "MODEL_DIRS": [str(random_model)], "TOKEN": TOKEN,
                               "EXTENSION_ID": extension_id(), "RELOAD_INTERVAL": 0.0}), tmp_path, TOKEN)
    texts = add_samples(tmp_path, "scheme.example", 30)
    job = door.call("train_start", {"site": "scheme.example"}).body["id"]
    done, _ = wait_for(door, job, ("done", "failed", "cancelled"))
    assert done["phase"] == "done" and not done["result"].get("kept"), done
    metrics = done["result"]["metrics"]
    assert metrics["beats_base"] is True and metrics["val_cer"] < metrics["base_val_cer"], metrics
    meta = load_meta(tmp_path / "models" / "scheme.example")
    assert meta.width_rule == load_meta(default_model_dir().parent / "general").width_rule
    assert "TF.js matches the host" in Path(done["log"]).read_text()
    png = (tmp_path / "samples" / "scheme.example" / f"{texts[0]}.png").read_bytes()
    r = door.call("solve", {"image": b64(png), "model": "scheme.example"})
    assert r.ok and r.body["model"] == "scheme.example", r


def test_http_needs_the_token_for_every_job_operation(tmp_path, monkeypatch, random_model):
    from captchalens.native_host import create_app

    monkeypatch.setenv("CAPTCHALENS_HOME", str(tmp_path))
    door = HttpOps(create_app({"PORT": 8765, "MODEL_DIRS": [str(random_model)], "TOKEN": TOKEN,
                               "EXTENSION_ID": extension_id()}), tmp_path, TOKEN)
    add_samples(tmp_path, "shop.example", 12)
    for op, data in (("sites", {}), ("train_start", {"site": "shop.example"}), ("train_status", {}),
                     ("train_cancel", {"id": "x"}), ("model_files", {"name": "shop.example"})):
        assert door.call(op, data, token=None).status == 401
        assert door.call(op, data, token="wrong").status == 403
    assert not (tmp_path / "jobs").exists()
    r = door.client.get("/sites", headers={"Origin": "https://evil.example", "X-CaptchaLens-Token": TOKEN})
    assert r.status_code == 403


def test_a_model_that_fails_the_converters_checks_is_refused(tmp_path, random_model):
    from captchalens.native_host import jobs

    bad = tmp_path / "bad"
    shutil.copytree(random_model, bad)
    meta = json.loads((bad / "captchalens.json").read_text())
    meta["input_width"] += 8  # the weights read another width than the metadata says
    (bad / "captchalens.json").write_text(json.dumps(meta))
    (tmp_path / "samples").mkdir()
    assert jobs.main(["convert", str(bad), "bad", str(tmp_path / "out"), str(tmp_path / "samples")]) == 1
    assert not (tmp_path / "out" / "bad").exists()


def test_model_files_serve_only_a_trained_models_own_files_in_bounded_chunks(tmp_path):
    from captchalens.native_host.jobs import CHUNK, JobError, Jobs

    folder = tmp_path / "tfjs" / "shop.example"
    folder.mkdir(parents=True)
    (folder / "model.json").write_text("{}")
    (folder / "group1-shard1of1.bin").write_bytes(bytes(range(256)) * 4096)  # 1 MB: two chunks
    (tmp_path / "token").write_text("secret")
    jobs = Jobs(root_home=tmp_path)
    listing = jobs.model_files("shop.example")
    assert listing["files"] == [{"file": "group1-shard1of1.bin", "bytes": 1 << 20},
                                {"file": "model.json", "bytes": 2}] and listing["chunk"] == CHUNK
    first = jobs.model_files("shop.example", "group1-shard1of1.bin")
    assert first["length"] == CHUNK and first["total"] == 1 << 20
    assert len(json.dumps(first)) < 1024 * 1024  # fits a native messaging answer
    for name, file, offset, words in (("../token", None, 0, "no trained site model"),
                                      ("nope", None, 0, "no trained site model"),
                                      ("shop.example", "../../token", 0, "has no file '../../token'"),
                                      ("shop.example", "model.json", -1, "'offset' must be")):
        with pytest.raises(JobError, match=words):
            jobs.model_files(name, file, offset)


def test_a_job_left_unfinished_by_a_stopped_host_says_so(tmp_path):
    from captchalens.native_host.jobs import Jobs

    job_dir = tmp_path / "jobs" / "20261202-000000-abcdef"
    job_dir.mkdir(parents=True)
    (job_dir / "job.json").write_text(json.dumps({"id": job_dir.name, "site": "shop.example",
                                                  "model": "shop.example", "samples": 30, "phase": "training",
                                                  "elapsed_s": 12.0}))
    status = Jobs(root_home=tmp_path).status("latest")
    assert status["id"] == job_dir.name and status["phase"] == "failed"
    assert status["error"] == "the host stopped while this job ran; start it again"
