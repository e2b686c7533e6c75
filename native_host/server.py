"""waitress, set up so that slow or numerous clients cannot starve the others.

waitress reads every connection in one event loop and runs the app in a pool of
threads; what a slow client holds is a connection slot, not a thread.  Its
defaults let 100 connections in (then it stops accepting), close idle ones after
120 s and look for them every 30 s: 100 clients sending half a header each kept
/health waiting, and 200 clients at once left 102 waiting ~30 s for a slot.

Here: 1000 slots (poll(), not select(), so file descriptors past 1024 work), idle
connections closed after 10 s, a look every second, and a deadline on each
request: from its first byte to its last it may take REQUEST_DEADLINE seconds,
so a client trickling one header byte at a time loses its slot too.
"""
from __future__ import annotations

import logging
import resource
import time

from waitress.adjustments import Adjustments
from waitress.channel import HTTPChannel
from waitress.server import TcpWSGIServer
from waitress.task import ThreadedTaskDispatcher

log = logging.getLogger("captchalens.host")

CONNECTION_LIMIT = 1000  # open connections at once (waitress's default is 100)
CHANNEL_TIMEOUT = 10  # seconds an idle connection is kept (default 120); the extension reconnects
CLEANUP_INTERVAL = 1  # seconds between looks for idle and overdue connections (default 30)
REQUEST_DEADLINE = 10.0  # seconds from a request's first byte to its last (a 2 MB body takes ms)
BACKLOG = 2048  # connections the kernel queues before accept()
HEADER_LIMIT = 32 * 1024  # bytes of request headers (default 256 KB; the extension sends < 1 KB)
FD_SPARE = 64  # file descriptors kept for models, samples and logs


class DeadlineChannel(HTTPChannel):
    """A connection that remembers when the request it is reading began."""

    request_started: float | None = None

    def received(self, data):
        if self.request is None and data:
            self.request_started = time.monotonic()  # these bytes begin a new request
        try:
            return super().received(data)
        finally:
            if self.request is None:
                self.request_started = None  # everything received is a whole request


class GuardedServer(TcpWSGIServer):
    """waitress's TCP server, plus: a request must arrive whole within its deadline."""

    channel_class = DeadlineChannel
    request_deadline = REQUEST_DEADLINE

    def maintenance(self, now):
        super().maintenance(now)  # idle connections
        cutoff = time.monotonic() - self.request_deadline
        for channel in list(self.active_channels.values()):
            started = getattr(channel, "request_started", None)
            if started is not None and started < cutoff and not channel.requests:
                channel.will_close = True  # still sending its request after the deadline: cut off


def file_limit(wanted: int) -> int:
    """Raise the soft limit on open files towards `wanted` (up to the hard limit); return it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return wanted if soft == resource.RLIM_INFINITY else soft


def make_server(app, host: str, port: int, threads: int, max_body: int,
                connection_limit: int = CONNECTION_LIMIT,
                request_deadline: float = REQUEST_DEADLINE) -> GuardedServer:
    """A bound, listening server for `app` (call .run()). Raises OSError if the port is taken."""
    limit = min(connection_limit, max(16, file_limit(connection_limit + threads + FD_SPARE) - threads - FD_SPARE))
    if limit < connection_limit:
        log.warning("only %d connections at once (the open-file limit is low: ulimit -n)", limit)
    adj = Adjustments(host=host, port=port, threads=threads, connection_limit=limit,
                      channel_timeout=CHANNEL_TIMEOUT, cleanup_interval=CLEANUP_INTERVAL,
                      backlog=BACKLOG, asyncore_use_poll=True, max_request_header_size=HEADER_LIMIT,
                      max_request_body_size=max_body, ident="captchalens",
                      clear_untrusted_proxy_headers=True, expose_tracebacks=False)
    dispatcher = ThreadedTaskDispatcher()
    dispatcher.set_thread_count(threads)
    try:
        server = GuardedServer(app, map={}, dispatcher=dispatcher, adj=adj, sockinfo=adj.listen[0])
    except BaseException:
        dispatcher.shutdown()
        raise
    server.request_deadline = request_deadline
    return server
