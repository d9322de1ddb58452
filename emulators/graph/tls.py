"""The emulator's TLS: a CA made at start (trustme) and a server certificate it signs.

azure-identity accepts only an https authority, so the token endpoint (and with it Graph) is
served over TLS; clients trust the CA through the PEM file written to `--ca-file`.
"""

from __future__ import annotations

from pathlib import Path

import trustme


def server_files(ca_file: Path, hosts: list[str]) -> tuple[Path, Path]:
    """The certificate chain and key files for 127.0.0.1/localhost and `hosts`, written beside
    ca_file, with the CA that signed them written to ca_file."""
    ca = trustme.CA(organization_name="exsync Graph emulator")
    names = sorted({"127.0.0.1", "localhost", "::1", *hosts} - {"0.0.0.0", "::", ""})
    cert = ca.issue_cert(*names)
    ca_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = ca_file.with_suffix(ca_file.suffix + ".tmp")
    ca.cert_pem.write_to_path(str(tmp))
    chain, key = ca_file.with_name("graph-server.pem"), ca_file.with_name("graph-server.key")
    cert.cert_chain_pems[0].write_to_path(str(chain))
    for extra in cert.cert_chain_pems[1:]:
        extra.write_to_path(str(chain), append=True)
    cert.private_key_pem.write_to_path(str(key))
    key.chmod(0o600)
    tmp.replace(ca_file)  # readers never see a half-written file, nor one before its server's
    return chain, key
