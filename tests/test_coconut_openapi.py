"""core/coconut/openapi.yaml is the one written contract: the emulator serves exactly it, its
examples are valid, and both the emulator's answers and the client's requests conform to it.

The conformance test wraps the emulator's Flask app with a checker that validates every
request body and every response body against the operation it matches, then drives every
operation through core.coconut.client.CoconutClient and an admin's raw calls over real HTTP.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from flask import Flask, Response, request
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012
from werkzeug.serving import make_server

from core.coconut.client import CoconutClient
from core.coconut.models import AbsenceWrite, Conflict
from emulators.coconut.app import API, create_app
from emulators.coconut.seed import seed
from emulators.coconut.store import Settings, Store

SPEC_PATH = Path(__file__).parent.parent / "core" / "coconut" / "openapi.yaml"
METHODS = ("get", "post", "put", "patch", "delete")
CLIENT_ID, CLIENT_SECRET = "contract-client", "contract-secret"
OFF_CONTRACT = "X-Test-Off-Contract"  # a request sent wrong on purpose, to see the error answer
# JSON Schema 2020-12 keywords plus the annotations OpenAPI 3.1 allows; a typo is not silent.
KEYWORDS = {
    "$ref", "type", "properties", "required", "additionalProperties", "items", "enum", "const",
    "oneOf", "anyOf", "allOf", "minimum", "maximum", "exclusiveMinimum", "minItems", "minLength",
    "minProperties", "pattern", "format", "description", "default", "examples", "example",
}  # fmt: skip


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    return yaml.safe_load(SPEC_PATH.read_text())


def validator(spec: dict[str, Any], schema: dict[str, Any]) -> Draft202012Validator:
    """A validator whose `#/components/...` refs resolve inside the spec."""
    registry = Registry().with_resource("spec", Resource(spec, DRAFT202012))
    return Draft202012Validator(_rebase(schema), registry=registry)


def _rebase(schema: Any) -> Any:
    if isinstance(schema, dict):
        return {
            k: ("spec" + v if k == "$ref" and v.startswith("#") else _rebase(v))
            for k, v in schema.items()
        }
    if isinstance(schema, list):
        return [_rebase(v) for v in schema]
    return schema


def operations(spec: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(full path template as the emulator serves it, METHOD, operation)."""
    for path, item in spec["paths"].items():
        full = path if path.startswith("/_emulator") else API + path
        for method in METHODS:
            if method in item:
                yield full, method.upper(), item[method]


def schema_keys(node: Any, where: str = "") -> Iterator[tuple[str, str]]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key not in ("properties",) and not where.endswith("properties"):
                yield where, key
            yield from schema_keys(value, f"{where}/{key}")
    elif isinstance(node, list):
        for n, value in enumerate(node):
            yield from schema_keys(value, f"{where}/{n}")


def test_every_schema_is_valid_json_schema_without_unknown_keywords(spec: dict[str, Any]) -> None:
    assert spec["openapi"].startswith("3.1.")
    for name, schema in spec["components"]["schemas"].items():
        Draft202012Validator.check_schema(schema)
        unknown = {(w, k) for w, k in schema_keys(schema, name) if k not in KEYWORDS}
        assert not unknown, f"{name}: unknown keywords {sorted(unknown)}"


def test_the_emulator_serves_exactly_the_paths_in_the_contract(spec: dict[str, Any]) -> None:
    app = create_app(Store("a", "b", "t", Settings()))
    served = set()
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        path = re.sub(r"<(?:\w+:)?(\w+)>", "{}", rule.rule)
        served |= {(path, m) for m in rule.methods or () if m not in ("HEAD", "OPTIONS")}
    documented = {(re.sub(r"\{\w+\}", "{}", p), m) for p, m, _ in operations(spec)}
    assert served - documented == set(), "served but not in the contract"
    assert documented - served == set(), "in the contract but not served"


def test_every_example_validates_against_its_schema(spec: dict[str, Any]) -> None:
    checked = 0
    for _path, _method, op in operations(spec):
        bodies = [("request", op.get("requestBody", {}).get("content", {}))]
        for status, response in op.get("responses", {}).items():
            if "$ref" in response:
                response = spec["components"]["responses"][response["$ref"].rsplit("/", 1)[1]]
            bodies.append((status, response.get("content", {})))
        for _label, content in bodies:
            for media in content.values():
                if "example" in media:
                    validator(spec, media["schema"]).validate(media["example"])
                    checked += 1
    for hook in spec["webhooks"].values():
        media = hook["post"]["requestBody"]["content"]["application/json"]
        validator(spec, media["schema"]).validate(media["example"])
        checked += 1
    assert checked >= 10


def test_a_wrong_example_would_fail(spec: dict[str, Any]) -> None:
    """The checks above can fail: a document off the contract is refused."""
    check = validator(spec, {"$ref": "#/components/schemas/AbsenceDocument"})
    example = spec["paths"]["/absences/{absence_id}"]["get"]["responses"]["200"]
    good = example["content"]["application/vnd.api+json"]["example"]
    bad = {"data": {**good["data"], "attributes": {**good["data"]["attributes"], "extra": 1}}}
    assert not list(check.iter_errors(good))
    assert list(check.iter_errors(bad))


# ------------------------------------------------------------------ live conformance


@dataclass
class Checker:
    """Validates each request and response against the operation its path and method match."""

    spec: dict[str, Any]
    routes: list[tuple[re.Pattern[str], str, str, dict[str, Any]]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    seen: set[tuple[str, str, str]] = field(default_factory=set)

    def __post_init__(self) -> None:
        for path, method, op in operations(self.spec):
            pattern = re.compile("^" + re.sub(r"\{\w+\}", r"[^/]+", path) + "$")
            self.routes.append((pattern, path, method, op))

    def match(self) -> tuple[str, dict[str, Any]] | None:
        for pattern, path, method, op in self.routes:
            if method == request.method and pattern.match(request.path):
                return path, op
        return None

    def check_request(self) -> None:
        found = self.match()
        if found is None or request.headers.get(OFF_CONTRACT):
            return
        path, op = found
        if "requestBody" not in op:
            if request.get_data():
                self.problems.append(f"{request.method} {path}: a body where none is expected")
            return
        media = op["requestBody"]["content"].get(request.mimetype)
        if media is None:
            self.problems.append(f"{request.method} {path}: body type {request.mimetype!r}")
            return
        body = dict(request.form) if request.form else request.get_json(silent=True)
        self.validate(f"request {request.method} {path}", media["schema"], body)

    def check_response(self, response: Response) -> Response:
        found = self.match()
        if found is None:
            self.problems.append(f"{request.method} {request.path}: no operation")
            return response
        path, op = found
        status = str(response.status_code)
        self.seen.add((request.method, path, status))
        answer = op["responses"].get(status) or op["responses"].get("default")
        if answer is None:
            self.problems.append(f"{request.method} {path}: undocumented status {status}")
            return response
        if "$ref" in answer:
            answer = self.spec["components"]["responses"][answer["$ref"].rsplit("/", 1)[1]]
        content = answer.get("content")
        if not content:
            if response.get_data():
                self.problems.append(f"{request.method} {path} {status}: unexpected body")
            return response
        media = content.get(response.mimetype)
        if media is None:
            self.problems.append(f"{request.method} {path} {status}: type {response.mimetype}")
            return response
        self.validate(f"response {request.method} {path} {status}", media["schema"],
                      response.get_json())  # fmt: skip
        return response

    def validate(self, what: str, schema: dict[str, Any], body: Any) -> None:
        for error in validator(self.spec, schema).iter_errors(body):
            self.problems.append(f"{what}: {error.json_path}: {error.message}")


def jsonapi(kind: str, **attrs: Any) -> dict[str, Any]:
    return {"data": {"type": kind, "attributes": attrs}}


@pytest.fixture
def served(spec: dict[str, Any]) -> Iterator[tuple[str, Checker]]:
    store = Store(CLIENT_ID, CLIENT_SECRET, "bank.coconutcalendar.com", Settings())
    seed(store, 3, "contoso.example")
    app: Flask = create_app(store)
    checker = Checker(spec)
    app.before_request_funcs.setdefault(None, []).insert(0, checker.check_request)
    app.after_request(checker.check_response)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}", checker
    server.shutdown()
    thread.join(5)


def test_client_requests_and_emulator_answers_follow_the_contract(
    served: tuple[str, Checker], spec: dict[str, Any]
) -> None:
    base, checker = served
    client = CoconutClient(f"{base}{API}", CLIENT_ID, CLIENT_SECRET)
    start = datetime(2030, 6, 3, 14, tzinfo=UTC)
    write = AbsenceWrite(1, start, start + timedelta(hours=1), False, "America/Toronto", "Busy",
                         external_id="evt-contract", external_version="ck1")  # fmt: skip
    with client:
        assert list(client.users(takes_appointments=True, email="user1@contoso.example"))
        assert client.get_user(1) and client.get_user(9999) is None
        assert list(client.appointments(updated_since=start - timedelta(days=3650), user=1))
        assert client.get_appointment(1) and client.get_appointment(9999) is None
        absence = client.create_absence(write)
        with pytest.raises(Conflict):
            client.create_absence(write)
        client.update_absence(absence.id, replace(write, title="Away"), if_match=absence.version)
        with pytest.raises(Conflict):
            client.update_absence(absence.id, write, if_match=absence.version)
        assert list(client.absences(user=1, source="external", external_id="evt-contract"))
        assert client.get_absence(absence.id)
        assert client.delete_absence(absence.id) and not client.delete_absence(absence.id)
        hook = client.create_webhook("http://127.0.0.1:9/hook", ["appointment.created"])
        assert client.webhooks()
        token = client._bearer()  # the admin below acts with the same app's token

    admin = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"})
    with admin:
        for path in ("/assignments?filter[user]=1", "/locations", "/locations/1", "/services",
                     "/services/1", "/clients/1", "/appointments?include=attendees,location,"
                     "services,users", f"/webhooks/{hook['id']}",
                     f"/webhooks/{hook['id']}/deliveries", "/users?limit=101"):  # fmt: skip
            admin.get(API + path)
        attrs = {"start": "2030-06-04 10:00:00", "staff_id": 1, "location_id": 1, "service_id": [1]}
        clients = {"attendees": {"data": [{"type": "clients", "id": "1"}]}}
        doc = {"data": {"type": "appointments", "attributes": attrs, "relationships": clients}}
        made = admin.post(f"{API}/appointments", json=doc).json()["data"]
        admin.patch(f"{API}/appointments/{made['id']}", json=jsonapi("appointments", notes="x"))
        attendee = made["relationships"]["attendees"]["data"][0]["id"]
        admin.delete(f"{API}/appointments/{made['id']}/attendees/{attendee}")
        admin.patch(f"{API}/users/2", json=jsonapi("users", lang="fr"))
        admin.post(f"{API}/webhooks/{hook['id']}/test")
        admin.patch(f"{API}/webhooks/{hook['id']}", json=jsonapi("webhooks", active=False))
        admin.delete(f"{API}/webhooks/{hook['id']}")
        httpx.post(
            f"{base}{API}/oauth/token", data={"grant_type": "password"}, headers={OFF_CONTRACT: "1"}
        )
        httpx.get(f"{base}{API}/users")  # no token
        httpx.get(f"{base}/_emulator/state")
        httpx.post(f"{base}/_emulator/faults/slow_page", json={"count": 1, "seconds": 0})
        httpx.post(f"{base}/_emulator/faults/nope", json={"count": 1}, headers={OFF_CONTRACT: "1"})
        httpx.delete(f"{base}/_emulator/faults")
        httpx.patch(f"{base}/_emulator/settings", json={"rate_limit": 600})
        httpx.post(f"{base}/_emulator/tokens/expire")

    assert checker.problems == [], "\n".join(checker.problems)
    exercised = {(m, p) for m, p, _ in checker.seen}
    documented = {(m, p) for p, m, _ in operations(spec)}
    assert documented - exercised == set(), "operations the test did not reach"
    statuses = {s for _, _, s in checker.seen}
    assert {"200", "201", "202", "204", "400", "401", "404", "409"} <= statuses
