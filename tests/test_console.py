"""The CORS console on the admin listener and `corsproxy suggest`.

Unit tests of the ring of refusals and of the suggestion; then a real `corsproxy serve`
process: the page and its JSON API, refusals and would-refuse answers appearing, the
ring's bounds under a spray of origins, read-only, and never on the main listener.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from multidict import MultiDict

from corsproxy.ops import refusals as ring_module
from corsproxy.ops.console import CSP, host_allowed, parse_explain_query
from corsproxy.ops.refusals import MAX_ORIGIN_CHARS, RefusalRing
from corsproxy.ops.suggest import (
    Base,
    LogStats,
    Observation,
    observations_from_log,
    render_yaml,
    suggest,
)
from corsproxy.policy.cors import Reason, ReasonCode
from tests.net import ROOT, Recorder, free_port, start_cli

APP = "https://app.example"
HOSTILE = 'https://x.example"><img src=x onerror=window.__pwned=1>'

# --- the ring ------------------------------------------------------------------------


def test_ring_dedupes_by_origin_route_and_reasons() -> None:
    ring = RefusalRing(size=10)
    reasons = (Reason(ReasonCode.ORIGIN_NOT_ALLOWED),)
    for _ in range(3):
        ring.record("https://a.example", "api", reasons, "refused", "actual")
    ring.record("https://a.example", "other", reasons, "would_refuse", "actual")
    ring.record("https://b.example", "api", reasons, "refused", "actual")
    entries = ring.latest()
    assert [(e.origin, e.route, e.count) for e in entries] == [
        ("https://b.example", "api", 1),
        ("https://a.example", "other", 1),
        ("https://a.example", "api", 3),
    ]
    assert entries[1].verdict == "would_refuse"
    assert ring.total == 5 and ring.evicted == 0
    # Seen again: it becomes the latest.
    ring.record("https://a.example", "api", reasons, "refused", "actual")
    assert ring.latest()[0].count == 4


def test_ring_is_bounded_in_entries_origin_length_and_reasons() -> None:
    ring = RefusalRing(size=50)
    for i in range(10_000):
        ring.record(f"https://{i}.{'x' * 5000}.example", "api", ("origin_not_allowed",), "r", "a")
    assert len(ring) == 50 and ring.total == 10_000 and ring.evicted == 9_950
    latest = ring.latest()
    assert all(len(e.origin) <= MAX_ORIGIN_CHARS + 1 and e.truncated for e in latest)
    assert latest[0].origin.startswith("https://9999.")  # the least recently seen went
    many = [f"header_not_allowed:{'h' * 1000}{i}" for i in range(100)]
    ring.record(APP, "api", many, "refused", "preflight")
    kept = ring.latest()[0].reasons
    assert len(kept) == ring_module.MAX_REASONS + 1  # and a line saying how many more
    assert all(len(r) <= ring_module.MAX_REASON_CHARS + 1 for r in kept[:-1])
    assert kept[-1] == "and 92 more"


# --- the suggestion --------------------------------------------------------------------


def test_suggest_is_the_tightest_list_that_allows_what_was_seen() -> None:
    seen = [
        Observation("api", APP, method="GET"),
        Observation("api", APP, request_method="PUT", request_headers=("x-token",)),
        Observation("api", "https://other.example:8443", refused=True, method="DELETE"),
        Observation("api", "HTTPS://Upper.Example:443", method="GET"),  # no browser sends it
        Observation("api", "https://x.example/", refused=True),  # malformed: a trailing slash
        Observation("api", "null", refused=True),
        Observation("api", APP, request_method="get", request_headers=("content-type",)),
        Observation("api", APP, request_method="TRACE"),
        Observation("web", "https://web.example", refused=True, reasons=("origin_not_allowed",)),
    ]
    [api, web] = suggest(seen)
    assert api.allow_origins() == [APP, "https://other.example:8443"]
    # Safelisted methods and headers never need listing; TRACE is never allowed.
    assert api.allow_methods() == ["DELETE", "PUT"]
    assert api.allow_headers() == ["x-token"]
    assert sorted(api.not_suggested) == ["HTTPS://Upper.Example:443", "https://x.example/", "null"]
    assert api.requests == 8 and api.refusals == 3
    assert web.allow_origins() == ["https://web.example"] and web.allow_methods() == []


def test_suggest_on_a_base_adds_what_refusals_needed() -> None:
    base = Base(origins=(APP,), methods=("GET", "HEAD", "POST"), headers=("x-a",))
    seen = [
        Observation("api", "https://new.example", refused=True, reasons=("origin_not_allowed",)),
        Observation(
            "api",
            APP,
            refused=True,
            reasons=("method_not_allowed:PATCH", "header_not_allowed:x-b"),
        ),
    ]
    [api] = suggest(seen, {"api": base})
    assert api.allow_origins() == [APP, "https://new.example"]
    assert api.allow_methods() == ["GET", "HEAD", "POST", "PATCH"]
    assert api.allow_headers() == ["x-a", "x-b"]
    # Any origin allowed already: nothing to add.
    [star] = suggest(seen, {"api": Base(origins=("*",), any_origin=True)})
    assert star.allow_origins() == ["*"]


def test_the_yaml_is_valid_and_escapes_what_clients_chose() -> None:
    seen = [
        Observation("api", APP, request_method="PUT"),
        Observation("api", HOSTILE + "\nroutes: []", refused=True),
        Observation("a\nb: c", "https://z.example"),
    ]
    text = render_yaml(suggest(seen), ["header"])
    documents = [d for d in yaml.safe_load_all(text) if d is not None]
    assert {"cors": {"allow_origins": [APP], "allow_methods": ["PUT"]}} in documents
    assert {"cors": {"allow_origins": ["https://z.example"]}} in documents
    assert len(documents) == 2  # the hostile origin and route name stay in comments
    assert "\nroutes: []" not in text and "\nb: c" not in text
    assert '"https://x.example\\"><img src=x onerror=window.__pwned=1>\\nroutes: []"' in text


def test_observations_from_a_json_log_tolerate_other_lines() -> None:
    lines = [
        "not json",
        json.dumps({"message": "corsproxy listening on http://127.0.0.1:1"}),
        json.dumps({"route": "api", "origin": "", "cors": "none", "method": "GET"}),
        json.dumps({"route": "api", "origin": APP, "cors": "allowed", "method": "PUT"}),
        json.dumps(
            {
                "route": "api",
                "origin": APP,
                "cors": "allowed",
                "method": "OPTIONS",
                "request_method": "PATCH",
                "request_headers": "X-A, x-b",
            }
        ),
        json.dumps(
            {
                "route": "api",
                "origin": APP,
                "cors": "refused",
                "method": "OPTIONS",
                "reason": "method_not_allowed:DELETE",
            }
        ),
        json.dumps({"route": "api", "origin": APP, "cors": "allowed", "request_headers": ["x-c"]}),
        "x" * 100_000,
    ]
    stats = LogStats()
    [api] = suggest(observations_from_log(lines, stats))
    assert api.allow_methods() == ["DELETE", "PATCH", "PUT"]
    assert api.allow_headers() == ["x-a", "x-b", "x-c"]
    assert (stats.lines, stats.used, stats.skipped) == (8, 4, 3)


def test_explain_query_is_checked_and_bounded() -> None:
    ok = parse_explain_query(
        MultiDict(origin=APP, method="PUT", path="x", header="X-A: 1\nX-B", credentials="1")
    )
    assert not isinstance(ok, str)
    assert ok.path == "x" and ok.headers == (("X-A", "1"), ("X-B", "")) and ok.credentials
    assert isinstance(parse_explain_query(MultiDict(method="GET")), str)
    # Passed as typed (explain says fetch() refuses it), as `corsproxy explain -X` does.
    spaced = parse_explain_query(MultiDict(origin=f" {APP}", method="P UT", path="/a b"))
    assert not isinstance(spaced, str)
    assert (spaced.origin, spaced.method, spaced.path) == (f" {APP}", "P UT", "/a b")
    assert isinstance(parse_explain_query(MultiDict(origin=APP, method="P" * 65)), str)
    assert isinstance(parse_explain_query(MultiDict(origin="x" * 5000)), str)
    assert isinstance(parse_explain_query(MultiDict(origin=APP, header="bad name: 1")), str)
    lines = "\n".join(f"X-{i}: 1" for i in range(100))
    assert isinstance(parse_explain_query(MultiDict(origin=APP, header=lines)), str)


# --- a real process ---------------------------------------------------------------------


CONFIG = """
listen: 127.0.0.1:{listen}
upstream: {upstream}
admin: {{listen: 127.0.0.1:{admin}}}
cors:
  allow_origins: ["{app}"]
  allow_methods: [GET, PUT]
  on_disallowed: reject
routes:
  - path_prefix: /report
    name: report
    cors: {{allow_origins: ["{app}"], mode: report-only}}
"""


class Proxy:
    def __init__(self, config: Path, *extra: str) -> None:
        self.config = config
        self.admin_port = int(yaml.safe_load(config.read_text())["admin"]["listen"].split(":")[1])
        self.proc, self.url = start_cli("--config", str(config), *extra)
        self.admin = f"http://127.0.0.1:{self.admin_port}"

    def stop(self) -> str:
        self.proc.send_signal(signal.SIGTERM)
        _, err = self.proc.communicate(timeout=15)
        return err


@pytest.fixture
def proxy(tmp_path: Path, recorder: Recorder) -> Iterator[Proxy]:
    config = tmp_path / "c.yaml"
    config.write_text(
        CONFIG.format(listen=free_port(), upstream=recorder.url, admin=free_port(), app=APP)
    )
    running = Proxy(config)
    yield running
    running.stop()


async def _get_json(client: aiohttp.ClientSession, url: str) -> Any:
    async with client.get(url) as r:
        assert r.status == 200, await r.text()
        assert r.content_type == "application/json"
        assert r.headers["X-Content-Type-Options"] == "nosniff"
        return await r.json()


async def test_the_page_and_its_files_are_served_with_a_strict_policy(proxy: Proxy) -> None:
    async with aiohttp.ClientSession() as client:
        async with client.get(f"{proxy.admin}/") as r:
            assert r.status == 200 and r.content_type == "text/html"
            page = await r.text()
            csp = r.headers["Content-Security-Policy"]
            assert "default-src 'self'" in csp and "unsafe" not in csp and csp == CSP
            assert r.headers["X-Content-Type-Options"] == "nosniff"
        assert '<script src="/console/app.js"' in page
        assert "<script>" not in page and " on" + "submit=" not in page  # no inline script
        for path, kind in (("/console/app.js", "text/javascript"), ("/console/console.css",
                                                                    "text/css")):  # fmt: skip
            async with client.get(f"{proxy.admin}{path}") as r:
                assert r.status == 200 and r.content_type == kind
                assert r.headers["Content-Security-Policy"] == CSP
        script = (ROOT / "corsproxy/ops/console_static/app.js").read_text()
        assert "innerHTML" not in script and "insertAdjacentHTML" not in script
        async with client.get(f"{proxy.admin}/console/nothing") as r:
            assert r.status == 404


async def test_the_console_is_read_only(proxy: Proxy) -> None:
    async with aiohttp.ClientSession() as client:
        for path in ("/", "/console/api/policy", "/console/api/refusals", "/console/api/explain"):
            for method in ("POST", "PUT", "DELETE", "PATCH"):
                async with client.request(method, f"{proxy.admin}{path}") as r:
                    assert r.status == 405, (method, path)


async def test_the_console_is_not_served_on_the_main_listener(
    proxy: Proxy, recorder: Recorder
) -> None:
    async with aiohttp.ClientSession() as client:
        async with client.get(f"{proxy.url}/console/api/policy") as r:
            assert "routes" not in await r.text()  # the upstream's answer
        async with client.get(f"{proxy.url}/") as r:
            assert "corsproxy console" not in await r.text()
    assert [s["raw_path"] for s in recorder.seen] == ["/console/api/policy", "/"]


async def test_policy_shows_every_route_and_follows_a_reload(proxy: Proxy) -> None:
    async with aiohttp.ClientSession() as client:
        data = await _get_json(client, f"{proxy.admin}/console/api/policy")
        routes = {r["name"]: r for r in data["routes"]}
        assert set(routes) == {"report", "default"}
        assert routes["default"]["cors"]["allow_origins"] == [APP]
        assert routes["default"]["cors"]["allow_methods"] == ["GET", "PUT"]
        assert routes["report"]["cors"]["mode"] == "report-only"
        assert routes["report"]["path_prefix"] == "/report"
        assert data["source"] == str(proxy.config) and data["pid"] == proxy.proc.pid
        proxy.config.write_text(proxy.config.read_text().replace("[GET, PUT]", "[GET, PATCH]"))
        proxy.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            data = await _get_json(client, f"{proxy.admin}/console/api/policy")
            methods = next(r for r in data["routes"] if r["name"] == "default")["cors"]
            if methods["allow_methods"] == ["GET", "PATCH"]:
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError(f"the reload never showed: {data}")


async def test_refusals_and_would_refuse_answers_appear(proxy: Proxy) -> None:
    async with aiohttp.ClientSession() as client:
        data = await _get_json(client, f"{proxy.admin}/console/api/refusals")
        assert data["entries"] == [] and data["capacity"] == ring_module.MAX_ENTRIES
        await (await client.get(f"{proxy.url}/x", headers={"Origin": APP})).read()  # allowed
        for _ in range(3):
            async with client.get(
                f"{proxy.url}/x", headers={"Origin": "https://evil.example"}
            ) as r:
                assert r.status == 403
        preflight = {"Origin": APP, "Access-Control-Request-Method": "DELETE",
                     "Access-Control-Request-Headers": "x-token"}  # fmt: skip
        async with client.options(f"{proxy.url}/x", headers=preflight) as r:
            assert r.status == 403
        async with client.get(f"{proxy.url}/report/y", headers={"Origin": HOSTILE}) as r:
            assert r.status == 200  # report-only: forwarded as it came
        async with client.get(f"{proxy.url}/x", headers={"Origin": "https://x.example/"}) as r:
            assert r.status == 403  # a malformed origin
        data = await _get_json(client, f"{proxy.admin}/console/api/refusals")
        seen = {(e["origin"], e["route"], tuple(e["reasons"])): e for e in data["entries"]}
        assert seen[("https://evil.example", "default", ("origin_not_allowed",))]["count"] == 3
        assert seen[("https://evil.example", "default", ("origin_not_allowed",))]["kind"] == (
            "actual"
        )
        entry = seen[(APP, "default", ("method_not_allowed:DELETE", "header_not_allowed:x-token"))]
        assert entry["kind"] == "preflight" and entry["verdict"] == "refused"
        assert seen[(HOSTILE, "report", ("origin_not_allowed",))]["verdict"] == "would_refuse"
        assert seen[("https://x.example/", "default", ("origin_not_allowed",))]["malformed"]
        assert seen[(HOSTILE, "report", ("origin_not_allowed",))]["malformed"]
        assert not seen[("https://evil.example", "default", ("origin_not_allowed",))]["malformed"]
        assert data["total"] == 6 and len(seen) == 4  # the allowed request is not recorded

        suggestion = await _get_json(client, f"{proxy.admin}/console/api/suggest")
        routes = {r["route"]: r for r in suggestion["routes"]}
        assert routes["default"]["allow_origins"] == [APP, "https://evil.example"]
        assert routes["default"]["allow_methods"] == ["GET", "PUT", "DELETE"]
        assert routes["default"]["allow_headers"] == ["x-token"]
        assert routes["default"]["not_suggested"] == ["https://x.example/"]
        assert routes["report"]["allow_origins"] == [APP] and HOSTILE in str(routes["report"])
        docs = [d for d in yaml.safe_load_all(suggestion["yaml"]) if d]
        assert {"cors": {"allow_origins": [APP, "https://evil.example"],
                         "allow_methods": ["GET", "PUT", "DELETE"],
                         "allow_headers": ["x-token"]}} in docs  # fmt: skip


async def test_the_ring_stays_bounded_under_ten_thousand_origins(proxy: Proxy) -> None:
    connector = aiohttp.TCPConnector(limit=8)
    async with aiohttp.ClientSession(connector=connector) as client:

        async def spray(start: int) -> None:
            for i in range(start, 10_000, 8):
                origin = f"https://{i}-{'a' * 60}.{'b' * 60}.{'c' * 60}.{'d' * 60}.{'e' * 60}.x"
                async with client.get(f"{proxy.url}/x", headers={"Origin": origin}) as r:
                    assert r.status == 403

        await asyncio.wait_for(asyncio.gather(*(spray(s) for s in range(8))), 240)
        data = await _get_json(client, f"{proxy.admin}/console/api/refusals")
    assert data["total"] == 10_000
    assert len(data["entries"]) == ring_module.MAX_ENTRIES
    assert data["evicted"] == 10_000 - ring_module.MAX_ENTRIES
    assert all(len(e["origin"]) <= MAX_ORIGIN_CHARS + 1 for e in data["entries"])
    assert all(e["truncated"] for e in data["entries"])


async def test_the_form_explains_as_corsproxy_explain_does(proxy: Proxy) -> None:
    query = {"origin": "https://evil.example", "method": "PUT", "path": "/x",
             "header": "X-Token: 1"}  # fmt: skip
    async with aiohttp.ClientSession() as client:
        data = await _get_json(client, f"{proxy.admin}/console/api/explain?" + _qs(query))
        async with client.get(f"{proxy.admin}/console/api/explain?origin=") as r:
            assert r.status == 400 and "origin is required" in (await r.json())["error"]
    cli = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "corsproxy", "explain", "--config", str(proxy.config),
         "--origin", "https://evil.example", "-X", "PUT", "--path", "/x", "-H", "X-Token: 1"],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )  # fmt: skip
    assert cli.returncode == 1, cli.stderr
    assert data["verdict"] == "blocked" and data["reason"] == "origin_not_allowed"
    assert data["text"] == cli.stdout
    json_cli = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "corsproxy", "explain", "--config", str(proxy.config),
         "--origin", "https://evil.example", "-X", "PUT", "--path", "/x", "-H", "X-Token: 1",
         "--format", "json"],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )  # fmt: skip
    assert {k: v for k, v in data.items() if k != "text"} == json.loads(json_cli.stdout)


def _qs(query: dict[str, str]) -> str:
    from urllib.parse import urlencode

    return urlencode(query)


# --- corsproxy suggest -------------------------------------------------------------------


def _access(route: str, origin: str, cors: str, method: str = "GET", **extra: Any) -> str:
    return json.dumps(
        {"time": "2026-01-01T00:00:00.000Z", "level": "info", "logger": "corsproxy.access",
         "message": f"{method} /x 200", "method": method, "route": route, "origin": origin,
         "cors": cors, "reason": "", **extra}
    )  # fmt: skip


SAMPLE_LOG = "\n".join(
    [
        json.dumps({"level": "info", "message": "corsproxy listening on http://127.0.0.1:8080"}),
        _access("default", APP, "allowed"),
        _access(
            "default",
            APP,
            "allowed",
            "OPTIONS",
            request_method="PUT",
            request_headers="authorization,x-request-id",
        ),
        _access("default", "https://admin.example", "refused", reason="origin_not_allowed"),
        _access("default", "https://bad.example/", "refused"),
        _access("/api", "http://localhost:3000", "would_refuse", "DELETE"),
        _access("/api", "", "none"),
        "garbage",
    ]
)


def _suggest(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "corsproxy", "suggest", *args],
        input=stdin, capture_output=True, text=True, timeout=60, cwd=ROOT,
    )  # fmt: skip


def test_suggest_prints_cors_blocks_from_a_log_file(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    log.write_text(SAMPLE_LOG)
    result = _suggest(str(log))
    assert result.returncode == 0, result.stderr
    docs = [d for d in yaml.safe_load_all(result.stdout) if d]
    assert docs == [
        {"cors": {"allow_origins": ["http://localhost:3000"], "allow_methods": ["DELETE"]}},
        {
            "cors": {
                "allow_origins": ["https://admin.example", APP],
                "allow_methods": ["PUT"],
                "allow_headers": ["authorization", "x-request-id"],
            }
        },
    ]
    assert "5 request(s) with an Origin on a route" in result.stdout
    assert '#   "https://bad.example/"' in result.stdout  # listed, never suggested
    # Each block is a cors: block corsproxy accepts.
    for doc in docs:
        config = tmp_path / "suggested.yaml"
        config.write_text(yaml.safe_dump({"upstream": "http://127.0.0.1:1", **doc}))
        check = subprocess.run(
            [sys.executable, "-m", "corsproxy", "check", "--strict", "--config", str(config)],
            capture_output=True, text=True, timeout=60, cwd=ROOT,
        )  # fmt: skip
        assert check.returncode == 0, check.stdout + check.stderr


def test_suggest_reads_standard_input_and_says_when_a_file_is_missing(tmp_path: Path) -> None:
    from_stdin = _suggest("-", stdin=SAMPLE_LOG)
    assert from_stdin.returncode == 0, from_stdin.stderr
    assert "from standard input" in from_stdin.stdout
    assert from_stdin.stdout.split("\n", 2)[2] == _suggest_file(tmp_path).split("\n", 2)[2]
    missing = _suggest(str(tmp_path / "nope.log"))
    assert missing.returncode == 2 and "nope.log" in missing.stderr
    assert "Traceback" not in missing.stderr


def test_suggest_on_a_text_log_says_it_needs_json(tmp_path: Path) -> None:
    """A text-format log has no JSON line: not "Nothing seen" with exit 0, but a hint."""
    log = tmp_path / "text.log"
    log.write_text(
        "2026-11-30 07:00:00 INFO corsproxy listening on 127.0.0.1:8080\n"
        "2026-11-30 07:00:01 INFO GET /api/x 200 origin=https://app.example.com\n"
    )
    result = _suggest(str(log))
    assert result.returncode == 1, result.stdout
    assert "no JSON lines" in result.stderr and "--log-format json" in result.stderr
    assert "Nothing seen" not in result.stdout
    empty = tmp_path / "empty.log"  # nothing logged yet: nothing seen, no complaint
    empty.write_text("")
    assert _suggest(str(empty)).returncode == 0


def _suggest_file(tmp_path: Path) -> str:
    log = tmp_path / "again.log"
    log.write_text(SAMPLE_LOG)
    return _suggest(str(log)).stdout


# --- found by the outside review ---------------------------------------------------------


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "corsproxy", *args],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )  # fmt: skip


async def _preflight(client: aiohttp.ClientSession, url: str, method: str, headers: str) -> int:
    asked = {"Origin": APP, "Access-Control-Request-Method": method}
    if headers:
        asked["Access-Control-Request-Headers"] = headers
    async with client.options(url, headers=asked) as r:
        await r.read()
        return r.status


async def test_star_and_unparsable_methods_are_never_suggested(proxy: Proxy) -> None:
    # A page can fetch(url, {method: '*', headers: {'*': ...}}): its preflight asks for `*`.
    async with aiohttp.ClientSession() as client:
        assert await _preflight(client, f"{proxy.url}/x", "*", "*") == 403
        assert await _preflight(client, f"{proxy.url}/x", "GET", "x-ok,*") == 403
        # Chromium sends a custom method as written; corsproxy's parser reads only PATCH.
        assert await _preflight(client, f"{proxy.url}/x", "patch", "") == 403
        assert await _preflight(client, f"{proxy.url}/x", "PROPFIND", "") == 403
        data = await _get_json(client, f"{proxy.admin}/console/api/suggest")
    [default] = [r for r in data["routes"] if r["route"] == "default"]
    assert default["allow_methods"] == ["GET", "PUT", "PROPFIND"]
    assert default["allow_headers"] == ["x-ok"]
    assert default["unparsable_methods"] == ["patch"]
    assert '"*"' not in data["yaml"]
    assert 'method "patch"' in data["yaml"] and 'upper case ("PATCH")' in data["yaml"]
    # What is suggested, `check` accepts.
    [block] = [d for d in yaml.safe_load_all(data["yaml"]) if d and "x-ok" in str(d)]
    config = proxy.config.parent / "suggested.yaml"
    config.write_text(yaml.safe_dump({"upstream": "http://127.0.0.1:1", **block}))
    check = _run("check", "--config", str(config))
    assert check.returncode == 0, check.stdout + check.stderr


def test_suggest_from_a_log_never_lists_star_nor_an_unparsable_method(tmp_path: Path) -> None:
    log = "\n".join(
        [
            _access("default", APP, "refused", "OPTIONS", request_method="*",
                    request_headers="*", reason="method_not_allowed:*,header_not_allowed:*"),
            _access("default", APP, "refused", "OPTIONS", request_method="patch"),
            _access("default", APP, "refused", "OPTIONS", request_method="FOOBAR"),
            _access("default", APP, "refused", "OPTIONS", request_method="PROPFIND",
                    request_headers="depth"),
        ]
    )  # fmt: skip
    result = _suggest("-", stdin=log)
    assert result.returncode == 0, result.stderr
    [doc] = [d for d in yaml.safe_load_all(result.stdout) if d]
    assert doc == {
        "cors": {"allow_origins": [APP], "allow_methods": ["PROPFIND"], "allow_headers": ["depth"]}
    }
    assert 'method "patch"' in result.stdout and '("PATCH")' in result.stdout
    assert 'method "FOOBAR"' in result.stdout


STAR_CONFIG = """
listen: 127.0.0.1:{listen}
upstream: {upstream}
cors:
  allow_origins: ["{app}"]
  allow_methods: {methods}
  allow_headers: {headers}
  expose_headers: {expose}
"""


async def test_star_among_names_is_refused_and_star_alone_agrees_with_explain(
    tmp_path: Path, recorder: Recorder
) -> None:
    config = tmp_path / "star.yaml"
    mixed = {"methods": '["GET", "DELETE", "*"]', "headers": '[x-a, "*"]', "expose": '["*", x-b]'}
    config.write_text(STAR_CONFIG.format(listen=free_port(), upstream=recorder.url, app=APP,
                                         **mixed))  # fmt: skip
    check = _run("check", "--config", str(config))
    assert check.returncode == 2, check.stdout + check.stderr
    message = '`*` means any: write ["*"] alone, or list the names'
    for line, key in ((6, "allow_methods[2]"), (7, "allow_headers[1]"), (8, "expose_headers[0]")):
        assert f"{config}:{line}: cors.{key}: {message}" in check.stderr, check.stderr
    serve = _run("serve", "--config", str(config))  # refuses to start
    assert serve.returncode == 2 and "`*` means any" in serve.stderr, serve.stderr
    # ["*"] alone: any method; the proxy and explain agree on a method nobody listed.
    alone = {"methods": '["*"]', "headers": '["*"]', "expose": "[x-b]"}
    config.write_text(STAR_CONFIG.format(listen=free_port(), upstream=recorder.url, app=APP,
                                         **alone))  # fmt: skip
    proc, url = start_cli("--config", str(config))
    try:
        async with aiohttp.ClientSession() as client:
            asked = {"Origin": APP, "Access-Control-Request-Method": "PROPFIND",
                     "Access-Control-Request-Headers": "depth"}  # fmt: skip
            async with client.options(f"{url}/x", headers=asked) as r:
                assert r.status == 204
                assert r.headers["Access-Control-Allow-Methods"] == "PROPFIND"
    finally:
        proc.terminate()
        proc.communicate(timeout=15)
    explained = _run("explain", "--config", str(config), "--origin", APP, "-X", "PROPFIND",
                     "--path", "/x", "-H", "Depth: 1")  # fmt: skip
    assert explained.returncode == 0, explained.stdout + explained.stderr
    assert "VERDICT: ALLOWED" in explained.stdout


def test_route_names_are_unique_and_default_is_reserved(tmp_path: Path) -> None:
    config = tmp_path / "names.yaml"
    config.write_text(
        "upstream: http://127.0.0.1:1\n"
        "cors: {allow_origins: ['https://app.example']}\n"
        "routes:\n"
        "  - {path_prefix: /a, name: default}\n"
        "  - {path_prefix: /b, name: x}\n"
        "  - {path_prefix: /c, name: x}\n"
        "  - {path_prefix: /d}\n"
        "  - {path_prefix: /e, name: /d}\n"
        "  - {path_prefix: /f, name: f}\n"
    )
    check = _run("check", "--config", str(config))
    assert check.returncode == 2
    errors = check.stderr.splitlines()
    assert errors == [
        f"{config}:4: routes[0].name: the route name 'default' is reserved: it names the "
        "top-level policy (give this route another name)",
        f"{config}:6: routes[2].name: the route name 'x' is already the name of the route on "
        "line 5 (give each route its own name: logs, metrics and the console tell routes apart "
        "by it)",
        f"{config}:8: routes[4].name: the route name '/d' is already the name of the route on "
        "line 7 (an unnamed route is named by its path_prefix) (give each route its own name: "
        "logs, metrics and the console tell routes apart by it)",
        f"{config}: 3 errors",
    ], check.stderr


def test_route_names_that_logs_and_metrics_cannot_tell_apart_are_refused(
    tmp_path: Path,
) -> None:
    """Empty (no route= field in text logs, `suggest` drops it), `-` (reads as no route),
    invisible or bidi characters (printed raw in metrics and `config`), spaces at either end."""
    config = tmp_path / "names.yaml"
    config.write_text(
        "upstream: http://127.0.0.1:1\n"
        "cors: {allow_origins: ['https://app.example']}\n"
        "routes:\n"
        '  - {path_prefix: /a, name: ""}\n'
        '  - {path_prefix: /b, name: "-"}\n'
        '  - {path_prefix: /c, name: "api\\u202ev1"}\n'
        '  - {path_prefix: /d, name: "zero\\u200bwidth"}\n'
        '  - {path_prefix: /e, name: " api"}\n'
        '  - {path_prefix: /f, name: "bell\\x07"}\n'
        "  - {path_prefix: /g, name: api-v1}\n"
        "  - {path_prefix: /h, name: /h/v2.0:x_y}\n"
    )
    check = _run("check", "--config", str(config))
    assert check.returncode == 2
    allowed = "a route name is letters, digits and - _ . / :, e.g. api-v1 or /api"
    assert check.stderr.splitlines() == [
        f"{config}:4: routes[0].name: a route name cannot be empty (leave name: out, or: "
        f"{allowed})",
        f"{config}:5: routes[1].name: '-' is not a route name: logs and metrics write - for no "
        f"route ({allowed})",
        f"{config}:6: routes[2].name: the route name 'api\\u202ev1' has U+202E "
        f"(RIGHT-TO-LEFT OVERRIDE) ({allowed})",
        f"{config}:7: routes[3].name: the route name 'zero\\u200bwidth' has U+200B "
        f"(ZERO WIDTH SPACE) ({allowed})",
        f"{config}:8: routes[4].name: the route name ' api' has a space ({allowed})",
        f"{config}:9: routes[5].name: the route name 'bell\\x07' has U+0007 "
        f"(a control character) ({allowed})",
        f"{config}: 6 errors",
    ], check.stderr
    assert "\u202e" not in check.stderr and "\u200b" not in check.stderr


MALFORMED = [
    "http://0x7f.1",
    "http://[::0001]:8080",
    "http://[::ffff:127.0.0.1]",
    "https://1.2.3",
    "https://a.b.c.999",
    "HTTPS://C.EXAMPLE.COM:443",
    "http://localhost:80",
    "https://app.example:443",
    "https://*.example",
    "regex:https://x",
    "*",
]
WELL_FORMED = [
    "http://127.0.0.1:8080",
    "http://[::1]:3000",
    "https://a.example",
    "http://localhost",
]


def test_only_origins_check_accepts_as_browsers_send_them_are_suggested(tmp_path: Path) -> None:
    [route] = suggest([Observation("api", o) for o in MALFORMED + WELL_FORMED])
    assert route.allow_origins() == sorted(WELL_FORMED)
    assert sorted(route.not_suggested) == sorted(MALFORMED)
    # Each one suggested is accepted by check as an allow_origins entry.
    config = tmp_path / "o.yaml"
    config.write_text(yaml.safe_dump({"upstream": "http://127.0.0.1:1",
                                      "cors": {"allow_origins": WELL_FORMED}}))  # fmt: skip
    check = _run("check", "--strict", "--config", str(config))
    assert check.returncode == 0, check.stdout + check.stderr


async def test_the_console_flags_what_check_would_refuse_as_malformed(proxy: Proxy) -> None:
    async with aiohttp.ClientSession() as client:
        for origin in [*MALFORMED[:7], "https://ok.example"]:
            async with client.get(f"{proxy.url}/x", headers={"Origin": origin}) as r:
                assert r.status == 403
        data = await _get_json(client, f"{proxy.admin}/console/api/refusals")
        suggestion = await _get_json(client, f"{proxy.admin}/console/api/suggest")
    malformed = {e["origin"]: e["malformed"] for e in data["entries"]}
    assert malformed == {**dict.fromkeys(MALFORMED[:7], True), "https://ok.example": False}
    [default] = [r for r in suggestion["routes"] if r["route"] == "default"]
    assert default["allow_origins"] == [APP, "https://ok.example"]
    assert sorted(default["not_suggested"]) == sorted(MALFORMED[:7])


def test_suggest_skips_a_line_nested_too_deep() -> None:
    deep = "[" * 5000 + "]" * 5000
    result = _suggest("-", stdin=deep + "\n" + SAMPLE_LOG)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert "3 line(s) not access lines" in result.stdout
    assert '"https://admin.example"' in result.stdout


def test_host_allowed_only_for_names_no_other_site_can_use() -> None:
    for host in ("127.0.0.1", "127.0.0.1:9901", "10.1.2.3:80", "[::1]", "[::1]:9901",
                 "[fd00::5]:9901", "localhost", "LOCALHOST:9901", "app.localhost:1",
                 "admin.internal:9901"):  # fmt: skip
        assert host_allowed(host, "admin.internal"), host
    for host in ("evil.example", "evil.example:9901", "127.0.0.1.evil.example", "localhost.evil",
                 "admin.internal.evil", "[::1", "[::1]x", "127.0.0.1:x", "0x7f.1", "", None,
                 "[evil]:1"):  # fmt: skip
        assert not host_allowed(host, "admin.internal"), host
    assert not host_allowed("admin.internal", None) and not host_allowed("x", "0.0.0.0")


async def test_the_console_answers_only_to_hosts_no_other_site_can_name(proxy: Proxy) -> None:
    port = proxy.admin_port
    async with aiohttp.ClientSession() as client:
        for path in ("/", "/console/api/policy", "/console/api/refusals", "/console/app.js",
                     "/console/api/suggest", "/console/nothing"):  # fmt: skip
            for host in ("rebound.example", f"rebound.example:{port}", "127.0.0.1.nip.io"):
                async with client.get(f"{proxy.admin}{path}", headers={"Host": host}) as r:
                    assert r.status == 421, (path, host)
                    text = await r.text()
                    assert "port-forward" in text and "http://127.0.0.1:9901/" in text
                    assert r.headers["X-Content-Type-Options"] == "nosniff"
            for host in (f"127.0.0.1:{port}", f"localhost:{port}", "console.localhost",
                         f"[::1]:{port}"):  # fmt: skip
                async with client.get(f"{proxy.admin}{path}", headers={"Host": host}) as r:
                    assert r.status == (404 if path == "/console/nothing" else 200), (path, host)
        # The probes and /metrics answer whatever the Host (kubelet, Prometheus).
        for path in ("/healthz", "/readyz", "/metrics"):
            async with client.get(f"{proxy.admin}{path}", headers={"Host": "svc.ns"}) as r:
                assert r.status == 200, path


async def test_every_admin_answer_says_nosniff_and_errors_carry_the_csp(proxy: Proxy) -> None:
    async with aiohttp.ClientSession() as client:
        for method, path, status in (("GET", "/healthz", 200), ("GET", "/readyz", 200),
                                     ("GET", "/metrics", 200), ("GET", "/nothing", 404),
                                     ("GET", "/console/nothing", 404),
                                     ("POST", "/console/api/policy", 405),
                                     ("POST", "/healthz", 405)):  # fmt: skip
            async with client.request(method, f"{proxy.admin}{path}") as r:
                assert r.status == status, (method, path)
                assert r.headers.get("X-Content-Type-Options") == "nosniff", (method, path)
                if status >= 400:
                    assert r.headers.get("Content-Security-Policy") == CSP, (method, path)


async def test_the_form_passes_values_as_typed_like_corsproxy_explain(proxy: Proxy) -> None:
    cases = [  # with the verdict: fetch() encodes the space in a path (/a%20b)
        ({"origin": f" {APP}", "method": "PUT", "path": "/x"}, "blocked"),
        ({"origin": APP, "method": "PUT", "path": "/a b"}, "allowed"),
        ({"origin": APP, "method": " PUT", "path": "/x"}, "blocked"),
        # fetch() drops a forbidden header: the page's Origin is no second Origin
        ({"origin": APP, "method": "GET", "path": "/x", "header": "Origin: https://x"}, "allowed"),
    ]
    async with aiohttp.ClientSession() as client:
        for query, verdict in cases:
            data = await _get_json(client, f"{proxy.admin}/console/api/explain?" + _qs(query))
            cli = await asyncio.to_thread(
                _run, "explain", "--config", str(proxy.config), "--origin", query["origin"],
                "-X", query["method"], "--path", query["path"], "--format", "json",
                *(["-H", query["header"]] if "header" in query else []),
            )  # fmt: skip
            assert data["verdict"] == verdict, (query, data)
            assert {k: v for k, v in data.items() if k != "text"} == json.loads(cli.stdout)


def test_bidirectional_controls_are_shown_escaped_in_the_suggestion(tmp_path: Path) -> None:
    from corsproxy.ops.suggest import visible

    assert (
        visible("https://a\u202eelpmaxe.com\u2066\n") == "https://a\\u202eelpmaxe.com\\u2066\\u000a"
    )
    sneaky = "https://\u202emoc.elpmaxe"
    text = render_yaml(suggest([Observation("api\u202e", sneaky)]))
    assert "\u202e" not in text and "\\u202e" in text
    log = tmp_path / "a\u202egol.log"
    log.write_text(_access("api", sneaky, "refused"), encoding="utf-8")
    result = _suggest(str(log))
    assert result.returncode == 0, result.stderr
    assert "\u202e" not in result.stdout and "a\\u202egol.log" in result.stdout


async def test_a_renamed_route_leaves_list_and_suggestion_alike(proxy: Proxy) -> None:
    async with aiohttp.ClientSession() as client:
        async with client.get(f"{proxy.url}/report/y", headers={"Origin": "https://r.example"}):
            pass
        data = await _get_json(client, f"{proxy.admin}/console/api/refusals")
        assert [e["route"] for e in data["entries"]] == ["report"] and data["stale"] == 0
        proxy.config.write_text(proxy.config.read_text().replace("name: report", "name: rep"))
        proxy.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            policy = await _get_json(client, f"{proxy.admin}/console/api/policy")
            if "rep" in {r["name"] for r in policy["routes"]}:
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError(f"the reload never showed: {policy}")
        data = await _get_json(client, f"{proxy.admin}/console/api/refusals")
        suggestion = await _get_json(client, f"{proxy.admin}/console/api/suggest")
    assert data["entries"] == [] and data["stale"] == 1
    assert "https://r.example" not in json.dumps(suggestion)
    assert "1 entry(ies) of routes no longer in the config" in suggestion["yaml"]


# --- packaging ---------------------------------------------------------------------------


def test_the_wheel_ships_the_console_files(tmp_path: Path) -> None:
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(tmp_path), str(ROOT)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert build.returncode == 0, build.stdout + build.stderr
    [wheel] = tmp_path.glob("corsproxy-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for name in ("index.html", "app.js", "console.css", "favicon.svg"):
        assert f"corsproxy/ops/console_static/{name}" in names


def test_a_refused_options_request_is_suggested(tmp_path: Path) -> None:
    """fetch(url, {method: "OPTIONS"}) needs OPTIONS in allow_methods (its preflight asks for
    it): the suggestion lists it, from a log and from the ring's reasons alike."""
    log = tmp_path / "access.log"
    log.write_text(
        _access("default", APP, "refused", "OPTIONS", reason="method_not_allowed:OPTIONS",
                reasons=["method_not_allowed:OPTIONS"], request_method="OPTIONS") + "\n",
    )  # fmt: skip
    result = _suggest(str(log))
    assert result.returncode == 0, result.stderr
    blocks = yaml.safe_load(result.stdout)
    assert blocks["cors"]["allow_methods"] == ["OPTIONS"], result.stdout
    seen = [Observation("default", APP, refused=True, reasons=("method_not_allowed:OPTIONS",))]
    assert "OPTIONS" in render_yaml(suggest(seen))
