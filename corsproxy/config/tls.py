"""TLS on the listeners: the server profile, and a certificate pair read and checked when the
config compiles (so `check`, the start and every reload refuse a bad pair the same way).

The profile is Mozilla's "intermediate" server configuration (wiki.mozilla.org/Security/
Server_Side_TLS, ssl-config.mozilla.org): TLS 1.2 and 1.3 only; for TLS 1.2 only ECDHE key
exchange with AES-GCM or ChaCha20-Poly1305 (AEAD: no CBC, no RSA key exchange); TLS 1.3's
suites are OpenSSL's defaults, all AEAD. The clients choose among these (Mozilla: "prefer
server ciphers off"). Mozilla's list also has three DHE suites; Python sets no DH parameters,
so OpenSSL could not use them anyway: they are left out rather than listed dead.

Session tickets are off (TLS 1.2's ticket extension and TLS 1.3's tickets): Python cannot
rotate the ticket key, and a key that lives as long as the process lets whoever reads it
decrypt every recorded session that resumed with it (nginx's Mozilla config says the same:
`ssl_session_tickets off`). A full handshake per connection is the cost; keep-alive makes it
rare. Client-initiated renegotiation is refused (a cheap way to make the server compute).
"""

from __future__ import annotations

import os
import re
import ssl
from dataclasses import dataclass, field

from corsproxy.config.files import (
    NOT_A_PATH,
    NOT_A_PATH_HINT,
    ConfigFileError,
    attempted,
    load_cert_chain,
    not_a_path,
    read_config_file,
)
from corsproxy.config.spec import Context, Section

# Mozilla intermediate, TLS 1.2 part, ECDHE only (see above).
INTERMEDIATE_CIPHERS = ":".join(
    (
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "ECDHE-RSA-CHACHA20-POLY1305",
    )
)
ALPN = ("http/1.1",)
MAX_PEM_SIZE = 1024 * 1024  # a certificate chain is a few KiB
_CERT = re.compile(rb"-----BEGIN CERTIFICATE-----")
_KEY = re.compile(rb"-----BEGIN (?:RSA |EC |ENCRYPTED )?PRIVATE KEY-----")
_ENCRYPTED = re.compile(rb"-----BEGIN ENCRYPTED PRIVATE KEY-----|Proc-Type: *4, *ENCRYPTED")


@dataclass(frozen=True, slots=True)
class ListenerTls:
    """`tls:` (or `admin.tls:`): the files as resolved, and the context loaded from them."""

    cert_file: str
    key_file: str
    # Built when the config compiled; a reload compiles a new one (compared by the files).
    context: ssl.SSLContext | None = field(default=None, compare=False, repr=False)

    def files(self) -> tuple[str, str]:
        return self.cert_file, self.key_file


class TlsFileError(ValueError):
    """A bad certificate pair: which key (`cert_file` or `key_file`) is at fault, and why."""

    def __init__(self, key: str, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.key = key
        self.message = message
        self.hint = hint


def server_context() -> ssl.SSLContext:
    """A server context with the profile and no certificate yet."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.maximum_version = ssl.TLSVersion.MAXIMUM_SUPPORTED
    context.set_ciphers(INTERMEDIATE_CIPHERS)  # TLS 1.2 and below; 1.3 has its own list
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_TICKET | ssl.OP_NO_RENEGOTIATION
    context.num_tickets = 0  # TLS 1.3: send no session tickets
    context.set_alpn_protocols(list(ALPN))
    return context


def resolve(path: str, config_file: str) -> str:
    """A file key's value: relative to the config file's directory (as nginx and Traefik
    resolve theirs), or to the working directory when there is no config file. Content
    pasted as a path stays as it is, so the reader refuses it without echoing it."""
    if not_a_path(path):
        return path
    path = os.path.expanduser(path)
    if os.path.isabs(path):
        return path
    base = os.path.dirname(os.path.abspath(config_file)) if os.path.isfile(config_file) else ""
    return os.path.join(base or os.getcwd(), path)


def _read(key: str, path: str) -> bytes:
    """The shared reader (config/files.py): a regular file only, bounded, never blocking, and
    a value that is PEM content rather than a path refused without echoing it."""
    try:
        return read_config_file(path, key, MAX_PEM_SIZE)
    except ConfigFileError as exc:
        if exc.reason == NOT_A_PATH:
            raise TlsFileError(key, NOT_A_PATH, NOT_A_PATH_HINT) from None
        hint = "check the path; relative paths start at the config file's directory"
        if "not a regular file" in exc.reason:
            hint = "name a PEM file"
        elif "larger than" in exc.reason:
            hint = "is it PEM?"
        elif "ermission" in exc.reason:
            hint = "make it readable by the user corsproxy runs as"
        raise TlsFileError(key, str(exc), hint) from None


def load_pair(cert_file: str, key_file: str) -> ListenerTls:
    """Read and check a certificate chain and its key; raises TlsFileError saying which."""
    cert = _read("cert_file", cert_file)
    if not _CERT.search(cert):
        raise TlsFileError(
            "cert_file",
            f"'{cert_file}' is not a PEM certificate (no '-----BEGIN CERTIFICATE-----')",
            "give the certificate chain in PEM, the server's certificate first "
            "(from DER: openssl x509 -inform der -in FILE -out FILE.pem)",
        )
    key = _read("key_file", key_file)
    if _ENCRYPTED.search(key):
        raise TlsFileError(
            "key_file",
            f"'{key_file}' is an encrypted private key",
            "corsproxy cannot ask for a passphrase: decrypt it (openssl pkey -in FILE -out "
            "PLAIN.pem) and protect the file by its permissions",
        )
    if not _KEY.search(key):
        raise TlsFileError(
            "key_file",
            f"'{key_file}' is not a PEM private key (no '-----BEGIN ... PRIVATE KEY-----')",
            "give the certificate's private key in PEM",
        )
    context = server_context()
    try:
        # A password callback, so OpenSSL never prompts on a terminal (a reload would hang).
        load_cert_chain(context, cert, key, password=lambda: b"")
    except ssl.SSLError as exc:
        text = f"{exc.reason or ''} {exc}".lower()
        if "mismatch" in text:
            raise TlsFileError(
                "key_file",
                f"the private key in '{key_file}' does not match the certificate in '{cert_file}'",
                "key_file must hold the key of cert_file's first certificate",
            ) from None
        raise TlsFileError(
            "cert_file",
            f"cannot load '{cert_file}' with '{key_file}': {exc.reason or exc}",
            "check both files are PEM and belong together",
        ) from None
    except OSError as exc:  # changed or removed between the checks and the load
        raise TlsFileError("cert_file", f"cannot read '{cert_file}': {exc}") from None
    return ListenerTls(cert_file, key_file, context)


def compile_tls(section: Section | None, ctx: Context) -> ListenerTls | None:
    """A `tls:` section as loaded files, or None (absent, or reported in the context)."""
    if section is None or not section.has("cert_file") or not section.has("key_file"):
        return None
    paths = {
        name: resolve(section.values[name], section.files.get(name, ctx.file))
        for name in ("cert_file", "key_file")
    }
    attempted(paths["cert_file"], paths["key_file"])  # watched even if the first one fails
    try:
        return load_pair(paths["cert_file"], paths["key_file"])
    except TlsFileError as exc:
        ctx.error(
            section.lines[exc.key],
            section.child_key(exc.key),
            exc.message,
            exc.hint,
            file=section.files.get(exc.key),
        )
        return None
