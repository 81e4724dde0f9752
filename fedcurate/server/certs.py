"""Certificates and keys for a deployment, made with `cryptography` (no openssl needed). Each key is made
where it is used: the CA key stays with whoever signs, a partner's key never leaves the partner.

    coordinator:  fedcurate certs --out certs --ca-dir ca --san superlink.example.org,203.0.113.5
    partner:      fedcurate keygen --site hospital-a --out keys        # sends keys/hospital-a.pub
    coordinator:  fedcurate register --certs certs --site hospital-a --key hospital-a.pub

Writes:
    ca/ca.key                        the CA's private key (RSA 4096, 10 years). Outside the SuperLink's
                                     directory; `fedcurate superlink` never reads it. Keep it offline.
    certs/ca.crt                     the CA certificate; every partner gets a copy
    certs/server.pem, server.key     the SuperLink's TLS certificate signed by the CA, with the given SANs
                                     (DNS names and IP addresses) plus localhost/127.0.0.1/::1
    certs/sites/<site>.pub           a partner's ECDSA public key (OpenSSH), registered under the site's
                                     name: the SuperLink knows a node's site only from this key
    keys/<site>, <site>.pub          (`keygen`, at the partner) the SuperNode's key pair; the private key is
                                     `--auth-supernode-private-key` and is never sent anywhere
Private keys are written with mode 0600, atomically. An existing CA is reused; a CA with one of its two
files missing is an error (a fresh CA would silently invalidate every partner's `ca.crt`). `--demo` also
makes the partners' key pairs on this machine (in `demo-keys/`), for single-machine trials only.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import logging
import os
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fedcurate.common import io

logger = logging.getLogger(__name__)

DEFAULT_SANS = ("localhost", "127.0.0.1", "::1")
SITE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
PUBLIC_SUFFIX = ".pub"


class CertError(ValueError):
    """A certificate, key or site name is wrong or missing; the message names the file and the rule."""


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


def check_site_name(site: str) -> str:
    if not SITE_NAME.match(site):
        raise CertError(f"site name {site!r}: use letters, digits, '_', '-' and '.' (at most 64, "
                        f"not starting with '.', '-' or '_')")
    return site


def public_path(private: Path) -> Path:
    """`keys/hospital.a` -> `keys/hospital.a.pub` (a suffix added, never one replaced)."""
    return Path(f"{private}{PUBLIC_SUFFIX}")


def make_ca(ca_dir: Path, days: int = 3650) -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
    """Load the CA in `ca_dir`, or create it when neither of its files exists."""
    key_path, crt_path = Path(ca_dir) / "ca.key", Path(ca_dir) / "ca.crt"
    if key_path.exists() != crt_path.exists():
        present, missing = (key_path, crt_path) if key_path.exists() else (crt_path, key_path)
        raise CertError(f"{missing} is missing but {present} exists: restore it from your backup. A new CA "
                        f"would invalidate the ca.crt every partner holds, so none is made (delete {present} "
                        f"too to start over with a new CA)")
    if key_path.exists():
        try:
            key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
            cert = x509.load_pem_x509_certificate(crt_path.read_bytes())
        except ValueError as err:
            raise CertError(f"{key_path} / {crt_path}: not a PEM CA key and certificate ({err})") from err
        if not isinstance(key, rsa.RSAPrivateKey):
            raise CertError(f"{key_path}: not an RSA key")
        if cert.public_key().public_numbers() != key.public_key().public_numbers():
            raise CertError(f"{crt_path} does not belong to {key_path}: the CA's two halves differ")
        return key, cert
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
    """`out/<site>` and `out/<site>.pub`: an ECDSA P-384 key pair in OpenSSH format for SuperNode
    authentication, made where it is used (the partner). Kept if both files exist; a half pair is an error."""
    private = Path(out) / check_site_name(site)
    public = public_path(private)
    if private.exists() and public.exists():
        return private
    if private.exists() or public.exists():
        raise CertError(f"{private if private.exists() else public} exists without its other half: move it "
                        f"away before making a new key pair for {site!r}")
    key = ec.generate_private_key(ec.SECP384R1())
    _write_private(private, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                              serialization.NoEncryption()))
    _write_public(public, key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                                        serialization.PublicFormat.OpenSSH) + b"\n")
    return private


def load_public_key(path: Path) -> ec.EllipticCurvePublicKey:
    """An OpenSSH ECDSA public key, or CertError naming the file and what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise CertError(f"{path}: no such public key file")
    try:
        key = serialization.load_ssh_public_key(path.read_bytes().strip())
    except (ValueError, TypeError, UnsupportedAlgorithm) as err:
        raise CertError(f"{path}: not an OpenSSH public key ({err}); send the .pub file `fedcurate keygen` "
                        f"wrote") from err
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise CertError(f"{path}: a SuperNode key must be an EC (ECDSA) key, got {type(key).__name__}")
    return key


def fingerprint(key: ec.EllipticCurvePublicKey) -> str:
    """OpenSSH-style SHA256 fingerprint, to compare over a second channel (phone, letter)."""
    blob = key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).split()[1]
    digest = hashlib.sha256(base64.b64decode(blob)).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def registered_sites(certs: Path) -> dict[str, Path]:
    """{site: public key file} from `certs/sites/*.pub`."""
    folder = Path(certs) / "sites"
    if not folder.is_dir():
        return {}
    return {p.name[: -len(PUBLIC_SUFFIX)]: p for p in sorted(folder.glob(f"*{PUBLIC_SUFFIX}"))}


def register_site(certs: Path, site: str, public_key: Path, replace: bool = False) -> Path:
    """Record `public_key` as the key of `site` in `certs/sites/<site>.pub`. A site already registered
    with another key, or a key already registered for another site, is refused (`replace` swaps a site's key)."""
    key = load_public_key(public_key)
    check_site_name(site)
    print_ = fingerprint(key)
    for other, path in registered_sites(certs).items():
        theirs = fingerprint(load_public_key(path))
        if theirs == print_ and other != site:
            raise CertError(f"{public_key}: this key is already registered for site {other!r} (rule: one key, "
                            f"one site)")
        if other == site and theirs != print_ and not replace:
            raise CertError(f"site {site!r} is already registered with another key ({theirs}); pass --replace to "
                            f"swap it (the old key then no longer joins once the SuperLink re-registers)")
    dest = Path(certs) / "sites" / f"{site}{PUBLIC_SUFFIX}"
    _write_public(dest, key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
                  + b"\n")
    logger.info("site %s registered with key %s", site, print_)
    return dest


def default_ca_dir(out: Path) -> Path:
    """`ca/` beside the SuperLink's `certs/` directory: never inside it."""
    out = Path(out).resolve()
    return out.parent / "ca" if out.name != "ca" else out.parent / "ca-key"


def make_certs(out: Path, hosts: list[str], sites: list[str] = (), *, ca_dir: Path | None = None,
               demo: bool = False) -> dict[str, object]:
    """The CA (in `ca_dir`, reused if present), `out/ca.crt` and the SuperLink certificate for `hosts`.

    `sites` needs `demo=True`: key pairs for those partners are then made here, in `<out>/../demo-keys/`,
    and their public keys registered -- for single-machine trials only; real partners run `keygen`."""
    out = Path(out)
    ca_dir = Path(ca_dir) if ca_dir is not None else default_ca_dir(out)
    if ca_dir.resolve() == out.resolve():
        raise CertError(f"--ca-dir {ca_dir} is the SuperLink's directory: the CA key must live elsewhere")
    if sites and not demo:
        raise CertError("partners make their own key pairs (`fedcurate keygen --site NAME` at the partner, then "
                        "`fedcurate register` here); --sites makes them here and needs --demo (single-machine "
                        "trials only)")
    if (out / "ca.key").exists():
        raise CertError(f"{out / 'ca.key'}: the CA key sits in the SuperLink's directory; move it to {ca_dir} "
                        f"(fedcurate superlink never reads it) and run again")
    out.mkdir(parents=True, exist_ok=True)
    ca_dir.mkdir(parents=True, exist_ok=True)
    ca_key, ca = make_ca(ca_dir)
    _write_public(out / "ca.crt", ca.public_bytes(serialization.Encoding.PEM))
    server = make_server_cert(out, ca_key, ca, [h.strip() for h in hosts if h.strip()])
    keys: dict[str, Path] = {}
    for site in sites:
        keys[site] = make_site_key(out.resolve().parent / "demo-keys", site)
        register_site(out, site, public_path(keys[site]))
    logger.info("certificates in %s (CA key in %s): server certificate for %s%s", out, ca_dir,
                ", ".join([*DEFAULT_SANS, *hosts]), f"; {len(keys)} demo key pair(s)" if keys else "")
    return {"ca": out / "ca.crt", "ca_key": ca_dir / "ca.key", "server_cert": server,
            "server_key": out / "server.key", "site_keys": keys}


def check_key(path: Path) -> str:
    """'' when `path` holds an OpenSSH EC private key a SuperNode accepts, else why not."""
    path = Path(path)
    if not path.is_file():
        return f"{path}: no such key file"
    try:
        key = serialization.load_ssh_private_key(path.read_bytes(), password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as err:
        return f"{path}: not an OpenSSH private key ({err}); use the file `fedcurate keygen` wrote"
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        return f"{path}: a SuperNode key must be an EC (ECDSA) key, got {type(key).__name__}"
    return ""


def check_ca_file(path: Path) -> str:
    """'' when `path` holds a PEM certificate, else why not (named, instead of an ssl traceback)."""
    path = Path(path)
    if not path.is_file():
        return f"{path}: no such CA certificate file (it is the ca.crt you received from the coordinator)"
    try:
        x509.load_pem_x509_certificates(path.read_bytes())
    except ValueError as err:
        return f"{path}: not a PEM certificate ({err}); --ca takes the coordinator's ca.crt"
    return ""
