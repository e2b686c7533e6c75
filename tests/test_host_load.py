"""A real `captchalens serve` under load (hundreds of requests, 32 at a time) and picking
up a newly trained model while it runs."""
from __future__ import annotations

import math
import os
import random
import shutil
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from support_host import HostProcess, captcha

CLIENTS = 32  # concurrent requests
REQUESTS = 320
DISTINCT = 40  # different captchas among them; every 5th is 200x70, so batches mix sizes
PNG = {"Content-Type": "image/png"}


@pytest.fixture(scope="module", params=["default", "--no-batching"])
def host(request, tmp_path_factory, model):
    """The default (micro-batching) and one model call per request."""
    extra = [] if request.param == "default" else [request.param]
    server = HostProcess(tmp_path_factory.mktemp("load") / "home", [model], *extra)
    try:
        yield server.wait_ready()
    finally:
        server.stop()


def test_hundreds_of_concurrent_requests_are_all_answered_each_with_its_own_answer(host):
    bodies = [captcha(i, seed=21, size=(200, 70) if i % 5 == 0 else None)[0] for i in range(DISTINCT)]
    reference = [host.call("POST", "/solve", b, headers=PNG).json for b in bodies]  # one at a time
    # The answers must tell the captchas apart, or a mix-up between requests could go unnoticed.
    assert len({(r["text"], round(math.log(r["confidence"]), 3)) for r in reference}) >= DISTINCT - 2

    order = [i % DISTINCT for i in range(REQUESTS)]
    random.Random(0).shuffle(order)
    with ThreadPoolExecutor(CLIENTS) as pool:
        results = list(pool.map(lambda i: (i, host.call("POST", "/solve", bodies[i], headers=PNG)), order))

    assert len(results) == REQUESTS
    failed = [(i, r) for i, r in results if r.status != 200]
    assert not failed, failed[:3]
    for i, r in results:
        assert r.json["text"] == reference[i]["text"]
        assert r.json["confidence"] == pytest.approx(reference[i]["confidence"], rel=1e-4)
    assert host.call("GET", "/health").status == 200


def test_a_newly_trained_model_is_served_without_a_restart(host, model):
    models = host.home / "models"
    models.mkdir(exist_ok=True)
    staging = models / ".fresh.partial"  # installed the way the converter does: copy, then rename
    shutil.copytree(model, staging)
    os.rename(staging, models / "fresh")
    deadline = time.monotonic() + 30
    while "fresh" not in host.call("GET", "/health").json["models"]:
        assert time.monotonic() < deadline, host.call("GET", "/models").json
        time.sleep(0.2)  # the host looks at its folders at most once a second
    r = host.call("POST", "/solve?model=fresh", captcha(1)[0], headers=PNG)
    assert r.status == 200 and r.json["model"] == "fresh"
    assert host.call("GET", "/health").json["models"] == ["random", "fresh"]
