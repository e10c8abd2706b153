"""`explain --browser` against the real engines: a seeded sample of random policies and
requests, each run in Chromium, Firefox and WebKit and compared with explain's prediction.

One `corsproxy serve` holds every sampled policy as its own route (`/r0`, `/r1`, ...) in front
of a recording upstream; pages on an allowed and a refused origin fetch() through it. For each
pair the engine's verdict (could the script read the answer), its console (Firefox, WebKit) or
DevTools reason (Chromium), and whether a preflight was sent (corsproxy's own access log) must
be what `explain(..., engine=...)` predicts. The sample is fixed by a seed so CI is
repeatable; CORSPROXY_EXPLAIN_SEED and CORSPROXY_EXPLAIN_SAMPLE choose another sample
(e.g. to sweep seeds locally).
"""

from __future__ import annotations

import json
import os
import random
import signal
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web

from tests.browsers.access_log import AccessLog
from tests.browsers.engine import Engine, launched, selected
from tests.browsers.servers import ThreadedServers, page_app
from tests.net import free_port, start_cli

SEED = int(os.environ.get("CORSPROXY_EXPLAIN_SEED", "17"))
SAMPLE = int(os.environ.get("CORSPROXY_EXPLAIN_SAMPLE", "40"))
POLICIES = 8
OTHER = "https://other.example"
METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "FOO"]
WRITTEN_METHODS = ["GET", "POST", "PUT", "put", "PATCH", "patch", "DELETE", "FOO"]
HEADERS = [
    ("X-A", "1"),
    ("X-B", "2"),
    ("Content-Type", "application/json"),
    ("Content-Type", "text/plain"),
    ("Authorization", "Bearer t"),
]


@dataclass
class Policy:
    origins: list[str]  # symbolic: "allowed", "other", "*"
    credentials: bool
    methods: list[str]
    headers: list[str]
    expose: list[str]
    max_age: int

    def yaml(self, allowed: str) -> str:
        origins = [{"allowed": allowed, "other": OTHER}.get(o, o) for o in self.origins]
        return json.dumps(
            {
                "allow_origins": origins,
                "allow_credentials": self.credentials,
                "allow_methods": self.methods,
                "allow_headers": self.headers,
                "expose_headers": self.expose,
                "max_age": self.max_age,
            }
        )


@dataclass
class Case:
    policy: int
    page: str  # "allowed" or "refused"
    method: str
    headers: list[tuple[str, str]]
    credentials: bool
    path: str = field(default="")


def _value(rng: random.Random, name: str) -> str:
    return rng.choice([v for n, v in HEADERS if n == name] or ["1"])


def sample(rng: random.Random) -> tuple[list[Policy], list[Case]]:
    """Policies of every shape corsproxy accepts, and requests drawn mostly near what each
    policy allows (else nearly every request would end in the same refused preflight)."""
    policies: list[Policy] = []
    for _ in range(POLICIES):
        credentials = rng.random() < 0.5
        origins = rng.choice(
            [["allowed"]] * 3 + [["allowed", "other"], ["other"]] + [["*"]] * 2 * (not credentials)
        )
        methods = sorted(rng.sample(METHODS, rng.randint(1, len(METHODS))))
        if rng.random() < 0.3:  # a lower-case method listed: its preflight passes, then 400
            methods.append("patch")
        headers = sorted(
            rng.sample(["X-A", "X-B", "Content-Type", "Authorization"], rng.randint(0, 3))
        )
        if not credentials and rng.random() < 0.25:
            headers = ["*"]
        expose = rng.choice([[], ["X-Exposed"]] + [["*"]] * (not credentials))
        policies.append(
            Policy(origins, credentials, methods, headers, expose, rng.choice([0, 600]))
        )
    cases: list[Case] = []
    for i in range(SAMPLE):
        index = rng.randrange(POLICIES)
        policy = policies[index]
        pick = rng.random()
        if pick < 0.4:
            method = rng.choice(["GET", "POST", "HEAD"])
        elif pick < 0.75:
            method = rng.choice(policy.methods)
            method = method.lower() if rng.random() < 0.3 else method
        else:
            method = rng.choice(WRITTEN_METHODS)
        pick = rng.random()
        names: list[str] = []
        if pick < 0.3:
            allowed = [h for h in policy.headers if h != "*"] or ["X-A", "Authorization"]
            names = rng.sample(allowed, rng.randint(1, min(2, len(allowed))))
        elif pick < 0.6:
            names = rng.sample(sorted({n for n, _ in HEADERS}), rng.randint(1, 2))
        cases.append(
            Case(
                policy=index,
                page=rng.choice(["allowed", "allowed", "allowed", "refused"]),
                method=method,
                headers=[(n, _value(rng, n)) for n in names],
                credentials=rng.random() < 0.5,
                # Some with a fragment: the request drops it, the console URL keeps it.
                path=f"/s{i}" + (f'#f {i}"' if rng.random() < 0.25 else ""),
            )
        )
    return policies, cases


def set_twice(rng: random.Random, cases: list[Case]) -> None:
    """Some cases set a header twice (fetch() combines the two: `1, 2`; a safelisted value
    no longer is one): a header of the case again, or Range twice. Its own generator, so
    the rest of the sample is the one the seed always gave."""
    for case in cases:
        if rng.random() >= 0.3:
            continue
        if case.headers and rng.random() < 0.7:
            name = case.headers[0][0]
            case.headers.append((name, _value(rng, name)))
        else:
            case.headers += [("Range", "bytes=0-1"), ("Range", "bytes=2-3")]


POLICY_LIST, CASES = sample(random.Random(SEED))
set_twice(random.Random(f"{SEED}-twice"), CASES)


UPSTREAM_STATUS = 200


async def _upstream(request: web.Request) -> web.Response:
    await request.read()
    return web.Response(text="ok", status=UPSTREAM_STATUS, headers={"X-Exposed": "1"})


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    servers, api = ThreadedServers(), web.Application()
    api.router.add_route("*", "/{tail:.*}", _upstream)
    upstream, allowed_port, refused_port = (
        servers.serve(api), servers.serve(page_app()), servers.serve(page_app())
    )  # fmt: skip
    allowed = f"http://127.0.0.1:{allowed_port}"
    routes = "\n".join(
        f"  - path_prefix: /r{i}\n    cors: {p.yaml(allowed)}" for i, p in enumerate(POLICY_LIST)
    )
    config = tmp_path_factory.mktemp("explain-sample") / "corsproxy.yaml"
    config.write_text(f"upstream: http://127.0.0.1:{upstream}\nroutes:\n{routes}\n")
    port = free_port()
    proc, _ = start_cli("--config", str(config), "--listen", f"127.0.0.1:{port}")
    log = AccessLog(proc)
    try:
        yield {
            "config": config,
            "api": f"http://localhost:{port}",
            "allowed": allowed,
            "refused": f"http://127.0.0.1:{refused_port}",
            "log": log,
        }
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)
        log.close()
        servers.stop()


@pytest.fixture(scope="module", params=selected())
def engine(request: pytest.FixtureRequest) -> Iterator[Engine]:
    yield from launched(request.param)


class Pages:
    """One tab per page origin for the whole sample (each case has its own path, so its own
    preflight cache entry); each case reads only the CORS errors that came after it began."""

    def __init__(self, engine: Engine, world: dict[str, Any]) -> None:
        self.tabs = {page: engine.open(world[page]) for page in ("allowed", "refused")}
        self.seen = dict.fromkeys(self.tabs, 0)

    def run(self, page: str, script: str, arg: Any) -> tuple[Any, list[Any]]:
        tab = self.tabs[page]
        result = tab.evaluate(script, arg)
        errors = tab.cors_errors()
        new, self.seen[page] = errors[self.seen[page] :], len(errors)
        return result, new

    def close(self) -> None:
        for tab in self.tabs.values():
            tab.close()


@pytest.fixture(scope="module")
def pages(engine: Engine, world: dict[str, Any]) -> Iterator[Pages]:
    opened = Pages(engine, world)
    yield opened
    opened.close()


# The headers are appended one by one (a name given twice is combined, as a page gets it).
FETCH = """async ([url, init]) => {
  try {
    const headers = new Headers();
    for (const [name, value] of init.headers) headers.append(name, value);
    const r = await fetch(url, {...init, headers});
    await r.text();
    return {ok: true, status: r.status, exposed: r.headers.get('x-exposed') !== null};
  }
  catch (e) { return {ok: false, error: String(e)}; }
}"""


def _same(seen: str, predicted: str) -> bool:
    """A console line as predicted. Where explain says the status is the upstream's (`N` in
    the line, JSON `status: null`) it must be the sample upstream's 200; a status corsproxy
    answers itself is predicted exactly."""
    return seen == predicted.replace("Status code: N", f"Status code: {UPSTREAM_STATUS}")


def _id(case: Case) -> str:
    headers = ",".join(n for n, _ in case.headers) or "-"
    cred = "cred" if case.credentials else "nocred"
    return f"r{case.policy}{case.path}-{case.page}-{case.method}-{headers}-{cred}"


@pytest.mark.parametrize("case", CASES, ids=_id)
def test_explain_predicts_what_the_engine_does(
    engine: Engine, world: dict[str, Any], pages: Pages, case: Case
) -> None:
    from corsproxy.commands.explain import explain
    from corsproxy.config import load_config

    base, _, fragment = case.path.partition("#")
    path = f"/r{case.policy}{base}-{engine.name}"  # each engine its own preflight cache key
    written = path + (f"#{fragment}" if fragment else "")
    origin = world[case.page]
    predicted = explain(
        load_config(world["config"], env={}),
        origin,
        case.method,
        written,
        case.headers,
        case.credentials,
        proxy_origin=world["api"],
        engine=engine.name,
    )
    init = {
        "method": case.method,
        "headers": case.headers,
        "credentials": "include" if case.credentials else "same-origin",
    }
    result, errors = pages.run(case.page, FETCH, [f"{world['api']}{written}", init])
    context = f"policy {POLICY_LIST[case.policy]}, {case}, predicted {predicted.verdict}"
    assert result["ok"] is predicted.allowed, (result, context)
    sent_preflight = any(step.title == "Preflight" for step in predicted.steps)
    assert (world["log"].count(world["api"], "OPTIONS", path) > 0) is sent_preflight, context
    expected = predicted.engine_failure
    if expected is None:
        assert errors == [], context
        readable = {name.lower() for name in predicted.readable}
        assert result["exposed"] is bool(readable & {"*", "x-exposed"}), context
        return
    if engine.name == "chromium":
        assert [e.code for e in errors] == [expected.code], context
    else:  # Firefox and WebKit: the console lines themselves
        seen = [e.message for e in errors]
        lines = list(expected.messages)
        if engine.name == "webkit":  # the driver keeps the reason, the URL comes apart
            lines = lines[:1]
        same = all(map(_same, seen, lines))
        assert len(seen) == len(lines) and same, (seen, lines, context)
