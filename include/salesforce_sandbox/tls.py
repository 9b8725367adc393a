"""Key material of the sandbox: its self-signed TLS certificate and a JWT signing key pair.

Both are generated on first use into the state directory and reused afterwards, so a client
that trusts the certificate once (``REQUESTS_CA_BUNDLE`` or the connection's ``ca_bundle``)
keeps trusting it across restarts. The certificate is made anew only when it lacks a name it
must carry (an older one without the Salesforce login hosts, or a new ``SANDBOX_CERT_HOSTNAMES``).

Besides ``localhost`` it names Salesforce's login hosts, so that clients which hard-code them can
reach the sandbox through its proxy (:mod:`salesforce_sandbox.proxy`) and still verify TLS. Trust
it per process (``REQUESTS_CA_BUNDLE``, ``NODE_EXTRA_CA_CERTS``), never in the system trust store.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

DEFAULT_STATE_DIR = Path(".local") / "sandbox"
CERT_FILE = "sandbox-cert.pem"
KEY_FILE = "sandbox-key.pem"
JWT_PRIVATE_KEY_FILE = "jwt-private-key.pem"
JWT_PUBLIC_KEY_FILE = "jwt-public-key.pem"
CERT_VALIDITY = dt.timedelta(days=3650)
# Extra DNS names for the certificate (comma-separated), e.g. "sandbox" when clients reach the
# sandbox by a container's service name. Read when the certificate is first created.
EXTRA_NAMES_ENV = "SANDBOX_CERT_HOSTNAMES"
# The hosts Salesforce clients log in at when nothing else is configured.
SALESFORCE_LOGIN_HOSTS = ("login.salesforce.com", "test.salesforce.com")
LOCAL_DNS_NAMES = ("localhost",)
LOCAL_IP = ipaddress.ip_address("127.0.0.1")


@dataclass(frozen=True)
class CertificateFiles:
    cert_path: Path  # PEM certificate: also the trust anchor clients use
    key_path: Path  # PEM private key, unencrypted


@dataclass(frozen=True)
class JwtKeyFiles:
    private_key_path: Path  # what a client signs its JWT bearer assertions with
    public_key_path: Path  # what the sandbox verifies them against


def certificate_dns_names() -> list[str]:
    """The DNS names the certificate carries: localhost, the Salesforce login hosts, and extras."""
    extra = [n.strip() for n in os.environ.get(EXTRA_NAMES_ENV, "").split(",") if n.strip()]
    return list(dict.fromkeys([*LOCAL_DNS_NAMES, *SALESFORCE_LOGIN_HOSTS, *extra]))


def ensure_certificate(state_dir: Path) -> CertificateFiles:
    """The sandbox's certificate and key in ``state_dir``, created if missing or lacking a name."""
    files = CertificateFiles(state_dir / CERT_FILE, state_dir / KEY_FILE)
    if files.cert_path.is_file() and files.key_path.is_file() and not _missing_names(files.cert_path):
        return files
    state_dir.mkdir(parents=True, exist_ok=True)
    key = _new_rsa_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost"),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Salesforce sandbox (local)")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + CERT_VALIDITY)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName(name) for name in certificate_dns_names()] + [x509.IPAddress(LOCAL_IP)]
            ),
            critical=False,
        )
        # CA:TRUE lets clients use the certificate itself as their trust anchor.
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, key_encipherment=True, key_cert_sign=True, crl_sign=False,
                content_commitment=False, data_encipherment=False, key_agreement=False,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write_private_key(files.key_path, key)
    files.cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return files


def _missing_names(cert_path: Path) -> set[str]:
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        carried = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (ValueError, x509.ExtensionNotFound):
        return {"(unreadable certificate)"}
    return set(certificate_dns_names()) - set(carried.get_values_for_type(x509.DNSName))


def ensure_jwt_keypair(state_dir: Path) -> JwtKeyFiles:
    """An RSA key pair for the JWT bearer flow in ``state_dir``, created if missing."""
    files = JwtKeyFiles(state_dir / JWT_PRIVATE_KEY_FILE, state_dir / JWT_PUBLIC_KEY_FILE)
    if files.private_key_path.is_file() and files.public_key_path.is_file():
        return files
    state_dir.mkdir(parents=True, exist_ok=True)
    key = _new_rsa_key()
    _write_private_key(files.private_key_path, key)
    files.public_key_path.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return files


def _new_rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _write_private_key(path: Path, key: rsa.RSAPrivateKey) -> None:
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    path.write_bytes(pem)
    path.chmod(0o600)
