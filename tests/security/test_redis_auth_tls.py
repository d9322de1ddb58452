"""Finding 10: Redis with a password, an ACL user or TLS, end to end, against real redis-server
processes started here (one with `requirepass` and the ACL user alice, one speaking only TLS
with a throwaway CA made in the test's tmp dir).

The whole system (web, worker, scheduler, the CLI and the audit publisher) syncs through each,
and a process given a wrong password, or a certificate it cannot trust, stops at start with a
message naming the setting instead of retrying forever. kombu alone would publish audit events
to a rediss:// broker without checking its certificate at all.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import json
import os
import shutil
import socket
import ssl
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from kombu import Connection, Consumer, Exchange, Message, Queue

from core import store
from core.audit import EXCHANGE, AuditPublisher
from tests.cli_support import invoke, run
from tests.harness import (
    COCONUT_WEBHOOK_SECRET,
    SECRET_KEY,
    TENANT,
    Process,
    System,
    free_port,
    wait_until,
)
from tests.sync_support import CoconutAdmin, wait_for_events

PASSWORD = "default-user-s3cret-4c1f9a57"  # requirepass: the default user's
ALICE, ALICE_PASSWORD = "alice", "alice-s3cret-7f3a0c5e"  # an ACL user with every right
QUIET = {"EXSYNC_SAFETY_NET_SECONDS": "3600", "EXSYNC_RECONCILE_SECONDS": "3600"}
USER1, STAFF1 = "user1@contoso.example", 1
PROCESS_ENV = {
    "EXSYNC_TENANT_ID": TENANT, "EXSYNC_CLIENT_ID": "exsync-test",
    "EXSYNC_COCONUT_URL": "http://127.0.0.1:1/api/v2/b2b",
    "EXSYNC_COCONUT_WEBHOOK_SECRET": COCONUT_WEBHOOK_SECRET, "EXSYNC_SECRET_KEY": SECRET_KEY,
}  # fmt: skip


@dataclass
class Certs:
    ca: Path
    cert: Path
    key: Path


def make_certs(folder: Path) -> Certs:
    """A throwaway CA and a certificate it signed for 127.0.0.1."""
    now = dt.datetime.now(dt.UTC)

    def signed(subject: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Name,
               issuer_key: ec.EllipticCurvePrivateKey, ca: bool) -> x509.Certificate:  # fmt: skip
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(issuer).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )  # fmt: skip
        if not ca:
            names = [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        return builder.sign(issuer_key, hashes.SHA256())

    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "exsync test CA")])
    ca = signed("exsync test CA", ca_key, ca_name, ca_key, ca=True)
    cert = signed("127.0.0.1", key, ca_name, ca_key, ca=False)
    certs = Certs(folder / "ca.pem", folder / "redis.pem", folder / "redis-key.pem")
    certs.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    certs.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    certs.key.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ))  # fmt: skip
    return certs


@contextlib.contextmanager
def redis_server(folder: Path, name: str, *args: str) -> Iterator[Process]:
    """A redis-server of this test's own, stopped afterwards. A missing one fails the test."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is required on PATH for the Redis AUTH and TLS tests")
    argv = [binary, "--save", "", "--appendonly", "no", "--dir", str(folder), *args]
    server = Process(name, argv, dict(os.environ), folder / f"{name}.log").start()
    try:
        server.wait_for_line("Ready to accept connections")
        yield server
    finally:
        server.stop()


@dataclass
class Secured:
    """A Redis that needs something of its clients, and what each kind of client is given."""

    url: str
    settings: dict[str, str] = field(default_factory=dict)  # for every process of the system
    tls: dict[str, Any] = field(default_factory=dict)  # for this test's own clients

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, **self.tls)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return make_certs(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="module")
def password_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    port, folder = free_port(), tmp_path_factory.mktemp("password-redis")
    acl = f"{ALICE} on >{ALICE_PASSWORD} ~* &* +@all"
    with redis_server(folder, "password-redis", "--port", str(port), "--requirepass", PASSWORD,
                      "--user", *acl.split()):  # fmt: skip
        yield port


@pytest.fixture(scope="module")
def tls_port(tmp_path_factory: pytest.TempPathFactory, certs: Certs) -> Iterator[int]:
    port, folder = free_port(), tmp_path_factory.mktemp("tls-redis")
    with redis_server(
        folder, "tls-redis", "--port", "0", "--tls-port", str(port),
        "--tls-cert-file", str(certs.cert), "--tls-key-file", str(certs.key),
        "--tls-ca-cert-file", str(certs.ca), "--tls-auth-clients", "no",
    ):  # fmt: skip
        yield port


@pytest.fixture
def secured(request: pytest.FixtureRequest, certs: Certs) -> Iterator[Secured]:
    """The Redis a test runs against, by name; emptied before and after."""
    if request.param == "acl_user":
        port = request.getfixturevalue("password_port")
        chosen = Secured(f"redis://{ALICE}:{ALICE_PASSWORD}@127.0.0.1:{port}/0")
    else:
        port = request.getfixturevalue("tls_port")
        chosen = Secured(
            f"rediss://127.0.0.1:{port}/0", {"EXSYNC_REDIS_CA_FILE": str(certs.ca)},
            {"ssl_ca_certs": str(certs.ca), "ssl_cert_reqs": ssl.CERT_REQUIRED},
        )  # fmt: skip
    with contextlib.closing(chosen.client()) as conn:
        conn.flushdb()
        yield chosen
        conn.flushdb()


class AuditEvents:
    """Every audit event published through this Redis from now on (a queue of our own bound
    to the topic exchange before anything publishes)."""

    def __init__(self, secured: Secured) -> None:
        self.conn = Connection(secured.url, connect_timeout=3, ssl=secured.tls or False)
        self.received: list[dict[str, Any]] = []
        queue = Queue(
            f"test-audit-{uuid.uuid4().hex}", routing_key="#", auto_delete=True,
            exchange=Exchange(EXCHANGE, type="topic", durable=True),
        )  # fmt: skip
        queue(self.conn.default_channel).declare()
        self.consumer = Consumer(self.conn, queues=[queue], callbacks=[self._on], accept=["json"])
        self.consumer.consume()

    def _on(self, body: dict[str, Any], message: Message) -> None:
        self.received.append(body)
        message.ack()

    def wait_for(self, routing_key: str, timeout: float = 60, **fields: str) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for body in self.received:
                if body["event"] == routing_key and fields.items() <= body.items():
                    return body
            with contextlib.suppress(socket.timeout, TimeoutError):
                self.conn.drain_events(timeout=0.5)
        seen = sorted({body["event"] for body in self.received})
        raise AssertionError(f"no {routing_key} {fields}; seen {seen}")

    def close(self) -> None:
        self.consumer.cancel()
        self.conn.close()


@pytest.mark.parametrize("secured", ["acl_user", "tls"], indirect=True)
def test_the_whole_system_syncs_through_a_redis_that_needs_credentials_or_tls(
    tmp_path: Path, secured: Secured
) -> None:
    """Web, worker and scheduler; a Coconut booking reaches Outlook, its audit event reaches a
    consumer of that Redis, and `exsync status` reads it."""
    events = AuditEvents(secured)
    system = System(tmp_path, secured.url, scheduler=True, graph_args=["--users", "3"],
                    settings={**QUIET, **secured.settings})  # fmt: skip
    try:
        system.start()
        coconut = CoconutAdmin(system)
        start = (dt.datetime.now(dt.UTC) + dt.timedelta(days=3)).replace(hour=15, minute=0)
        appointment = coconut.book(start.isoformat(), staff_id=STAFF1)
        coconut.http.close()
        wait_for_events(system, USER1, f"exsync:appointment:{appointment}", 1, timeout=60)
        events.wait_for("appointment.projected", item_id=str(appointment))
        with contextlib.closing(secured.client()) as conn:
            assert conn.get(store.scheduler_leader_key()), "no scheduler leads through this Redis"
        status = run(system.env, "status", "--json")
        assert status.returncode in (0, 1), status.stderr
        assert json.loads(status.stdout)["queue"]["failed"] == 0
        assert ALICE_PASSWORD not in system.logs()
    finally:
        system.stop()
        events.close()


@pytest.mark.parametrize(
    "command", [["worker", "--port", "0"], ["scheduler", "--port", "0"], ["web"], ["status"]],
    ids=lambda command: command[0],
)  # fmt: skip
def test_a_wrong_password_stops_each_process_at_start_naming_the_setting(
    tmp_path: Path, password_port: int, command: list[str]
) -> None:
    wrong = f"not-{ALICE_PASSWORD}"
    url = f"redis://{ALICE}:{wrong}@127.0.0.1:{password_port}/0"
    argv = [*command, "--port", str(free_port())] if command == ["web"] else command

    code, output = exsync(tmp_path, {"EXSYNC_REDIS_URL": url}, *argv)

    assert code == 2, output
    assert "EXSYNC_REDIS_URL" in output and "refused the credentials" in output
    assert wrong not in output


def test_a_worker_stops_at_start_when_redis_presents_a_certificate_it_cannot_trust(
    tmp_path: Path, tls_port: int
) -> None:
    url = f"rediss://127.0.0.1:{tls_port}/0"  # the test CA is not among the system's

    code, output = exsync(tmp_path, {"EXSYNC_REDIS_URL": url}, "worker", "--port", "0")

    assert code == 2, output
    assert "EXSYNC_REDIS_CA_FILE" in output


def test_the_audit_publisher_refuses_a_rediss_broker_it_cannot_trust(tls_port: int) -> None:
    """kombu takes a rediss:// URL without ssl options as "do not check the certificate": a
    machine in the middle would receive every audit event."""
    publisher = AuditPublisher(f"rediss://127.0.0.1:{tls_port}/0", deployment_id="test")
    publisher.publish("sync.failed", job_id="planted")
    publisher.close(timeout=30)

    assert (publisher.sent, publisher.dropped) == (0, 1)


@pytest.mark.parametrize("how", ["default_user_password", "ssl_ca_certs_in_the_url"])
def test_the_cli_and_the_audit_publisher_take_what_the_url_says(
    how: str, request: pytest.FixtureRequest, certs: Certs
) -> None:
    """Not an attack: requirepass's password alone, and a CA given in the URL's query (redis-py
    and kombu both read ssl_ca_certs there) instead of EXSYNC_REDIS_CA_FILE."""
    if how == "default_user_password":
        url = f"redis://:{PASSWORD}@127.0.0.1:{request.getfixturevalue('password_port')}/0"
    else:
        url = f"rediss://127.0.0.1:{request.getfixturevalue('tls_port')}/0?ssl_ca_certs={certs.ca}"

    status = invoke(url, "status", "--json")
    publisher = AuditPublisher(url, deployment_id="test")
    publisher.publish("sync.failed", job_id="j-1")
    publisher.close(timeout=30)

    assert status.exit_code in (0, 1), status.output
    assert json.loads(status.stdout)["queue"]["depth"] == 0
    assert (publisher.sent, publisher.dropped) == (1, 0)


def exsync(tmp_path: Path, env: dict[str, str], *args: str) -> tuple[int | None, str]:
    """Run `exsync ARGS` as its own process; (exit code, output), or fail if it keeps running:
    a process that cannot use Redis at start must not sit there retrying."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("EXSYNC_")}
    proc = Process(args[0], [sys.executable, "-m", "exsync.cli", *args],
                   {**base, **PROCESS_ENV, **env}, tmp_path / f"{args[0]}.log")  # fmt: skip
    proc.start()
    assert proc.popen is not None
    try:
        wait_until(lambda: not proc.running, 30, what=f"`exsync {args[0]}` to stop")
    except TimeoutError:
        pytest.fail(f"`exsync {args[0]}` kept running:\n{proc.log()[-2000:]}")
    finally:
        proc.stop()
    return proc.popen.returncode, proc.log()
