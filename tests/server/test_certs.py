"""Keys where they belong: the coordinator makes the CA and the SuperLink certificate, each partner its own key
pair, and the coordinator registers public keys only; the CA key never sits beside the SuperLink's files."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from fedcurate.server.certs import (
    CertError,
    check_ca_file,
    check_key,
    fingerprint,
    load_public_key,
    make_certs,
    make_site_key,
    register_site,
    registered_sites,
)

CLI = [sys.executable, "-m", "fedcurate.app.cli"]


def _private_keys(folder):
    return sorted(p.name for p in folder.rglob("*") if p.is_file() and b"PRIVATE KEY" in p.read_bytes())


def test_certs_writes_no_partner_private_key_and_keeps_the_ca_key_outside_the_superlink_directory(tmp_path):
    done = subprocess.run([*CLI, "certs", "--out", str(tmp_path / "certs"), "--san", "superlink.example.org"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    certs = tmp_path / "certs"
    assert _private_keys(certs) == ["server.key"]  # the SuperLink's own TLS key, nothing else
    assert not (certs / "sites").exists() or not any((certs / "sites").iterdir())
    assert (tmp_path / "ca" / "ca.key").is_file() and oct(os.stat(tmp_path / "ca" / "ca.key").st_mode & 0o777) == "0o600"
    assert check_ca_file(certs / "ca.crt") == ""
    asked = subprocess.run([*CLI, "certs", "--out", str(certs), "--sites", "a"], capture_output=True, text=True,
                           timeout=120)
    assert asked.returncode == 2 and "--demo" in asked.stderr and not (tmp_path / "demo-keys").exists()


def test_demo_makes_partner_keys_elsewhere_and_registers_them(tmp_path):
    made = make_certs(tmp_path / "certs", ["localhost"], ["a", "b.x"], demo=True)
    assert set(registered_sites(tmp_path / "certs")) == {"a", "b.x"}
    assert made["site_keys"]["b.x"].parent == tmp_path / "demo-keys"  # type: ignore[index]
    assert _private_keys(tmp_path / "certs") == ["server.key"]
    assert check_key(made["site_keys"]["a"]) == ""  # type: ignore[index]


def test_a_missing_half_of_the_ca_is_an_error_not_a_new_ca(tmp_path):
    make_certs(tmp_path / "certs", ["localhost"])
    ca_before = (tmp_path / "certs" / "ca.crt").read_bytes()
    make_certs(tmp_path / "certs", ["other.example.org"])  # re-run: same CA, new server certificate
    assert (tmp_path / "certs" / "ca.crt").read_bytes() == ca_before
    (tmp_path / "ca" / "ca.key").unlink()
    with pytest.raises(CertError, match="ca.key is missing but .*ca.crt exists"):
        make_certs(tmp_path / "certs", ["localhost"])
    assert (tmp_path / "certs" / "ca.crt").read_bytes() == ca_before


def test_the_ca_key_may_not_live_in_the_superlink_directory(tmp_path):
    (tmp_path / "certs").mkdir()
    (tmp_path / "certs" / "ca.key").write_text("x")
    with pytest.raises(CertError, match="CA key sits in the SuperLink's directory"):
        make_certs(tmp_path / "certs", ["localhost"])
    with pytest.raises(CertError, match="must live elsewhere"):
        make_certs(tmp_path / "other", ["localhost"], ca_dir=tmp_path / "other")


def test_keygen_keeps_the_key_of_a_dotted_site_name(tmp_path):
    first = subprocess.run([*CLI, "keygen", "--site", "hospital.a", "--out", str(tmp_path)], capture_output=True,
                           text=True, timeout=60)
    assert first.returncode == 0, first.stderr
    assert "SHA256:" in first.stdout and first.stdout.startswith("ecdsa-sha2-nistp384 ")
    key_before = (tmp_path / "hospital.a").read_bytes()
    again = subprocess.run([*CLI, "keygen", "--site", "hospital.a", "--out", str(tmp_path)], capture_output=True,
                           text=True, timeout=60)
    assert again.returncode == 0 and (tmp_path / "hospital.a").read_bytes() == key_before
    assert (tmp_path / "hospital.a.pub").is_file() and not (tmp_path / "hospital.pub").exists()
    assert oct(os.stat(tmp_path / "hospital.a").st_mode & 0o777) == "0o600"
    (tmp_path / "hospital.a.pub").unlink()
    with pytest.raises(CertError, match="without its other half"):
        make_site_key(tmp_path, "hospital.a")


def test_register_binds_one_key_to_one_site(tmp_path):
    make_certs(tmp_path / "certs", ["localhost"])
    a, b = make_site_key(tmp_path / "keys", "a"), make_site_key(tmp_path / "keys", "b")
    register_site(tmp_path / "certs", "a", tmp_path / "keys" / "a.pub")
    with pytest.raises(CertError, match="already registered for site 'a'"):
        register_site(tmp_path / "certs", "evil", tmp_path / "keys" / "a.pub")
    with pytest.raises(CertError, match="already registered with another key"):
        register_site(tmp_path / "certs", "a", tmp_path / "keys" / "b.pub")
    register_site(tmp_path / "certs", "a", tmp_path / "keys" / "b.pub", replace=True)
    assert fingerprint(load_public_key(registered_sites(tmp_path / "certs")["a"])) == \
        fingerprint(load_public_key(tmp_path / "keys" / "b.pub"))
    with pytest.raises(CertError, match="not an OpenSSH public key"):
        register_site(tmp_path / "certs", "c", a)  # the private key, sent by mistake
    with pytest.raises(CertError, match="site name"):
        register_site(tmp_path / "certs", "../x", tmp_path / "keys" / "a.pub")
    assert b.exists()


def test_ca_file_check_names_a_file_that_is_not_a_certificate(tmp_path):
    (tmp_path / "ca.crt").write_text("not a certificate\n")
    assert "not a PEM certificate" in check_ca_file(tmp_path / "ca.crt")
    assert "no such CA certificate file" in check_ca_file(tmp_path / "missing.crt")
