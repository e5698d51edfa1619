"""A self-signed certificate for TLS tests (``openssl``, valid for localhost and 127.0.0.1)."""

from __future__ import annotations

import subprocess
from pathlib import Path


def self_signed(folder: Path) -> tuple[Path, Path]:
    """``(key, cert)`` PEM files in ``folder``; the certificate is also the client's CA."""
    key, cert = folder / "key.pem", folder / "cert.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )
    return key, cert


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def ca_and_clients(folder: Path, units: tuple[str, ...] = ("read", "control", "none")) -> tuple[Path, dict]:
    """A CA and, per organizational unit, a client certificate it signed (``OU=<unit>``): the CA's PEM
    path and ``{unit: (key, cert)}``, for mutual TLS tests."""
    ca_key, ca_cert = folder / "ca-key.pem", folder / "ca.pem"
    _openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(ca_key), "-out", str(ca_cert),
        "-days", "1", "-subj", "/CN=test-ca",
    )  # fmt: skip
    clients = {}
    for unit in units:
        key, csr, cert = (folder / f"client-{unit}.{ext}" for ext in ("key", "csr", "pem"))
        _openssl(
            "req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr),
            "-subj", f"/CN=client-{unit}/OU={unit}",
        )  # fmt: skip
        _openssl(
            "x509", "-req", "-in", str(csr), "-CA", str(ca_cert), "-CAkey", str(ca_key),
            "-CAcreateserial", "-out", str(cert), "-days", "1",
        )  # fmt: skip
        clients[unit] = (key, cert)
    return ca_cert, clients
