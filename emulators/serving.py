"""How an emulator is served: cheroot's threaded WSGI server, with HTTP/1.1 keep-alive.

Werkzeug's development server closes every connection after one response, so each call paid a
new TCP connection, a new thread and, for Graph, a TLS handshake: costs that Microsoft's and
Coconut's front ends, which keep connections alive, never charge. At 50 changes a second they
were most of what the sync workers waited on (bench/latency.py).
"""

from __future__ import annotations

import signal
import ssl
import threading
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

from cheroot import wsgi
from cheroot.ssl.builtin import BuiltinSSLAdapter

# Requests in parallel: the Graph emulator must see more than its concurrency limit at once.
THREADS = 48


def serve(
    app: Callable[..., Any],
    host: str,
    port: int,
    ready: Callable[[int], None],
    *,
    tls: tuple[Path, Path] | None = None,
) -> None:
    """Serve `app` until SIGTERM or SIGINT; `ready` gets the bound port once it listens.
    `tls`: the certificate chain and key files to serve HTTPS with."""
    server = wsgi.Server((host, port), app, numthreads=THREADS, request_queue_size=128)
    if tls is not None:
        adapter = BuiltinSSLAdapter(str(tls[0]), str(tls[1]))
        adapter.context.minimum_version = ssl.TLSVersion.TLSv1_2
        server.ssl_adapter = adapter

    def stop(signum: int, frame: FrameType | None) -> None:
        threading.Thread(target=server.stop, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    server.prepare()
    ready(server.bind_addr[1])
    try:
        server.serve()
    finally:
        server.stop()
