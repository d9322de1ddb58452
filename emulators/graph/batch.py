"""`POST /v1.0/$batch`: up to 20 requests, `dependsOn` ordering, 424 for failed dependencies.

Each inner request is dispatched through the app itself with the caller's token, so it meets
the same guards, counters and throttling as a direct call: a batch never raises a mailbox's
concurrency limit. Requests whose dependencies are met run in waves of at most four in
parallel, as Outlook does. The SDK's snake-case `depends_on` is ignored, as real Graph does.
The request counters count the batch itself under `POST /v1.0/$batch` and each inner request
under its own route, and `batched` counts the inner ones: what reached the emulator over HTTP
is the sum less `batched`, what Exchange's per-mailbox limits count is the sum less the
batches.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from flask import Blueprint, Flask, Response, current_app, jsonify, request

from emulators.graph import query
from emulators.graph.auth import bearer
from emulators.graph.errors import bad_request, error_body

MAX_REQUESTS = 20
PARALLEL = 4
METHODS = {"GET", "POST", "PATCH", "PUT", "DELETE"}

bp = Blueprint("batch", __name__, url_prefix="/v1.0")


def _validate(body: Any) -> list[dict[str, Any]]:
    if not isinstance(body, dict) or not isinstance(body.get("requests"), list):
        raise bad_request("Invalid batch payload format.", "BadRequest")
    items = body["requests"]
    if not items:
        raise bad_request("Invalid batch payload format: no requests.", "BadRequest")
    if len(items) > MAX_REQUESTS:
        raise bad_request(f"The number of batch requests exceeds the maximum of {MAX_REQUESTS}.",
                          "BadRequest")  # fmt: skip
    seen: set[str] = set()
    for item in items:
        if not isinstance(item, dict):
            raise bad_request("Invalid batch payload format.", "BadRequest")
        rid, method, url = item.get("id"), item.get("method"), item.get("url")
        if not isinstance(rid, str) or not rid:
            raise bad_request("Batch request id is required.", "BadRequest")
        if rid in seen:
            raise bad_request(f"Batch request id '{rid}' is duplicated.", "BadRequest")
        if not isinstance(method, str) or method.upper() not in METHODS:
            raise bad_request(f"Invalid method {method!r} in request {rid}.", "BadRequest")
        if not isinstance(url, str) or url.startswith(("http:", "https:")):
            raise bad_request(f"Request {rid}: url must be relative, got {url!r}.", "BadRequest")
        if url.lstrip("/").lower().startswith("$batch"):
            raise bad_request(f"Request {rid}: a batch cannot contain a batch.", "BadRequest")
        headers = item.get("headers") or {}
        if not isinstance(headers, dict):
            raise bad_request(f"Request {rid}: headers must be an object.", "BadRequest")
        if (
            "body" in item
            and item["body"] is not None
            and not any(k.lower() == "content-type" for k in headers)
        ):
            raise bad_request(
                f"Write request id : {rid} does not contain Content-Type header or body.",
                "BadRequest",
            )
        depends = item.get("dependsOn") or []
        if not isinstance(depends, list) or any(d not in seen for d in depends):
            raise bad_request(f"Request {rid}: dependsOn must name earlier request ids.",
                              "BadRequest")  # fmt: skip
        seen.add(rid)
    return items


def _run(app: Flask, item: dict[str, Any], auth: str | None, host: str) -> dict[str, Any]:
    url = item["url"] if item["url"].startswith("/") else "/" + item["url"]
    headers = {k: v for k, v in (item.get("headers") or {}).items()}
    if auth:
        headers["Authorization"] = auth
    body = item.get("body")
    data = json.dumps(body) if isinstance(body, dict | list) else body
    with app.test_client() as client:
        response = client.open(
            "/v1.0" + url, method=item["method"].upper(), headers=headers, data=data,
            base_url=host,
        )  # fmt: skip
    out: dict[str, Any] = {"id": item["id"], "status": response.status_code,
                           "headers": {k: v for k, v in response.headers.items()
                                       if k.lower() in ("content-type", "retry-after", "location",
                                                        "etag", "preference-applied")}}  # fmt: skip
    if response.data:
        out["body"] = response.get_json(silent=True)
    return out


def _failed(item: dict[str, Any]) -> dict[str, Any]:
    return {"id": item["id"], "status": 424, "headers": {"Content-Type": "application/json"},
            "body": error_body("FailedDependency", "The request could not be executed because a "
                               "dependency failed.")}  # fmt: skip


@bp.post("/$batch")
def batch() -> Response:
    bearer()
    query.args(set())
    items = _validate(request.get_json(silent=True))
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    store = app.extensions["graph_store"]
    store.count_request("POST /v1.0/$batch")
    with store.lock:
        store.counters["batched"] += len(items)
    auth, host = request.headers.get("Authorization"), request.host_url
    results: dict[str, dict[str, Any]] = {}
    pending = list(items)
    with ThreadPoolExecutor(max_workers=PARALLEL) as pool:
        while pending:
            ready = [i for i in pending if all(d in results for d in i.get("dependsOn") or [])]
            pending = [i for i in pending if i not in ready]
            runnable = []
            for item in ready:
                if any(results[d]["status"] >= 400 for d in item.get("dependsOn") or []):
                    results[item["id"]] = _failed(item)
                else:
                    runnable.append(item)
            for out in pool.map(lambda i: _run(app, i, auth, host), runnable):
                results[out["id"]] = out
    return jsonify({"responses": [results[i["id"]] for i in items]})
