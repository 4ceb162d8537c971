"""TLS for the admission webhook: a private CA and a serving certificate made with `cryptography`.

Kopf's own self-signed mode needs `certbuilder` + `oscrypto`, which fails on OpenSSL 3.0.x, so
Sesame makes its certificates here. Two sources, decided by the certificate directory:

- provided: `tls.crt`, `tls.key` and `ca.crt` are there and were not written by Sesame (e.g. a
  cert-manager Secret mounted as a volume). They are used as they are; their owner rotates them.
- generated: anything else. Sesame writes all three plus a marker file, and replaces them (at start,
  and in the running operator: `renewal`) when they are missing, unreadable, not yet valid, within
  the last third of their lifetime, not issued by the CA, not matching the key, or missing a host
  the API server dials.

The CA key is never written anywhere: the CA signs one serving certificate and is thrown away,
and a rotation makes a new CA (sesame.webhook.server puts it into the webhook configuration).
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import logging
import os
import shutil
import stat
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

logger = logging.getLogger("sesame.webhook")

CERT_FILE = "tls.crt"
KEY_FILE = "tls.key"
CA_FILE = "ca.crt"
MARKER_FILE = "sesame-generated"
CURRENT_LINK = "..current"  # -> the directory of the bundle in use (see `write`)
GENERATION_PREFIX = "..bundle-"
DEFAULT_VALIDITY = datetime.timedelta(days=365)
CLOCK_SKEW = datetime.timedelta(minutes=5)  # backdate, so a slightly slow API server clock accepts it


class CertificateError(RuntimeError):
    """The certificate directory cannot be used; the message says what to fix."""


@dataclass(frozen=True)
class Bundle:
    ca_pem: bytes
    cert_pem: bytes
    key_pem: bytes


@dataclass(frozen=True)
class CertificateFiles:
    directory: Path
    generated: bool

    @property
    def cert(self) -> Path:
        return self.directory / CERT_FILE

    @property
    def key(self) -> Path:
        return self.directory / KEY_FILE

    @property
    def ca(self) -> Path:
        return self.directory / CA_FILE


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _san(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def _key_usage(*, signs_certificates: bool) -> x509.KeyUsage:
    """A CA signs certificates and CRLs; an ECDSA serving certificate only signs (TLS handshakes)."""
    return x509.KeyUsage(
        digital_signature=not signs_certificates,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=signs_certificates,
        crl_sign=signs_certificates,
        encipher_only=False,
        decipher_only=False,
    )


def generate(
    hosts: Sequence[str],
    *,
    now: datetime.datetime | None = None,
    validity: datetime.timedelta = DEFAULT_VALIDITY,
) -> Bundle:
    """A fresh CA and a serving certificate for `hosts` (IP addresses and DNS names), ECDSA P-256."""
    if not hosts:
        raise ValueError("a serving certificate needs at least one host")
    now = now or _now()
    not_before = now - min(CLOCK_SKEW, validity / 10)
    not_after = now + validity

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sesame-webhook-ca")])
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(signs_certificates=True), critical=True)
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    key = ec.generate_private_key(ec.SECP256R1())
    common_name = next((h for h in hosts if not isinstance(_san(h), x509.IPAddress)), hosts[0])
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name[:64])]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(signs_certificates=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName([_san(h) for h in dict.fromkeys(hosts)]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return Bundle(
        ca_pem=ca.public_bytes(serialization.Encoding.PEM),
        cert_pem=cert.public_bytes(serialization.Encoding.PEM),
        key_pem=key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )


def covered_hosts(cert: x509.Certificate) -> set[str]:
    """The DNS names and IP addresses (as text) a certificate is valid for."""
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set()
    return set(sans.get_values_for_type(x509.DNSName)) | {
        str(ip) for ip in sans.get_values_for_type(x509.IPAddress)
    }


def rotation_reason(
    bundle: Bundle, hosts: Sequence[str], *, now: datetime.datetime | None = None
) -> str | None:
    """Why a generated bundle must be replaced now, or None when it is still good."""
    now = now or _now()
    try:
        ca = x509.load_pem_x509_certificate(bundle.ca_pem)
        cert = x509.load_pem_x509_certificate(bundle.cert_pem)
        key = serialization.load_pem_private_key(bundle.key_pem, password=None)
    except ValueError:
        return "the files cannot be parsed"
    if cert.public_key() != key.public_key():
        return "the key does not match the certificate"
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return "the certificate was not issued by the CA"
    for which, certificate in (("serving certificate", cert), ("CA", ca)):
        start, end = certificate.not_valid_before_utc, certificate.not_valid_after_utc
        if now < start:
            return f"the {which} is not valid yet"
        if end - now < (end - start) / 3:
            return f"the {which} expires at {end.isoformat()}, within the last third of its lifetime"
    wanted = {str(ipaddress.ip_address(h)) if isinstance(_san(h), x509.IPAddress) else h for h in hosts}
    missing = sorted(wanted - covered_hosts(cert))
    if missing:
        return f"the certificate does not cover {', '.join(missing)}"
    return None


def _read(directory: Path) -> Bundle | None:
    try:
        return Bundle(
            ca_pem=(directory / CA_FILE).read_bytes(),
            cert_pem=(directory / CERT_FILE).read_bytes(),
            key_pem=(directory / KEY_FILE).read_bytes(),
        )
    except FileNotFoundError:
        return None


def write(directory: Path, bundle: Bundle) -> None:
    """Make `bundle` current in one step.

    Kopf rereads all three files when any of them changes; had it read the new certificate with
    the old CA (or the reverse), the webhook configuration would name a CA that did not sign
    what is served. So, like the kubelet's atomic writer, each bundle gets a fresh directory, and
    one symlink rename (`..current`) switches from the old to the new; `tls.crt`, `tls.key` and
    `ca.crt` are links through it.
    """
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    (directory / MARKER_FILE).write_text("tls.crt, tls.key and ca.crt here are generated by Sesame\n")
    generation = Path(tempfile.mkdtemp(dir=directory, prefix=GENERATION_PREFIX))
    for name, data, mode in (
        (KEY_FILE, bundle.key_pem, 0o600),
        (CERT_FILE, bundle.cert_pem, 0o644),
        (CA_FILE, bundle.ca_pem, 0o644),
    ):
        fd = os.open(generation / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
    current = directory / CURRENT_LINK
    previous = os.readlink(current) if current.is_symlink() else None
    _link_atomically(current, generation.name)
    for name in (KEY_FILE, CERT_FILE, CA_FILE):
        if not (directory / name).is_symlink():  # once, when files from an older layout are there
            _link_atomically(directory / name, f"{CURRENT_LINK}/{name}")
    for old in directory.glob(f"{GENERATION_PREFIX}*"):
        if old.name not in (generation.name, previous):  # the previous one may still be being read
            shutil.rmtree(old, ignore_errors=True)


def _link_atomically(path: Path, target: str) -> None:
    temporary = path.with_name(f"{path.name}.tmp")
    temporary.unlink(missing_ok=True)
    os.symlink(target, temporary)
    os.replace(temporary, path)


def ensure_private(directory: Path) -> None:
    """The default directory lives in a shared temp dir: make it 0700, and refuse one that someone
    else made first or that others may read (its key would serve the webhook)."""
    with contextlib.suppress(FileExistsError):
        directory.mkdir(mode=0o700)
    info = directory.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid() or info.st_mode & 0o077:
        raise CertificateError(
            f"{directory} is not a private directory of this user (owner uid {info.st_uid}, mode "
            f"{stat.S_IMODE(info.st_mode):o}): remove it, or set SESAME_WEBHOOK_CERT_DIR to a directory only "
            "you can read"
        )


def ensure(
    directory: Path,
    hosts: Sequence[str],
    *,
    now: datetime.datetime | None = None,
    validity: datetime.timedelta = DEFAULT_VALIDITY,
) -> CertificateFiles:
    """Use the provided certificates in `directory`, or generate (and rotate) Sesame's own."""
    names = (CERT_FILE, KEY_FILE, CA_FILE)
    present = [name for name in names if (directory / name).exists()]
    generated_before = (directory / MARKER_FILE).exists()
    if present and not generated_before:
        if len(present) < len(names):
            missing = ", ".join(n for n in names if n not in present)
            raise CertificateError(
                f"{directory} holds {', '.join(present)} but not {missing}: provide tls.crt, tls.key "
                "and ca.crt together (a cert-manager Certificate Secret has all three), or empty the "
                "directory so Sesame generates its own"
            )
        bundle = _read(directory)
        assert bundle is not None
        # Not ours to replace: whoever provides them rotates them (Kopf's server reloads changed
        # files); only say what is off. Their names are the provider's business (often no loopback).
        reason = rotation_reason(bundle, (), now=now)
        if reason:
            logger.warning("provided webhook certificate in %s: %s", directory, reason)
        else:
            logger.info("using the provided webhook certificate in %s", directory)
        return CertificateFiles(directory, generated=False)

    renewed = renewal(directory, hosts, now=now, validity=validity)
    if renewed is not None:
        write(directory, renewed)
    elif not (directory / CURRENT_LINK).is_symlink():  # good files in an older layout: relink them
        kept = _read(directory)
        assert kept is not None
        write(directory, kept)
    return CertificateFiles(directory, generated=True)


def renewal(
    directory: Path,
    hosts: Sequence[str],
    *,
    now: datetime.datetime | None = None,
    validity: datetime.timedelta = DEFAULT_VALIDITY,
) -> Bundle | None:
    """A new bundle when the generated one in `directory` must be replaced (not written yet)."""
    bundle = _read(directory) if (directory / MARKER_FILE).exists() else None
    reason = "there is none yet" if bundle is None else rotation_reason(bundle, hosts, now=now)
    if not reason:
        return None
    logger.info("generating a webhook CA and serving certificate in %s: %s", directory, reason)
    return generate(hosts, now=now, validity=validity)
