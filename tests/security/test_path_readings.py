"""Issue 11, "another reading of the path": a route is never decided on one reading of a
path while the upstream acts on another. Black-box: a real `corsproxy serve` process in
front of a recording upstream, fed raw bytes.

The config has a credentialed default policy, a lenient `/public` route (any origin, any
header) and `/internal` with `cors: false`. Every other spelling of `/internal` must either
be routed to `/internal` (no CORS headers at all) or refused with 400 `path_ambiguous`,
and never reach the upstream under the default policy.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from tests.net import Recorder, head_and_body, header_values, raw_exchange, running_app, start_cli

APP = "https://app.example.com"

INTERNAL = "internal"  # routed to /internal: forwarded as sent, no CORS headers
AMBIGUOUS = "ambiguous"  # 400 path_ambiguous, nothing forwarded
BAD_ENCODING = "bad_encoding"  # 400 path_bad_encoding, nothing forwarded

# Spellings of /internal that some upstream reads as /internal.
READINGS = [
    # Express, ASP.NET Core: routes are case-insensitive.
    ("/INTERNAL/secret", INTERNAL),
    ("/Internal/x", INTERNAL),
    ("/iNtErNaL", INTERNAL),
    ("/%69nternal/x", INTERNAL),  # an unreserved escape is decided decoded
    ("/%49NTERNAL/x", INTERNAL),
    # IIS, Windows: trailing dots and spaces of a segment are dropped.
    ("/internal./x", AMBIGUOUS),
    ("/INTERNAL./x", AMBIGUOUS),
    ("/internal%20/x", AMBIGUOUS),
    ("/internal.%20./x", AMBIGUOUS),
    ("/internal%2e/x", AMBIGUOUS),
    ("/internal..", AMBIGUOUS),
    # NTFS stream suffixes.
    ("/internal::$DATA/x", AMBIGUOUS),
    ("/internal:$DATA/x", AMBIGUOUS),
    ("/internal::$INDEX_ALLOCATION/x", AMBIGUOUS),
    ("/internal:$I30:$INDEX_ALLOCATION/x", AMBIGUOUS),
    ("/Internal::%24data/x", AMBIGUOUS),
    ("/internal.::$DATA/x", AMBIGUOUS),
    # 8.3 short names.
    ("/INTERN~1/x", AMBIGUOUS),
    ("/intern~1/x", AMBIGUOUS),
    # Upstreams that decode twice.
    ("/public%252f..%252finternal/x", AMBIGUOUS),
    ("/public/%252e%252e/internal/x", AMBIGUOUS),
    ("/public/%252E%252E/INTERNAL/x", AMBIGUOUS),
    ("/internal%252e/x", AMBIGUOUS),
    ("/public/%25252e%25252e/internal/x", "public"),  # a third decoding is not a reading
    # Dots-and-spaces segments that climb on Windows, and the older readings.
    ("/public/..%20/internal/x", AMBIGUOUS),
    ("/public/.%20./internal/x", AMBIGUOUS),
    ("/public/..%5C..%5Cinternal/x", AMBIGUOUS),
    ("/public%2F..%2Finternal/x", AMBIGUOUS),
    ("/public/..;/internal/x", AMBIGUOUS),
    ("/internal;x/y", AMBIGUOUS),
    # Non-ASCII readings of the letters (.NET folding, Windows best-fit).
    ("/%C4%B0nternal/x", AMBIGUOUS),  # U+0130, an i with a dot above
    ("/%EF%BD%89nternal/x", AMBIGUOUS),  # fullwidth i
    ("/%C4%B1nternal/x", AMBIGUOUS),  # dotless i, upper-cases to I
    # Java's String.trim() (Spring's AntPathMatcher, CVE-2016-5007) drops every character
    # up to U+0020 from both ends of a segment; .NET, Python and JavaScript trims Unicode
    # whitespace and U+FEFF, older .NET the zero-width ones.
    ("/internal%09/x", AMBIGUOUS),
    ("/internal%0b/x", AMBIGUOUS),
    ("/internal%0c/x", AMBIGUOUS),
    ("/internal%0d%0a/x", AMBIGUOUS),
    ("/internal%1f/x", AMBIGUOUS),
    ("/internal%7f/x", AMBIGUOUS),
    ("/%09internal/x", AMBIGUOUS),
    ("/%20internal/x", AMBIGUOUS),
    ("/%09/internal/x", AMBIGUOUS),  # an empty segment once trimmed
    ("/internal.%09/x", AMBIGUOUS),
    ("/internal%c2%a0/x", AMBIGUOUS),  # NBSP
    ("/internal%e3%80%80/x", AMBIGUOUS),  # ideographic space
    ("/internal%ef%bb%bf/x", AMBIGUOUS),  # BOM
    ("/%ef%bb%bfinternal/x", AMBIGUOUS),
    ("/internal%e2%80%8b/x", AMBIGUOUS),  # zero-width space
    ("/internal%2509/x", AMBIGUOUS),  # decoded twice, then trimmed
    # Decoded, then parsed again as a URL: '?' and '#' end the path; C and PHP stop at NUL.
    ("/internal%3F/x", AMBIGUOUS),
    ("/internal%3f", AMBIGUOUS),
    ("/internal%23/x", AMBIGUOUS),
    ("/internal%2500/x", AMBIGUOUS),
    ("/internal%253F/x", AMBIGUOUS),
    # Bytes that are not UTF-8 read as Latin-1 (Tomcat, Jetty): '%aa' is 'ª', which is 'a'.
    ("/intern%aal/x", AMBIGUOUS),
    ("/interna%c5%82/x", AMBIGUOUS),  # 'ł': Windows best fit reads it as 'l'
    # Windows best fit makes separators and dots of compatibility forms before the split.
    ("/public%ef%bc%8f..%ef%bc%8finternal/x", AMBIGUOUS),  # fullwidth '/'
    ("/public/%ef%bc%8e%ef%bc%8e/internal/x", AMBIGUOUS),  # fullwidth '.'
    ("/public/..%c2%a5internal/x", AMBIGUOUS),  # yen: '\' in cp932
    ("/internal%ef%bc%8fx", AMBIGUOUS),
    # Overlong UTF-8 (old IIS and Tomcat read %c0%ae as '.'): refused whatever the route.
    ("/%c1%a9nternal/x", BAD_ENCODING),
    ("/%c0%afinternal/x", BAD_ENCODING),
    ("/x/%c0%ae%c0%ae/internal/x", BAD_ENCODING),
    ("/x/%e0%80%ae%e0%80%ae/internal/x", BAD_ENCODING),
    ("/x/..%c1%9cinternal/x", BAD_ENCODING),
    ("/x/%25c0%25ae%25c0%25ae/internal/x", BAD_ENCODING),
    ("/x/%f0%80%80%ae%f0%80%80%ae/internal/x", BAD_ENCODING),
    # ASP.NET (System.Web) drops cookieless-session segments (CVE-2023-36899, -36560).
    ("/(S(x))/internal/x", AMBIGUOUS),
    ("/(A(abc))/internal/x", AMBIGUOUS),
    ("/(F(x))/internal/x", AMBIGUOUS),
    ("/(S(x)A(y))/INTERNAL/x", AMBIGUOUS),
    ("/%28S%28x%29%29/internal/x", AMBIGUOUS),
    ("/public/(S(x))/x", "public"),
    # Rails `(.:format)` and Spring suffix patterns: /internal.json is the /internal handler.
    ("/internal.json", AMBIGUOUS),
    ("/INTERNAL.json", AMBIGUOUS),
    ("/internal.xml", AMBIGUOUS),
    ("/internal/x.json", INTERNAL),
    ("/x/..%2finternal.json", AMBIGUOUS),
    # Climbing out of a stripped prefix: /v2/..%2fv1/x is /v1/x on nginx and IIS.
    ("/api/v1/..%2fv1/x", AMBIGUOUS),
    ("/api/v1/..%5cv1%5cx", AMBIGUOUS),
    ("/api/v1/%252e%252e%252fv1/x", AMBIGUOUS),
    # Not other readings of /internal: these stay where they are.
    ("/public/x%3Fy", "public"),  # cut at the '?': still /public
    ("/public/a%20b", "public"),
    ("/caf%c3%a9/x", "default"),  # valid UTF-8
    ("/k%f8benhavn", "default"),  # Latin-1, not overlong
    ("/public/x", "public"),
    ("/v1/items:batchGet", "default"),
    ("/internal:foo/x", "default"),  # a named stream, not the file itself
]


def config_text(upstream: str, **extra: Any) -> str:
    doc = {
        "listen": "127.0.0.1:0",
        "upstream": upstream,
        "cors": {"allow_origins": [APP], "allow_credentials": True, "allow_headers": "*"},
        "routes": [
            {"path_prefix": "/internal", "cors": False},
            {
                "path_prefix": "/public",
                "cors": {"allow_origins": ["*"], "allow_credentials": False, "allow_headers": "*"},
            },
            {"path_prefix": "/api/v1", "upstream": f"{upstream}/v2", "strip_prefix": True},
        ],
        **extra,
    }
    return json.dumps(doc)  # JSON is YAML


@contextlib.asynccontextmanager
async def proxy(tmp_path: Path, **extra: Any) -> AsyncIterator[tuple[str, Recorder]]:
    upstream = Recorder()
    async with running_app(upstream.app()) as upstream_url:
        path = tmp_path / "corsproxy.yaml"
        path.write_text(config_text(upstream_url, **extra))
        proc, url = await asyncio.to_thread(start_cli, "--config", str(path))
        try:
            yield url, upstream
        finally:
            proc.send_signal(signal.SIGTERM)
            await asyncio.to_thread(proc.wait, 10)
            assert proc.stdout is not None and proc.stderr is not None
            proc.stdout.close()
            proc.stderr.close()


async def get(url: str, target: str, *fields: str) -> tuple[int, list[str], bytes]:
    head = f"GET {target} HTTP/1.1\r\nHost: p\r\nOrigin: {APP}\r\nConnection: close\r\n"
    data = (head + "".join(f"{f}\r\n" for f in fields) + "\r\n").encode("latin-1")
    lines, body = head_and_body(await raw_exchange(url, data, wait=5))
    status = int(lines[0].split()[1]) if lines[0].startswith("HTTP/1.") else 0
    return status, lines, body


def outcome(status: int, lines: list[str], body: bytes, seen: list[dict[str, Any]]) -> str:
    """What happened, in the table's words; anything else is spelled out."""
    acao = header_values(lines, "Access-Control-Allow-Origin")
    acac = header_values(lines, "Access-Control-Allow-Credentials")
    # The 400 is corsproxy's own fixed text: like every answer it writes, it carries the
    # default policy's CORS headers for an allowed origin (nothing of the upstream's is in it).
    if status == 400 and not seen and b"(path_ambiguous)" in body and acao in ([], [APP]):
        return AMBIGUOUS
    if status == 400 and not seen and b"(path_bad_encoding)" in body and acao in ([], [APP]):
        return BAD_ENCODING
    if status == 200 and len(seen) == 1:
        if not acao and not acac:
            return INTERNAL
        if acao == ["*"] and not acac:
            return "public"
        if acao == [APP] and acac == ["true"]:
            return "default"
    return f"{status} {acao} {acac} forwarded={[s['raw_path'] for s in seen]} {body[:120]!r}"


async def test_every_reading_of_a_cors_false_route_is_that_route_or_refused(
    tmp_path: Path,
) -> None:
    wrong: list[str] = []
    async with proxy(tmp_path) as (url, upstream):
        for target, expected in READINGS:
            before = len(upstream.seen)
            status, lines, body = await get(url, target)
            seen = upstream.seen[before:]
            got = outcome(status, lines, body, seen)
            if got != expected:
                wrong.append(f"{target}: expected {expected}, got {got}")
            elif seen and seen[0]["raw_path"] != target:
                wrong.append(f"{target}: forwarded as {seen[0]['raw_path']}")
    assert not wrong, "\n".join(wrong)


async def test_routes_case_sensitive_opts_out_of_case_folding_only(tmp_path: Path) -> None:
    async with proxy(tmp_path, routes_case_sensitive=True) as (url, upstream):
        results = {}
        for target in ("/INTERNAL/secret", "/internal/x", "/internal./x", "/INTERNAL./x"):
            before = len(upstream.seen)
            status, lines, body = await get(url, target)
            results[target] = outcome(status, lines, body, upstream.seen[before:])
    assert results == {
        # The upstream is case-sensitive: /INTERNAL is another resource, the default's.
        "/INTERNAL/secret": "default",
        "/internal/x": INTERNAL,
        "/internal./x": AMBIGUOUS,
        "/INTERNAL./x": "default",  # even IIS' reading is /INTERNAL, not /internal
    }


async def test_a_stripped_prefix_forwards_paths_that_stay_below_the_base(tmp_path: Path) -> None:
    async with proxy(tmp_path) as (url, upstream):
        forwarded = []
        for target in ("/api/v1/x", "/api/v1/a%2fb", "/api/v1/x/..%2fy"):
            status, _, body = await get(url, target)
            assert status == 200, (target, body)
            forwarded.append(upstream.seen[-1]["raw_path"])
    assert forwarded == ["/v2/x", "/v2/a%2fb", "/v2/x/..%2fy"]


# Headers some upstreams read as the real path (see forwarding.PATH_OVERRIDES).
PATH_HEADERS = [
    "X-Original-URL",
    "X-Rewrite-URL",
    "X-Original-URI",
    "X-Forwarded-URI",
    "X-Forwarded-Prefix",
    "X-Forwarded-Path",
    "X-Envoy-Original-Path",
    "X-Override-URL",
    "X-HTTP-DestinationURL",
    "X-Proxy-URL",
    "X-Request-URI",
    "X-Script-Name",
    "X-Forwarded-Script-Name",
    "X-Traversal-Path",
    "X-Ingress-Path",
    "X-Forwarded-Context",
    "X-ProxyContextPath",
    "SCRIPT_NAME",  # gunicorn; dropped with every name holding '_'
]


async def test_headers_read_as_the_path_never_reach_the_upstream(tmp_path: Path) -> None:
    fields = [f"{name}: /internal/secret" for name in PATH_HEADERS]
    fields += ["x-original-url: /internal/lower", "X-Custom: kept"]
    async with proxy(tmp_path) as (url, upstream):
        status, lines, _ = await get(url, "/public/x", *fields)
        assert status == 200
        assert header_values(lines, "Access-Control-Allow-Origin") == ["*"]
        names = [name.lower() for name, _ in upstream.seen[-1]["headers"]]
    assert "x-custom" in names
    assert [n for n in names if n in {h.lower() for h in PATH_HEADERS}] == []


async def test_fragments_are_refused_and_an_empty_query_is_forwarded_as_sent(
    tmp_path: Path,
) -> None:
    async with proxy(tmp_path) as (url, upstream):
        for target in ("/public/x#frag", "/public/x?a=1#frag", "/public/x?#", "/#"):
            before = len(upstream.seen)
            status, _, body = await get(url, target)
            assert (status, len(upstream.seen)) == (400, before), (target, body)
            assert b"(path_fragment)" in body
        forwarded = []
        for target in ("/public/x?", "/public/x", "/public/x??", "/public/x?a=1&"):
            status, _, _ = await get(url, target)
            assert status == 200, target
            forwarded.append(upstream.seen[-1]["raw_path"])
    assert forwarded == ["/public/x?", "/public/x", "/public/x??", "/public/x?a=1&"]
