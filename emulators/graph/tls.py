"""The emulator's TLS: a CA made at start (trustme) and a server certificate it signs.

azure-identity accepts only an https authority, so the token endpoint (and with it Graph) is
served over TLS; clients trust the CA through the PEM file written to `--ca-file`.
"""

from __future__ import annotations

import ssl
from pathlib import Path

import trustme


def server_context(ca_file: Path, hosts: list[str]) -> ssl.SSLContext:
    """An SSL context for 127.0.0.1/localhost and `hosts`, its CA written to ca_file."""
    ca = trustme.CA(organization_name="exsync Graph emulator")
    names = sorted({"127.0.0.1", "localhost", "::1", *hosts} - {"0.0.0.0", "::", ""})
    cert = ca.issue_cert(*names)
    ca_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = ca_file.with_suffix(ca_file.suffix + ".tmp")
    ca.cert_pem.write_to_path(str(tmp))
    tmp.replace(ca_file)  # readers never see a half-written file
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(context)
    return context
