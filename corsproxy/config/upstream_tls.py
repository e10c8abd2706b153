"""`upstream_tls`: how corsproxy speaks TLS to an https upstream, compiled once at load.

The keys (`ca_file`, `cert_file` / `key_file`, `server_name`, `insecure_skip_verify`) compile
into an immutable `UpstreamTLS` carrying its `ssl.SSLContext`, built here and never on a
request: an unreadable file, a file that is not PEM or a key that does not match its
certificate is a load error naming the file, line and key (never a traceback).

- TLS 1.2 is the minimum; the system's trust store is always loaded, `ca_file` adds to it.
- The certificate is verified and the name checked (`server_name`, else the upstream's host)
  unless `insecure_skip_verify`, which is a warning (`check --strict` refuses it) and is
  logged as a WARNING when serving starts.
- Two equal settings over files with equal contents are one object with one context; the
  upstream client keys its pools on it, so a connection made for one server name or client
  certificate never serves a route with other settings.
- `UpstreamTLS.files` lists the files it read, for whoever watches them (`--watch`).
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import re
import ssl
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from corsproxy.config.files import (
    NOT_A_PATH,
    NOT_A_PATH_HINT,
    ConfigFileError,
    load_cert_chain,
    not_a_path,
    read_config_file,
)
from corsproxy.config.spec import INVALID, Context, Field, Invalid, Obj, Section, boolean, text

if TYPE_CHECKING:
    from corsproxy.policy.routes import RouteTable, Upstream

# A certificate bundle or key larger than this is not one (read whole, at load only).
MAX_PEM_SIZE = 4 * 1024 * 1024
_DNS_NAME = re.compile(
    r"(?=.{1,253}\Z)[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?)*\.?\Z"
)


class TLSProblem(StrEnum):
    """What an upstream_tls diagnostic is about."""

    UNREADABLE = "upstream-tls-unreadable"
    NOT_PEM = "upstream-tls-not-pem"
    KEY_MISMATCH = "upstream-tls-key-mismatch"
    PAIR = "upstream-tls-cert-key-pair"
    INSECURE = "upstream-tls-insecure"
    UNUSED = "upstream-tls-unused"


@dataclass(frozen=True, slots=True)
class UpstreamTLS:
    """Compiled upstream TLS settings. Equal settings over equal file contents compare equal
    (the pool key); `context` is the one SSLContext built for them."""

    ca_file: str | None = None  # absolute paths once compiled
    cert_file: str | None = None
    key_file: str | None = None
    server_name: str | None = None
    insecure_skip_verify: bool = False
    # SHA-256 over the files' contents: a changed certificate is other settings.
    digest: str = ""
    context: ssl.SSLContext | None = field(default=None, compare=False, repr=False)

    @property
    def files(self) -> tuple[str, ...]:
        """The files these settings read (absolute paths), for a file watcher."""
        return tuple(f for f in (self.ca_file, self.cert_file, self.key_file) if f)


def check_server_name(value: str) -> str:
    from corsproxy.config.spec import SpecError

    try:
        ipaddress.ip_address(value)
        return value
    except ValueError:
        pass
    if not _DNS_NAME.match(value):
        raise SpecError(
            f"'{value}' is not a host name", "the name the upstream's certificate holds"
        )
    return value.rstrip(".")


def _nonempty(value: str) -> str:
    from corsproxy.config.spec import SpecError

    if not value.strip():
        raise SpecError("must not be empty", "a path to a PEM file")
    return value


UPSTREAM_TLS_SPEC = Obj(
    {
        "ca_file": Field(
            text(_nonempty),
            "PEM CA certificates trusted for the upstream besides the system store "
            "(relative to the config file).",
        ),
        "cert_file": Field(
            text(_nonempty),
            "PEM client certificate (chain) for mutual TLS; needs key_file.",
        ),
        "key_file": Field(text(_nonempty), "PEM private key of cert_file (unencrypted)."),
        "server_name": Field(
            text(check_server_name),
            "The name sent as SNI and verified in the upstream's certificate "
            "(default: the upstream URL's host).",
        ),
        "insecure_skip_verify": Field(
            boolean(),
            "Do not verify the upstream's certificate or name (development only: a warning, "
            "refused by check --strict).",
        ),
    },
    doc="TLS to an https upstream.",
    target=UpstreamTLS,
)


# Contexts by settings and digest, so a reload with unchanged files reuses the context (and
# with it the pools). Bounded: a config has few distinct settings.
_CONTEXTS: dict[tuple[Any, ...], UpstreamTLS] = {}
_MAX_CONTEXTS = 256


def _base_dir(file: str) -> str:
    return os.path.dirname(os.path.abspath(file)) if os.path.isfile(file) else os.getcwd()


def compile_upstream_tls(section: Section, ctx: Context) -> UpstreamTLS | Invalid:
    """The settings of one `upstream_tls` mapping with their context, or INVALID after
    reporting (file, line, key) every problem."""
    paths: dict[str, str] = {}
    contents: dict[str, bytes] = {}
    failed = False
    for name in ("ca_file", "cert_file", "key_file"):
        value: str | None = section.get(name)
        if value is None:
            continue
        file, line, key = section.files[name], section.lines[name], section.child_key(name)
        path = (  # content pasted as a path stays as it is: refused, never echoed
            value
            if not_a_path(value)
            else os.path.normpath(os.path.join(_base_dir(file), os.path.expanduser(value)))
        )
        paths[name] = path
        try:
            # A regular file (symlinks followed), read without blocking: a FIFO is refused.
            contents[name] = read_config_file(path, key, MAX_PEM_SIZE)
        except ConfigFileError as exc:
            ctx.error(
                line,
                key,
                str(exc),
                NOT_A_PATH_HINT if exc.reason == NOT_A_PATH else "give a readable PEM file",
                file,
                TLSProblem.UNREADABLE,
            )
            failed = True
    if section.has("cert_file") != section.has("key_file"):
        present, absent = ("cert_file", "key_file")[:: 1 if section.has("cert_file") else -1]
        ctx.error(
            section.lines[present],
            section.child_key(present),
            f"{present} without {absent}",
            "mutual TLS needs both cert_file and key_file",
            section.files[present],
            TLSProblem.PAIR,
        )
        failed = True
    checks = (
        ("ca_file", b"-----BEGIN CERTIFICATE-----", "holds no PEM certificate"),
        ("cert_file", b"-----BEGIN CERTIFICATE-----", "holds no PEM certificate"),
        ("key_file", b"PRIVATE KEY-----", "holds no PEM private key"),
    )
    for name, marker, problem in checks:
        data = contents.get(name)
        if data is None:
            continue
        bad = problem if marker not in data else None
        if name == "key_file" and bad is None and b"ENCRYPTED" in data:
            bad = "holds an encrypted private key (no passphrase can be given)"
        if bad:
            ctx.error(
                section.lines[name],
                section.child_key(name),
                f"'{paths[name]}' {bad}",
                "write the PEM file ('-----BEGIN ...-----')",
                section.files[name],
                TLSProblem.NOT_PEM,
            )
            failed = True
    insecure: bool = section.value("insecure_skip_verify")
    if insecure:
        ctx.warn(
            section.lines["insecure_skip_verify"],
            section.child_key("insecure_skip_verify"),
            "insecure_skip_verify: true: the upstream's certificate and name are not "
            "verified, so anyone on the network path can impersonate it",
            "development only; to trust a private CA, set ca_file instead",
            section.files["insecure_skip_verify"],
            TLSProblem.INSECURE,
        )
    if failed:
        return INVALID
    digest = hashlib.sha256(
        b"\0".join(contents.get(n, b"") for n in ("ca_file", "cert_file", "key_file"))
    ).hexdigest()
    settings = UpstreamTLS(
        ca_file=paths.get("ca_file"),
        cert_file=paths.get("cert_file"),
        key_file=paths.get("key_file"),
        server_name=section.get("server_name"),
        insecure_skip_verify=insecure,
        digest=digest,
    )
    cached = _CONTEXTS.get(_key(settings))
    if cached is not None:
        return cached
    try:
        context = _context(settings, contents)
    except _ContextError as exc:
        ctx.error(
            section.lines[exc.key],
            section.child_key(exc.key),
            exc.message,
            exc.hint,
            section.files[exc.key],
            exc.reason,
        )
        return INVALID
    compiled = replace(settings, context=context)
    if len(_CONTEXTS) >= _MAX_CONTEXTS:
        _CONTEXTS.pop(next(iter(_CONTEXTS)))
    _CONTEXTS[_key(settings)] = compiled
    return compiled


def _key(settings: UpstreamTLS) -> tuple[Any, ...]:
    return (
        settings.ca_file,
        settings.cert_file,
        settings.key_file,
        settings.server_name,
        settings.insecure_skip_verify,
        settings.digest,
    )


class _ContextError(Exception):
    def __init__(self, key: str, message: str, hint: str, reason: TLSProblem) -> None:
        super().__init__(message)
        self.key, self.message, self.hint, self.reason = key, message, hint, reason


def _no_passphrase() -> bytes:
    raise ValueError("encrypted private key")


def default_context() -> ssl.SSLContext:
    """The context for an https upstream without upstream_tls: the system's trust store,
    TLS 1.2 at least, certificate and name verified."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def _context(settings: UpstreamTLS, contents: dict[str, bytes]) -> ssl.SSLContext:
    context = default_context()
    if settings.ca_file:
        try:
            context.load_verify_locations(cadata=contents["ca_file"].decode("latin-1"))
        except (ssl.SSLError, ValueError) as exc:
            raise _ContextError(
                "ca_file",
                f"'{settings.ca_file}' holds no valid PEM certificate ({_ssl_reason(exc)})",
                "write the CA certificate(s) in PEM",
                TLSProblem.NOT_PEM,
            ) from None
    if settings.cert_file and settings.key_file:
        try:
            load_cert_chain(context, contents["cert_file"], contents["key_file"], _no_passphrase)
        except (ssl.SSLError, ValueError, OSError) as exc:
            mismatch = "KEY_VALUES_MISMATCH" in str(exc) or "key values mismatch" in str(exc)
            if mismatch:
                raise _ContextError(
                    "key_file",
                    f"'{settings.key_file}' is not the key of '{settings.cert_file}'",
                    "give the private key that belongs to cert_file",
                    TLSProblem.KEY_MISMATCH,
                ) from None
            raise _ContextError(
                "cert_file",
                f"cannot load '{settings.cert_file}' with '{settings.key_file}' "
                f"({_ssl_reason(exc)})",
                "give a PEM certificate and its unencrypted PEM private key",
                TLSProblem.NOT_PEM,
            ) from None
    if settings.insecure_skip_verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def _ssl_reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return str(exc.reason).replace("_", " ").lower()
    return str(exc) or type(exc).__name__


def with_upstream_tls(
    upstream: Upstream | None, section: Section | None, ctx: Context
) -> Upstream | None:
    """`upstream` carrying the compiled `upstream_tls` of `section` (when it has one)."""
    if section is None:
        return upstream
    compiled = compile_upstream_tls(section, ctx)
    if isinstance(compiled, Invalid) or upstream is None:
        if upstream is None and not isinstance(compiled, Invalid):
            ctx.warn(
                section.line,
                section.key,
                "there is no upstream for these settings",
                "set upstream: https://...",
                reason=TLSProblem.UNUSED,
            )
        return upstream
    if upstream.scheme != "https":
        ctx.warn(
            section.line,
            section.key,
            f"the upstream {upstream} is not https: upstream_tls does nothing",
            "write the upstream as https://...",
            reason=TLSProblem.UNUSED,
        )
        return upstream
    return replace(upstream, tls=compiled)


def upstream_tls_of(upstream: Upstream | None) -> UpstreamTLS | None:
    tls = upstream.tls if upstream is not None else None
    return tls if isinstance(tls, UpstreamTLS) else None


def insecure_upstreams(upstreams: Iterator[Upstream | None]) -> list[str]:
    """The upstreams served with insecure_skip_verify, for the WARNING at start."""
    out: list[str] = []
    for upstream in upstreams:
        tls = upstream_tls_of(upstream)
        if tls is not None and tls.insecure_skip_verify and str(upstream) not in out:
            out.append(str(upstream))
    return out


def insecure_warnings(routes: RouteTable) -> list[str]:
    """One line per upstream served with insecure_skip_verify, logged as a WARNING when
    serving starts and at each reload."""
    every = (*routes.routes, *((routes.default,) if routes.default else ()))
    return [
        f"upstream {name}: insecure_skip_verify is on: its TLS certificate and name are not "
        "verified (insecure, development only)"
        for name in insecure_upstreams(iter(route.upstream for route in every))
    ]
