"""A request id on every log line the web app writes while it handles a request.

A sane `X-Request-Id` from the load balancer or the caller is kept, so one id follows a request
through every hop; anything else (missing, too long, characters that could forge a log line)
is replaced by a fresh one. The id goes back in the response's `X-Request-Id`.
"""

from __future__ import annotations

import re
import uuid
from contextvars import Token

from flask import Flask, Response, g, request

from core import logs

HEADER = "X-Request-Id"
SANE = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def init_app(app: Flask) -> None:
    app.before_request(_bind)
    app.after_request(_echo)
    app.teardown_request(_unbind)


def _bind() -> None:
    offered = request.headers.get(HEADER, "")
    g.request_id = offered if SANE.fullmatch(offered) else uuid.uuid4().hex
    g.request_log_context = logs.bind(request_id=g.request_id)


def _echo(response: Response) -> Response:
    if "request_id" in g:
        response.headers[HEADER] = g.request_id
    return response


def _unbind(_exc: BaseException | None) -> None:
    token: Token[dict[str, str]] | None = g.pop("request_log_context", None)
    if token is not None:
        logs.unbind(token)
