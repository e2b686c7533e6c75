"""The native messaging host: Chromium's framing, the versioned protocol, every request
answered (a result or a JSON error) and the host still running after bad input."""
from __future__ import annotations

import io
import json
import struct

import pytest
from support_host import b64, captcha

from captchalens.native_host.native import (HEADER, MAX_ANSWER, MAX_REQUEST, TYPES, FrameError,
                                            NativeHost, encode_frame, read_frame)


def frame(payload: bytes) -> bytes:
    return struct.pack("=I", len(payload)) + payload


def frames_of(data: bytes) -> list:
    stream, out = io.BytesIO(data), []
    while (m := read_frame(stream)) is not None:
        out.append(m)
    return out


class Stub:
    """Stands in for the host state where only the protocol is under test."""

    class registry:  # noqa: N801 - an attribute namespace, like HostState.registry
        @staticmethod
        def maybe_reload():
            return False


def run_host(data: bytes, state=Stub) -> list[dict]:
    """Feed `data` to a host's serve loop; its answers, sorted by id where they have one."""
    host = NativeHost(lambda: state)
    out = io.BytesIO()
    out.close = lambda: None
    assert host.serve(io.BytesIO(data), out) == 0
    return frames_of(out.getvalue())


# ---- framing ---------------------------------------------------------------------------
@pytest.mark.parametrize("message", [{}, {"a": "é ✓ 日本"}, {"n": list(range(1000))}, {"s": "x" * 70_000}])
def test_frames_round_trip_with_a_native_endian_length(message):
    data = encode_frame(message)
    (size,) = struct.unpack("=I", data[:4])
    assert size == len(data) - 4 and HEADER.size == 4
    assert json.loads(data[4:].decode("utf-8")) == message
    assert frames_of(data + encode_frame({"next": 1})) == [message, {"next": 1}]


def test_an_answer_over_1_mb_becomes_an_error_frame_the_browser_accepts():
    data = encode_frame({"api": 1, "id": 9, "type": "models", "ok": True, "result": "x" * MAX_ANSWER})
    assert len(data) - 4 <= MAX_ANSWER
    answer = frames_of(data)[0]
    assert answer["id"] == 9 and answer["ok"] is False and "1048576" in answer["error"]


def test_an_oversize_frame_is_skipped_whole_so_the_next_one_is_read():
    stream = io.BytesIO(frame(b"x" * (MAX_REQUEST + 1)) + frame(b'{"after": true}'))
    with pytest.raises(FrameError, match="too large"):
        read_frame(stream)
    assert read_frame(stream) == {"after": True}
    assert read_frame(stream) is None


@pytest.mark.parametrize("payload, words", [
    (b"{nope", "not valid JSON"), (b"", "not valid JSON"), (b"\xff\xfe{}", "not UTF-8"),
    (b"[" * 100_000, "not valid JSON")])
def test_a_malformed_frame_is_a_clear_error(payload, words):
    with pytest.raises(FrameError, match=words):
        read_frame(io.BytesIO(frame(payload)))


def test_a_pipe_closed_inside_a_frame_is_an_eof_error_and_at_a_boundary_the_end():
    assert read_frame(io.BytesIO(b"")) is None
    for cut in (b"\x05\x00", frame(b'{"a": 1}')[:-2]):
        with pytest.raises(EOFError):
            read_frame(io.BytesIO(cut))


# ---- the protocol ------------------------------------------------------------------------
def request(msg_id, msg_type, data=None, api=1) -> bytes:
    message = {"api": api, "id": msg_id, "type": msg_type}
    if data is not None:
        message["data"] = data
    return frame(json.dumps(message).encode())


def test_every_request_gets_one_answer_and_bad_ones_do_not_stop_the_host():
    answers = run_host(request(1, "ping") + frame(b"{broken") + request(2, "teleport")
                       + frame(b"x" * (MAX_REQUEST + 10)) + request(3, "ping", api=2)
                       + frame(b"[1, 2]") + request(4, "ping", data=[1]) + request(5, "ping"))
    by_id = {a["id"]: a for a in answers if a["id"] is not None}
    anonymous = [a for a in answers if a["id"] is None]
    assert len(answers) == 8 and sorted(by_id) == [1, 2, 3, 4, 5]
    assert by_id[1]["ok"] and by_id[1]["result"]["pong"] and by_id[5]["ok"]
    assert all(a["api"] == 1 for a in answers)
    assert by_id[2] == {"api": 1, "id": 2, "type": "teleport", "ok": False, "status": 400,
                        "error": "unknown message type 'teleport'; this host knows " + ", ".join(TYPES)}
    assert "speaks api 1" in by_id[3]["error"] and "says 2" in by_id[3]["error"]
    assert by_id[4]["error"] == "'data' must be a JSON object"
    assert sorted(a["status"] for a in anonymous) == [400, 400, 413]
    assert {w for a in anonymous for w in ("JSON object", "not valid JSON", "too large") if w in a["error"]} \
        == {"JSON object", "not valid JSON", "too large"}


def test_a_failure_inside_an_operation_is_a_500_frame_and_the_next_request_works():
    class Exploding(Stub):
        class registry(Stub.registry):  # noqa: N801
            @staticmethod
            def describe():
                raise RuntimeError("/secret/path exploded")

            names = staticmethod(lambda: [])
            default = None

    answers = {a["id"]: a for a in run_host(request(1, "models") + request(2, "health"), Exploding)}
    assert answers[1] == {"api": 1, "id": 1, "type": "models", "ok": False, "status": 500,
                          "error": "internal error (RuntimeError); the host keeps running"}
    assert answers[2]["ok"] and answers[2]["result"]["models"] == []


def test_ping_answers_while_the_models_are_still_loading():
    import threading

    release = threading.Event()

    def slow_state():
        release.wait(30)
        return Stub

    host = NativeHost(slow_state)
    try:
        answer = host.handle({"api": 1, "id": "p", "type": "ping"})
        assert answer["ok"] and answer["result"]["ready"] is False
    finally:
        release.set()


def test_a_host_that_cannot_load_says_why_on_each_request_but_still_pings():
    def broken():
        raise OSError("model folder vanished")

    host = NativeHost(broken)
    solve = host.handle({"api": 1, "id": 1, "type": "solve", "data": {"image": b64(captcha(0)[0])}})
    assert solve["status"] == 500 and "model folder vanished" in solve["error"]
    ping = host.handle({"api": 1, "id": 2, "type": "ping"})
    assert ping["ok"] and ping["result"]["ready"] is False
