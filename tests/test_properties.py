"""Invariants of the decision over random policies and requests (hypothesis)."""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Any

import yaml
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from corsproxy.config import ConfigError, parse_config
from corsproxy.policy.cors import Action, Mode, Reason, decide, decide_cached
from corsproxy.policy.origins import parse_origin
from tests.helpers import aca, config, policy, request

ORIGIN_ENTRIES = [
    "https://app.example.com",
    "https://*.example.com",
    "http://localhost:*",
    r"regex:https://pr-[0-9]+\.preview\.example\.com",
    "https://api.example.com:8443",
    "http://[::1]:3000",
    "*",
    "null",
]
CONCRETE_ORIGINS = [
    "https://app.example.com",
    "https://a.b.example.com",
    "http://localhost:5173",
    "https://pr-12.preview.example.com",
    "https://api.example.com:8443",
    "http://[::1]:3000",
    "null",
    "https://evil.example.net",
    "",
]
HEADER_NAMES = ["content-type", "authorization", "x-token", "X-Requested-With", "accept"]

policies = st.fixed_dictionaries(
    {},
    optional={
        "allow_origins": st.lists(st.sampled_from(ORIGIN_ENTRIES), max_size=4),
        "allow_methods": st.one_of(
            st.just("*"), st.lists(st.sampled_from(["GET", "PUT", "PATCH", "DELETE"]), min_size=1)
        ),
        "allow_headers": st.one_of(st.just("*"), st.lists(st.sampled_from(HEADER_NAMES))),
        "expose_headers": st.one_of(st.just("*"), st.lists(st.sampled_from(["X-Request-Id"]))),
        "allow_credentials": st.booleans(),
        "max_age": st.integers(0, 600),
        "allow_private_network": st.booleans(),
        "on_disallowed": st.sampled_from(["forward", "reject"]),
        "mode": st.sampled_from(["enforce", "report-only"]),
    },
)

origins = st.one_of(
    st.sampled_from(CONCRETE_ORIGINS),
    st.text(max_size=40),
    st.builds(
        lambda h: f"https://{h}.example.com", st.from_regex(r"[a-z0-9.\-]{0,12}", fullmatch=True)
    ),
)


@st.composite
def requests(draw: st.DrawFn) -> Any:
    method = draw(st.sampled_from(["GET", "HEAD", "POST", "PUT", "OPTIONS", "OPTIONS", "patch"]))
    headers: dict[str, str | list[str]] = {}
    origin_lines = draw(st.lists(origins, max_size=2))
    if origin_lines:
        headers["origin"] = origin_lines
    if draw(st.booleans()):
        headers["acrm"] = draw(
            st.sampled_from(["GET", "PUT", "PATCH", "patch", "TRACE", "", "A B"])
        )
    if draw(st.booleans()):
        headers["acrh"] = draw(
            st.lists(
                st.one_of(st.sampled_from(HEADER_NAMES), st.text(max_size=10)),
                max_size=3,
            ).map(",".join)
        )
    if draw(st.booleans()):
        headers["acrpn"] = "true"
    view = request(method, "/x", **headers)
    if draw(st.booleans()):  # a WebSocket handshake to a proxy addressed as own_origin
        view = dataclasses.replace(view, websocket=True, own_origin=draw(origins))
    return view


def compiled(doc: dict[str, Any]) -> Any:
    try:
        return policy(**doc)
    except ConfigError:
        return None


@settings(max_examples=200, deadline=None)
@given(doc=policies, reqs=st.lists(requests(), min_size=1, max_size=8), path=st.text(max_size=5))
def test_memoized_decisions_equal_fresh_ones(
    doc: dict[str, Any], reqs: list[Any], path: str
) -> None:
    pol = compiled(doc)
    assume(pol is not None)
    assert pol is not None
    for req in [*reqs, *reqs, *(dataclasses.replace(r, path=path) for r in reqs)]:
        assert decide_cached(pol, req) == decide(pol, req)


@settings(max_examples=400, deadline=None)
@given(doc=policies, req=requests())
def test_decision_invariants(doc: dict[str, Any], req: Any) -> None:
    pol = compiled(doc)
    if doc.get("allow_credentials") and {"*", "null"} & set(doc.get("allow_origins", [])):
        assert pol is None, "an unsafe policy must be refused at load time"
        return
    if doc.get("allow_credentials") and doc.get("expose_headers") == "*":
        assert pol is None
        return
    assume(pol is not None)
    decision = decide(pol, req)
    headers = aca(decision)
    names = [n for n, _ in decision.headers]
    assert len(names) == len(set(names)), "no header twice"
    acao = headers.get("Access-Control-Allow-Origin")
    # ACAO `*` never together with ACAC.
    assert not (acao == "*" and "Access-Control-Allow-Credentials" in headers)
    # ACAO only ever carries `*` or an allowed origin, exactly as the request sent it.
    if acao is not None:
        assert acao == "*" or (
            acao == req.origin[0] and pol.origins.match(acao).allowed and acao != "*"
        )
        assert "\r" not in acao and "\n" not in acao and "," not in acao
    if len(req.origin) > 1:
        # Malformed in any mode: answered 400 here, nothing is forwarded.
        assert decision.action is Action.BAD_REQUEST and headers == {}
        return
    if pol.mode is Mode.REPORT_ONLY:
        assert decision.headers == () and not decision.strip_upstream_cors
        assert decision.action is Action.FORWARD
        return
    # Every origin-dependent answer carries Vary: Origin.
    if pol.enabled:
        assert "Origin" in decision.vary
    # A refused preflight (or request) carries no Access-Control-* header.
    if decision.action is Action.REFUSE:
        assert headers == {}
        assert decision.status == 403
    if acao is None:
        assert headers == {}, "no other CORS header without ACAO"


SPECIAL = [*list("_-\"{}+^!~`;|&'()*,$="), "%60", "%0b", "%2e", ".", "@", "#", "/", ":", "\\"]


def mutations(allowed: str) -> st.SearchStrategy[str]:
    parsed = parse_origin(allowed)
    assert parsed is not None
    scheme, host = parsed.scheme, parsed.host
    port = f":{parsed.port}" if parsed.port else ""
    labels = st.from_regex(r"[a-z0-9][a-z0-9\-]{0,10}", fullmatch=True)
    other_scheme = "http" if scheme == "https" else "https"
    first, _, rest = host.partition(".")
    return st.one_of(
        labels.map(lambda e: f"{scheme}://{e}{host}{port}"),  # prefix: evilapp.example.com
        labels.map(lambda e: f"{scheme}://{e}.{host}{port}"),  # any subdomain
        labels.map(
            lambda e: f"{scheme}://{host}{port}.{e}.com"
        ),  # suffix: app.example.com.evil.com
        st.builds(
            lambda c, e: f"{scheme}://{host}{port}{c}.{e}.com", st.sampled_from(SPECIAL), labels
        ),
        st.just(f"{other_scheme}://{host}{port}"),  # scheme downgrade (or upgrade)
        st.integers(1, 65535)
        .filter(lambda p: p != (parsed.port or {"http": 80, "https": 443}[scheme]))
        .map(lambda p: f"{scheme}://{host}:{p}"),
        st.just(f"{scheme}://{first}x{rest}{port}"),  # unescaped dot
        st.just(f"{scheme}://{host[1:]}{port}"),  # include match
        st.just(f"{scheme}://{host}.{port}"),
        st.just(f"{scheme}://{host}{port}/"),
        st.just("null"),
        labels.map(lambda e: f"{scheme}://{host}{port}@{e}.com"),
    )


SCANNED = policy(
    allow_origins=["https://app.example.com", "https://api.example.com:8443"],
    allow_credentials=True,
)


@settings(max_examples=300, deadline=None)
@given(
    origin=st.one_of(
        mutations("https://app.example.com"), mutations("https://api.example.com:8443")
    )
)
@example(origin="https://app.example.com.evil.com")
def test_scanner_mutations_of_an_allowed_origin_are_never_allowed(origin: str) -> None:
    decision = decide(SCANNED, request("GET", "/", origin=origin))
    assert aca(decision) == {}
    pre = decide(SCANNED, request("OPTIONS", "/", origin=origin, acrm="PUT"))
    assert pre.action is Action.REFUSE


KEYS = [
    "upstream",
    "listen",
    "cors",
    "routes",
    "allow_origins",
    "timeouts",
    "read",
    "mode",
    "path_prefix",
    "allow_credentials",
    "max_age",
    "limits",
    "max_body_size",
    "admin",
    "x",
]
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 100000),
    st.floats(allow_nan=False),
    st.text(max_size=20),
    st.sampled_from(["*", "null", "http://u:1", "/api", "${X}", "5s", "1MiB"]),
)
documents = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.sampled_from(KEYS), children, max_size=5),
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(doc=documents)
def test_the_loader_answers_any_document_with_a_config_or_errors(doc: Any) -> None:
    text = yaml.safe_dump(doc)
    try:
        parse_config(text, "fuzz.yaml", {})
    except ConfigError as exc:
        assert exc.errors, "a refused config names at least one error"
        for diagnostic in exc.errors:
            assert str(diagnostic).startswith("fuzz.yaml")


@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=200))
def test_the_loader_survives_arbitrary_text(text: str) -> None:
    with contextlib.suppress(ConfigError):
        parse_config(text, "fuzz.yaml", {})


def test_example_routes_compile_like_the_docs_say() -> None:
    cfg = config({"upstream": "http://u:1", "cors": {"allow_origins": ["*"]}})
    assert decide(cfg.cors, request("GET", "/", origin="https://x.test")).headers[0] == (
        "Access-Control-Allow-Origin",
        "*",
    )


SCALE_ENTRIES = [
    "https://*.example.com",
    "https://*.b.example.com",
    "http://localhost:*",
    "http://localhost:3000",
    "https://*.example.org:8443",
    r"regex:https://pr-[0-9]+\.preview\.example\.com",
    r"regex:https://(a|ab)\.x\.test",
    r"regex:https://([a-z])\1\.twin\.test",  # a backreference: never combined
    "regex:(?i)https://case\\.test",  # an inline flag: never combined
    "https://exact.example.net",
]
hosts = st.builds(
    lambda prefix, suffix: ".".join([*prefix, suffix]),
    st.lists(st.sampled_from(["a", "b", "pr-12", "aa", "ab", "x", "CASE", "-bad"]), max_size=2),
    st.sampled_from(
        ["example.com", "b.example.com", "example.org", "localhost", "preview.example.com",
         "x.test", "twin.test", "case.test", "exact.example.net", "example.com.evil"]
    ),
)  # fmt: skip
scale_origins = st.builds(
    lambda scheme, host, port: f"{scheme}://{host}{port}",
    st.sampled_from(["http", "https"]),
    hosts,
    st.sampled_from(["", ":3000", ":8443", ":443", ":80"]),
)


def linear_allows(entries: list[Any], value: str) -> bool:
    """The reference: every entry tried in order, as the matcher did before indexing."""
    origin = parse_origin(value)
    if origin is None:
        return False
    for entry in entries:
        if entry.exact is not None and entry.exact.key() == origin.key():
            return True
        if entry.pattern is not None and entry.pattern.matches(origin):
            return True
        if entry.regex is not None and entry.regex.fullmatch(value):
            return True
    return False


@settings(max_examples=500, deadline=None)
@given(
    chosen=st.lists(st.sampled_from(SCALE_ENTRIES), min_size=1, max_size=6, unique=True),
    value=scale_origins,
)
@example(chosen=[SCALE_ENTRIES[5], SCALE_ENTRIES[6]], value="https://pr-12.preview.example.com")
@example(chosen=[SCALE_ENTRIES[5], SCALE_ENTRIES[6]], value="https://ab.x.test")
@example(chosen=[SCALE_ENTRIES[5], SCALE_ENTRIES[7]], value="https://aa.twin.test")
@example(chosen=[SCALE_ENTRIES[5], SCALE_ENTRIES[8]], value="https://CASE.test")
@example(chosen=[SCALE_ENTRIES[0], SCALE_ENTRIES[1]], value="https://a.b.example.com")
def test_indexed_origin_matching_agrees_with_a_linear_scan(chosen: list[str], value: str) -> None:
    from corsproxy.policy.origins import OriginMatcher, compile_origin_entry

    entries = [compile_origin_entry(i, text)[0] for i, text in enumerate(chosen)]
    matcher = OriginMatcher(tuple(entries))
    match = matcher.match(value)
    assert match.allowed is linear_allows(entries, value)
    if match.allowed:
        assert match.entry is not None and linear_allows([match.entry], value)


@settings(max_examples=400, deadline=None)
@given(doc=policies, req=requests())
def test_the_decision_says_whether_method_overrides_are_dropped(
    doc: dict[str, Any], req: Any
) -> None:
    """The server once computed this itself (an Origin line, not allowed, enforce mode): the
    decision now carries it, so `explain` and the server read the same outcome."""
    pol = compiled(doc)
    assume(pol is not None)
    decision = decide(pol, req)
    enforce = pol.mode is Mode.ENFORCE
    assert decision.drop_method_overrides == (bool(req.origin) and not decision.allowed and enforce)
    if decision.would is not None:  # report-only: what enforce mode would drop
        assert decision.would.drop_method_overrides == (bool(req.origin) and not decision.allowed)
    assert decision.reasons and all(type(r) is Reason for r in decision.reasons)
