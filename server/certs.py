"""Certificates and keys for a deployment, made with `cryptography` (no openssl needed).

    fedcurate certs --out certs --san superlink.example.org,203.0.113.5 --sites hospital-a,bank-b

Writes:
    certs/ca.crt, ca.key             a self-signed CA (RSA 4096, 10 years); ca.crt goes to every partner
    certs/server.pem, server.key     the SuperLink's TLS certificate signed by the CA, with the given SANs
                                     (DNS names and IP addresses) plus localhost/127.0.0.1/::1
    certs/sites/<site>, <site>.pub   one ECDSA P-384 key pair per partner in OpenSSH format: the private key is
                                     the SuperNode's `--auth-supernode-private-key` (only that partner gets it),
                                     the public key is registered with the SuperLink
Private keys are written with mode 0600, atomically. An existing CA and existing site keys are kept, so running
the command again with more sites adds their key pairs (and re-issues the server certificate for the SANs
given) without invalidating what partners already hold.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fedcurate.common import io

logger = logging.getLogger(__name__)

DEFAULT_SANS = ("localhost", "127.0.0.1", "::1")
SITE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def _write_private(path: Path, data: bytes) -> None:
    """Atomically, readable by the owner only."""
    io.write_with(path, lambda tmp: (tmp.write_bytes(data), os.chmod(tmp, 0o600)))


def _write_public(path: Path, data: bytes) -> None:
    io.write_with(path, lambda tmp: (tmp.write_bytes(data), os.chmod(tmp, 0o644)))


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "fedcurate"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _san(hosts: list[str]) -> x509.SubjectAlternativeName:
    entries: list[x509.GeneralName] = []
    for host in dict.fromkeys([*DEFAULT_SANS, *hosts]):  # ordered, unique
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            entries.append(x509.DNSName(host))
    return x509.SubjectAlternativeName(entries)


def make_ca(out: Path, days: int = 3650) -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
    """Load the CA in `out`, or create it."""
    key_path, crt_path = out / "ca.key", out / "ca.crt"
    if key_path.exists() and crt_path.exists():
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        assert isinstance(key, rsa.RSAPrivateKey), f"{key_path}: not an RSA key"
        return key, x509.load_pem_x509_certificate(crt_path.read_bytes())
    key = rsa.generate_private_key(public_exponent=65537, key_size=4096)
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(_name("fedcurate CA")).issuer_name(_name("fedcurate CA"))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .sign(key, hashes.SHA256()))
    _write_private(key_path, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
    _write_public(crt_path, cert.public_bytes(serialization.Encoding.PEM))
    return key, cert


def make_server_cert(out: Path, ca_key: rsa.RSAPrivateKey, ca: x509.Certificate, hosts: list[str],
                     days: int = 825) -> Path:
    """The SuperLink's certificate for `hosts` (re-made when asked for other hosts)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(_name(hosts[0] if hosts else "localhost"))
            .issuer_name(ca.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(days=days))
            .add_extension(_san(hosts), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    _write_private(out / "server.key", key.private_bytes(serialization.Encoding.PEM,
                                                         serialization.PrivateFormat.TraditionalOpenSSL,
                                                         serialization.NoEncryption()))
    _write_public(out / "server.pem", cert.public_bytes(serialization.Encoding.PEM))
    return out / "server.pem"


def make_site_key(out: Path, site: str) -> Path:
    """An ECDSA P-384 key pair in OpenSSH format for SuperNode authentication; kept if it exists."""
    if not SITE_NAME.match(site):
        raise ValueError(f"site name {site!r}: use letters, digits, '_', '-' and '.' (at most 64)")
    private = out / "sites" / site
    if private.exists() and private.with_suffix(".pub").exists():
        return private
    key = ec.generate_private_key(ec.SECP384R1())
    _write_private(private, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                              serialization.NoEncryption()))
    _write_public(Path(f"{private}.pub"), key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                                                         serialization.PublicFormat.OpenSSH))
    return private


def make_certs(out: Path, hosts: list[str], sites: list[str]) -> dict[str, object]:
    """CA (reused if present), server certificate for `hosts`, one key pair per site; returns the paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    ca_key, ca = make_ca(out)
    server = make_server_cert(out, ca_key, ca, [h.strip() for h in hosts if h.strip()])
    keys = {site: make_site_key(out, site) for site in sites}
    logger.info("certificates in %s: CA, server certificate for %s, %d site key pair(s)", out,
                ", ".join([*DEFAULT_SANS, *hosts]), len(keys))
    return {"ca": out / "ca.crt", "server_cert": server, "server_key": out / "server.key", "site_keys": keys}


def check_key(path: Path) -> str:
    """'' when `path` holds an OpenSSH EC private key a SuperNode accepts, else why not."""
    path = Path(path)
    if not path.is_file():
        return f"{path}: no such key file"
    try:
        key = serialization.load_ssh_private_key(path.read_bytes(), password=None)
    except (ValueError, TypeError) as err:
        return f"{path}: not an OpenSSH private key ({err}); use the file `fedcurate certs` wrote to sites/<site>"
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        return f"{path}: a SuperNode key must be an EC (ECDSA) key, got {type(key).__name__}"
    return ""
