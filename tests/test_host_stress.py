"""Slow and numerous clients against a real `captchalens serve`: a hundred connections that
never finish their headers, a client trickling its header byte by byte, and two hundred
clients at once must not keep anyone else waiting. (The 30-second version with figures is
bench/host_bench.py --stress; this is the short, bounded one.)"""
from __future__ import annotations

import socket
import threading
import time

import pytest
from support_host import captcha, crowd, slow_clients, timed

from captchalens.native_host.server import CONNECTION_LIMIT, make_server

PNG = {"Content-Type": "image/png"}
QUICK = 3.0  # seconds: "answers quickly" on this shared 2-core machine (it answers in ms when idle)


def test_a_hundred_clients_sending_half_a_header_do_not_starve_the_others(host):
    socks = slow_clients(host.port, 100)
    try:
        took, r = timed(host.port, "GET", "/health", timeout=20)
        assert not isinstance(r, Exception) and r.status == 200, (took, r)
        assert took < QUICK, f"/health took {took:.1f} s behind 100 slow clients"
        took, r = timed(host.port, "POST", "/solve", captcha(0)[0], headers=PNG, timeout=20)
        assert r.status == 200 and took < QUICK, (took, r)
    finally:
        for s in socks:
            s.close()


def test_two_hundred_clients_at_once_none_waits_more_than_a_few_seconds(host):
    """Each client keeps its connection and asks again and again (as a browser does) for 8 s:
    with waitress's 100-connection default, the last 100 waited until the first were done."""
    bodies = [captcha(i, seed=33)[0] for i in range(20)]
    result = crowd(host.port, bodies, clients=200, seconds=8)
    assert not result["errors"], result["errors"][:3]
    assert len(result["first"]) == 200
    worst_first, worst = max(result["first"]), max(result["latencies"])
    assert worst_first < 5 and worst < 5, (f"a client waited {worst_first:.1f} s for its first answer, "
                                           f"the slowest answer took {worst:.1f} s")
    assert host.call("GET", "/health").status == 200


def wsgi_ok(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
    return [b"ok"]


@pytest.fixture()
def tiny_server():
    """The host's server set-up around a trivial app, with a 1 s request deadline."""
    server = make_server(wsgi_ok, "127.0.0.1", 0, threads=2, max_body=1024, request_deadline=1.0)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.close()
        server.task_dispatcher.shutdown()


def test_a_client_trickling_its_header_is_cut_off_at_the_request_deadline(tiny_server):
    port = tiny_server.effective_port
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    start = time.monotonic()
    closed_after = None
    header = f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nX-Pad: ".encode() + b"a" * 200
    try:
        for byte in header:  # a byte every 0.1 s: never idle long enough for the idle timeout
            s.sendall(bytes([byte]))
            time.sleep(0.1)  # the attacker's pace, not a wait for the server
            s.setblocking(False)
            try:
                if s.recv(1) == b"":
                    closed_after = time.monotonic() - start
                    break
            except BlockingIOError:
                pass
            except OSError:
                closed_after = time.monotonic() - start
                break
            finally:
                s.setblocking(True)
    except OSError:  # writing to a connection the server closed
        closed_after = time.monotonic() - start
    finally:
        s.close()
    assert closed_after is not None, "the trickling client kept its connection for 20 s"
    assert 0.9 < closed_after < 4, closed_after
    took, r = timed(port, "GET", "/", timeout=5)
    assert r.status == 200 and r.body == b"ok"


def test_the_server_takes_many_connections_and_polls_them(tiny_server):
    assert tiny_server.adj.connection_limit == CONNECTION_LIMIT
    assert tiny_server.adj.asyncore_use_poll  # select() cannot watch file descriptors past 1024
    assert tiny_server.adj.channel_timeout <= 15 and tiny_server.adj.cleanup_interval <= 2
