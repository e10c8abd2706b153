"""The URL and cookie rewriting of answers (policy/url_rewrite.py), without sockets: a table
of URL forms, the header grammars (Refresh, Link, Set-Cookie), and properties."""

from __future__ import annotations

import re
from types import MappingProxyType
from urllib.parse import urljoin, urlsplit

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from corsproxy.config.schema import parse_upstream
from corsproxy.policy.routes import Route
from corsproxy.policy.url_rewrite import (
    ResponseRewrite,
    UrlMap,
    link_url_spans,
    refresh_url_span,
    response_rewrite,
    rewrite_link,
    rewrite_refresh,
    rewrite_set_cookie,
    url_map,
    with_vary_host,
)
from tests.helpers import policy

PUBLIC = "https://api.example.com"


def urls(
    upstream: str = "http://127.0.0.1:19003",
    prefix: str = "",
    inherited: str = "",
    host: str | None = None,
) -> UrlMap:
    made = url_map(parse_upstream(upstream), prefix, PUBLIC, inherited, host)
    assert made is not None
    return made


PLAIN = urls()
STRIPPED = urls(prefix="/svc")
BASED = urls("http://legacy:9000/api", prefix="/svc")
# A base path and no prefix put back (no strip_prefix, or the prefix `/`).
BASE_ONLY = urls("http://127.0.0.1:19003/base")
BASE_SLASH = urls("http://127.0.0.1:19003/base", prefix="/")
V6 = urls("http://[0:0::1]:8000")
# Behind a trusted proxy that strips /edge (X-Forwarded-Prefix), route /djp strips its own.
EDGE = urls(prefix="/edge/djp", inherited="/edge")
EDGE_BASED = urls("http://legacy:9000/api", prefix="/edge/djp", inherited="/edge")
# preserve_host: the upstream was sent `Host: localhost:45444` and builds URLs on it.
ALIAS = urls(prefix="/plain", host="localhost:45444")
ALIAS_BASED = urls("http://127.0.0.1:19003/base", prefix="/plain", host="localhost:45444")
# ... the Host it was sent makes the public origin itself (an https upstream, the client's Host)
SELF = urls("https://127.0.0.1:19003", prefix="/plain", host="api.example.com")
SELF_BARE = urls("https://127.0.0.1:19003", host="API.example.com:443")

# (map, URL from the upstream, what the client gets; None: untouched)
TABLE: list[tuple[UrlMap, str, str | None]] = [
    # the upstream's origin, every way of writing it
    (PLAIN, "http://127.0.0.1:19003/api/me", f"{PUBLIC}/api/me"),
    (PLAIN, "HTTP://127.0.0.1:19003/api/me?x=1#f", f"{PUBLIC}/api/me?x=1#f"),
    (PLAIN, "http://127.0.0.1:19003", PUBLIC),
    (PLAIN, "http://127.0.0.1:19003?q", f"{PUBLIC}?q"),
    (PLAIN, "http://127.0.0.1:019003/x", f"{PUBLIC}/x"),
    (urls("http://legacy"), "http://LEGACY:80/x", f"{PUBLIC}/x"),
    (urls("http://legacy"), "http://legacy:/x", f"{PUBLIC}/x"),
    (urls("https://legacy"), "https://legacy:443/x", f"{PUBLIC}/x"),
    (urls("http://[::1]:8000"), "http://[::1]:8000/x", f"{PUBLIC}/x"),
    (PLAIN, "//127.0.0.1:19003/x", "//api.example.com/x"),
    # not the upstream's origin: untouched
    (PLAIN, "https://127.0.0.1:19003/x", None),  # other scheme
    (PLAIN, "http://127.0.0.1:19004/x", None),  # other port
    (PLAIN, "http://127.0.0.2:19003/x", None),
    (PLAIN, "http://evil.example/x", None),
    (PLAIN, "//evil.example/x", None),
    (PLAIN, "http://user@127.0.0.1:19003/x", None),  # userinfo: not read
    (PLAIN, "http://127.0.0.1:19003\\@evil/x", None),  # backslash: not read
    (PLAIN, "http://127.0.0.1:99999/x", None),
    (PLAIN, "http://[bad/x", None),
    (PLAIN, "http:/127.0.0.1:19003/x", None),
    (PLAIN, "data:text/plain,hi", None),
    (PLAIN, "mailto:a@b", None),
    (PLAIN, "javascript:alert(1)", None),
    (PLAIN, f"{PUBLIC}/x", None),  # already public (preserve_host: the app built it)
    (PLAIN, "x/y", None),
    (PLAIN, "../x", None),
    (PLAIN, "?page=2", None),
    (PLAIN, "#top", None),
    (PLAIN, "", None),
    (PLAIN, "/get", None),  # no prefix stripped, no base: nothing to change
    (PLAIN, "/a b", None),  # whitespace: not read
    (PLAIN, "/\\evil.example", None),  # browsers read '\' as '/': never touched
    # a stripped prefix is put back
    (STRIPPED, "/get", "/svc/get"),
    (STRIPPED, "/", "/svc/"),
    (STRIPPED, "/get?a=/b#c", "/svc/get?a=/b#c"),
    (STRIPPED, "http://127.0.0.1:19003/get", f"{PUBLIC}/svc/get"),
    (STRIPPED, "http://127.0.0.1:19003", f"{PUBLIC}/svc"),
    (STRIPPED, "/svc/get", None),  # already under it (X-Forwarded-Prefix aware apps)
    (STRIPPED, "/SVC/get", None),
    (STRIPPED, "/svcx", "/svc/svcx"),  # segments, not characters
    # The client's own origin reads as a path does: the app built it from the Host or the
    # X-Forwarded-Host it was sent, without the prefix (an outside review: whether the app
    # honoured X-Forwarded-Proto decided whether the prefix came back).
    (STRIPPED, f"{PUBLIC}/get", f"{PUBLIC}/svc/get"),
    (STRIPPED, f"{PUBLIC}/svc/get", None),
    (STRIPPED, f"{PUBLIC}", f"{PUBLIC}/svc"),
    (STRIPPED, "https://API.example.com:443/svc/get", None),
    (STRIPPED, "get", None),
    # an upstream base path is taken off
    (BASED, "http://legacy:9000/api/items", f"{PUBLIC}/svc/items"),
    (BASED, "http://legacy:9000/api", f"{PUBLIC}/svc"),
    (BASED, "http://legacy:9000/other", None),  # not under the base
    (BASED, "http://legacy:9000/apix", None),
    (BASED, "http://legacy:9000", None),
    (BASED, "/api/items", "/svc/items"),
    (BASED, "/api", "/svc"),
    (BASED, "/other", "/svc/other"),
    (urls("http://legacy:9000/api"), "/api/items", "/items"),
    (urls("http://legacy:9000/api"), "/api", "/"),
    (urls("http://legacy:9000/api"), "/other", None),
    # the base taken off must never leave `//host` (a browser's protocol-relative URL)
    (BASE_ONLY, "/base//evil.example/", None),
    (BASE_SLASH, "/base//evil.example/", None),
    (BASE_ONLY, "/base//evil.example", None),
    (BASE_ONLY, "/base//", None),
    (BASE_ONLY, "/base/", "/"),
    (BASE_ONLY, "/base/x//y", "/x//y"),
    (BASE_ONLY, "http://127.0.0.1:19003/base//evil.example/", f"{PUBLIC}//evil.example/"),
    (BASE_ONLY, "//127.0.0.1:19003/base//evil.example/", "//api.example.com//evil.example/"),
    (BASED, "/api//evil.example/", "/svc//evil.example/"),  # under the prefix: a path
    # a network-path reference without a port has the upstream scheme's default port
    (PLAIN, "//127.0.0.1/x", None),
    (PLAIN, "//127.0.0.1:/x", None),
    (PLAIN, "//127.0.0.1:0/x", None),
    (urls("http://legacy"), "//legacy/x", "//api.example.com/x"),
    (urls("http://legacy"), "//legacy:/x", "//api.example.com/x"),
    (urls("http://legacy"), "//legacy:443/x", None),
    (urls("https://legacy"), "//legacy/x", "//api.example.com/x"),
    (urls("https://legacy"), "//legacy:80/x", None),
    (urls("http://legacy:80"), "//legacy/x", "//api.example.com/x"),
    # IP literals compare as addresses, names without case
    (V6, "http://[::1]:8000/y", f"{PUBLIC}/y"),
    (V6, "http://[0:0:0:0:0:0:0:1]:8000/y", f"{PUBLIC}/y"),
    (V6, "//[::0001]:8000/y", "//api.example.com/y"),
    (urls("http://[::1]:8000"), "http://[0::1]:8000/y", f"{PUBLIC}/y"),
    (urls("http://[fe80::abcd]:8000"), "http://[FE80:0::ABCD]:8000/y", f"{PUBLIC}/y"),
    (V6, "http://[::2]:8000/y", None),
    (V6, "http://[::1:]:8000/y", None),  # not an address: not read
    (V6, "http://[::ffff:127.0.0.1]:8000/y", None),  # v4-mapped is another host
    (PLAIN, "http://[::ffff:127.0.0.1]:19003/y", None),
    (urls("http://Legacy.Internal:9000"), "http://LEGACY.internal:9000/y", f"{PUBLIC}/y"),
    # dot segments: where the URL resolves is not where its text says, never rewritten
    (BASED, "http://legacy:9000/api/../admin", None),
    (BASED, "http://legacy:9000/api/./x", None),
    (BASED, "http://legacy:9000/api/%2e%2E/admin", None),
    (BASED, "http://legacy:9000/api/.%2e/admin", None),
    (BASED, "http://legacy:9000/api/x/..", None),
    (BASED, "/api/../admin", None),
    (BASED, "/api/%2E./admin", None),
    (BASED, "/other/../x", None),
    (STRIPPED, "/../admin", None),
    (STRIPPED, "/a/.", None),
    (STRIPPED, "//127.0.0.1:19003/a/../../b", None),
    (STRIPPED, "/a/..b/.c/...", "/svc/a/..b/.c/..."),  # not dot segments
    (STRIPPED, "/a?next=/../x#/../y", "/svc/a?next=/../x#/../y"),  # query, fragment: not path
    # an inherited prefix: a URL built with the route's own prefix gets only the inherited one
    (EDGE, "/djp/admin/login/", "/edge/djp/admin/login/"),  # Django FORCE_SCRIPT_NAME=/djp
    (EDGE, "/djp", "/edge/djp"),
    (EDGE, "/DJP/x", "/edge/DJP/x"),
    (EDGE, "/edge/djp/admin/", None),  # built with X-Forwarded-Prefix: already the client's
    (EDGE, "/x", "/edge/djp/x"),
    (EDGE, "/djpx", "/edge/djp/djpx"),  # segments, not characters
    (EDGE, "/edge/x", "/edge/djp/edge/x"),  # under the inherited prefix alone: not the route's
    (EDGE, "http://127.0.0.1:19003/djp/admin/?next=/djp/", f"{PUBLIC}/edge/djp/admin/?next=/djp/"),
    (EDGE, "http://127.0.0.1:19003/edge/djp/admin/", f"{PUBLIC}/edge/djp/admin/"),
    (EDGE, "http://127.0.0.1:19003/x", f"{PUBLIC}/edge/djp/x"),
    (EDGE, "//127.0.0.1:19003/djp/x", "//api.example.com/edge/djp/x"),
    (EDGE, "/djp/../admin", None),
    (EDGE_BASED, "/api/djp/x", "/edge/djp/x"),
    (EDGE_BASED, "http://legacy:9000/api/djp/x", f"{PUBLIC}/edge/djp/x"),
    (EDGE_BASED, "http://legacy:9000/api/x", f"{PUBLIC}/edge/djp/x"),
    (urls(prefix="/edge", inherited="/edge"), "/x", "/edge/x"),  # the route strips nothing
    (urls(prefix="/edge", inherited="/edge"), "/edge/x", None),
    # preserve_host: the origin the upstream believes it has is mapped as its own
    (ALIAS, "http://localhost:45444/me", f"{PUBLIC}/plain/me"),
    (ALIAS, "HTTP://LocalHost:45444/me?x#y", f"{PUBLIC}/plain/me?x#y"),
    (ALIAS, "http://localhost:45444", f"{PUBLIC}/plain"),
    (ALIAS, "//localhost:45444/me", "//api.example.com/plain/me"),
    (ALIAS, "http://localhost:45444/plain/me", f"{PUBLIC}/plain/me"),
    (ALIAS, "http://127.0.0.1:19003/me", f"{PUBLIC}/plain/me"),  # its own origin still is
    (ALIAS, "https://localhost:45444/me", None),  # not the upstream's scheme
    (ALIAS, "http://localhost:45445/me", None),
    (ALIAS, "http://localhost/me", None),
    (ALIAS, "//localhost/me", None),
    (ALIAS, "http://localhost:45444/../admin", None),
    (ALIAS, "/me", "/plain/me"),
    (ALIAS_BASED, "http://localhost:45444/base/me", f"{PUBLIC}/plain/me"),
    (ALIAS_BASED, "http://localhost:45444/other", None),  # not under the base
    (SELF, "https://api.example.com/me", f"{PUBLIC}/plain/me"),
    (SELF, "//api.example.com/me", "//api.example.com/plain/me"),
    (SELF, "https://API.example.com:443/plain/me", None),
    (SELF, f"{PUBLIC}/plain", None),
    (SELF_BARE, f"{PUBLIC}/me", None),  # the public origin, no prefix: byte for byte
    (SELF_BARE, "HTTPS://API.EXAMPLE.COM:443/me", None),
    (SELF_BARE, "//api.example.com", None),
]


@pytest.mark.parametrize(("urlmap", "url", "expected"), TABLE)
def test_url_forms(urlmap: UrlMap, url: str, expected: str | None) -> None:
    got = urlmap.url(url)
    assert got == (url if expected is None else expected)
    if expected is None:
        assert got is url  # the very same string, byte for byte
    assert urlmap.url(got) == got  # idempotent


def test_the_public_origin_reads_as_a_path_when_it_is_the_upstreams_too() -> None:
    same = url_map(parse_upstream("http://shared:8080"), "/svc", "http://shared:8080")
    assert same is not None
    assert same.url("http://shared:8080/x") == "http://shared:8080/svc/x"
    assert same.url("http://shared:8080/svc/x") == "http://shared:8080/svc/x"
    assert same.url("/x") == "/svc/x"  # a path is still the upstream's


def test_the_host_sent_upstream_is_read_as_an_origin_or_not_at_all() -> None:
    assert urls(host="a,b").alias is None
    assert urls(host="").alias is None
    assert urls(host="127.0.0.1:19003").alias is None  # its own: nothing more
    assert urls(host="[0::1]:80").alias == urls(host="[::1]").alias is not None
    assert urls(prefix="/svc", inherited="/other").inherited == ""  # not its start: ignored


def test_no_public_origin_means_no_url_rewriting() -> None:
    assert url_map(parse_upstream("http://up:1"), "", "") is None
    assert url_map(parse_upstream("http://up:1"), "", "not an origin") is None


# --- Refresh --------------------------------------------------------------------------

REFRESH = [
    ("5; url=/get", "5; url=/svc/get"),
    ("5;url=/get", "5;url=/svc/get"),
    ("5 ; URL = /get", "5 ; URL = /svc/get"),
    ("0; Url='/get'", "0; Url='/svc/get'"),
    ('0; url="/get" trailing', '0; url="/svc/get" trailing'),
    ("0;url='/get", "0;url='/svc/get"),  # unclosed quote: to the end
    ("3, /get", "3, /svc/get"),
    ("3 /get", "3 /svc/get"),
    ("3;/get", "3;/svc/get"),
    ("1.5; url=/get", "1.5; url=/svc/get"),
    (".5; url=/get", ".5; url=/svc/get"),
    ("  5;   url=/get  ", "  5;   url=/svc/get  "),
    ("5; url=http://127.0.0.1:19003/get", f"5; url={PUBLIC}/svc/get"),
    ("5; ur=/get", None),  # 'ur=/get' is the URL: relative, untouched
    ("5; u", None),
    ("5", None),  # no URL
    ("5;", None),
    ("x; url=/get", None),  # not a refresh
    ("5x; url=/get", None),
    ("5; url=http://evil.example/", None),
]


@pytest.mark.parametrize(("value", "expected"), REFRESH)
def test_refresh(value: str, expected: str | None) -> None:
    assert rewrite_refresh(value, STRIPPED) == (value if expected is None else expected)


def test_refresh_spans() -> None:
    assert refresh_url_span("5") is None
    assert refresh_url_span("5; url=/a") == (7, 9)
    assert refresh_url_span("0; url='/a' b") == (8, 10)


# --- Link -----------------------------------------------------------------------------

LINK = [
    ('</get>; rel="next"', '</svc/get>; rel="next"'),
    (
        '</a>; rel="next", <http://127.0.0.1:19003/b>; rel=prev',
        f'</svc/a>; rel="next", <{PUBLIC}/svc/b>; rel=prev',
    ),
    (
        '</a>; title="x, <not-a-link>", </b>; rel=x',
        '</svc/a>; title="x, <not-a-link>", </svc/b>; rel=x',
    ),
    ('</a>; title="q\\"uote, </c>", </b>', '</svc/a>; title="q\\"uote, </c>", </svc/b>'),
    (
        "<https://cdn.example/x.css>; rel=preload, </x>",
        "<https://cdn.example/x.css>; rel=preload, </svc/x>",
    ),
    ("  ,, </a>;rel=a,</b>", "  ,, </svc/a>;rel=a,</svc/b>"),
    ('</a>; title="unclosed, </b>', '</svc/a>; title="unclosed, </b>'),
    ("garbage, </b>", "garbage, </svc/b>"),
    ("</a", None),
    ("<rel/x>; rel=a", None),
]


@pytest.mark.parametrize(("value", "expected"), LINK)
def test_link(value: str, expected: str | None) -> None:
    assert rewrite_link(value, STRIPPED) == (value if expected is None else expected)


def test_link_spans() -> None:
    assert link_url_spans("</a>, </b>") == [(1, 3), (7, 9)]


# --- Set-Cookie -----------------------------------------------------------------------

PATHS = MappingProxyType({"/two/": "/", "/": "/svc/"})
DOMAINS = MappingProxyType({"legacy.internal": "api.example.com"})
COOKIES = [
    ("sid=1; Path=/", "sid=1; Path=/svc/"),
    ("sid=1; path=/x; HttpOnly", "sid=1; path=/svc/x; HttpOnly"),
    ("sid=1;Path = /x ;Secure", "sid=1;Path = /svc/x ;Secure"),
    ("sid=1; Path=/two/some/uri/", "sid=1; Path=/some/uri/"),  # the first match wins
    ("sid=1; PATH=/a; Path=/b", "sid=1; PATH=/svc/a; Path=/svc/b"),
    ("sid=1; Domain=legacy.internal", "sid=1; Domain=api.example.com"),
    ("sid=1; domain=.LEGACY.Internal; Path=/", "sid=1; domain=.api.example.com; Path=/svc/"),
    ("sid=1; Domain=other.internal", None),
    ("sid=1; Domain=sub.legacy.internal", None),
    ("sid=1; Path=relative", None),
    ("sid=1; Path=", None),
    ("sid=1; Path", None),
    ("Path=/; Domain=x", None),  # the cookie's own name and value are never attributes
    ("sid=Path=/; Max-Age=5", None),
    ('sid="a;b"; Expires=Wed, 21 Oct 2015 07:28:00 GMT', None),
    ("sid=1; Xpath=/", None),
]


@pytest.mark.parametrize(("value", "expected"), COOKIES)
def test_set_cookie(value: str, expected: str | None) -> None:
    assert rewrite_set_cookie(value, PATHS, DOMAINS) == (value if expected is None else expected)


# Behind a trusted proxy that strips /edge: a mapped Path is in corsproxy's URL space.
EDGE_COOKIES = [
    ("sid=1; Path=/", "sid=1; Path=/edge/svc/"),
    ("sid=1; path=/x; HttpOnly", "sid=1; path=/edge/svc/x; HttpOnly"),
    ("sid=1; Path=/two/a", "sid=1; Path=/edge/a"),
    ("sid=1; Domain=legacy.internal", "sid=1; Domain=api.example.com"),
    ("sid=1; Path=relative", None),  # unmapped: untouched (nginx's semantics)
    ("sid=1; Secure", None),
]


@pytest.mark.parametrize(("value", "expected"), EDGE_COOKIES)
def test_a_mapped_cookie_path_gets_the_inherited_prefix(value: str, expected: str | None) -> None:
    got = rewrite_set_cookie(value, PATHS, DOMAINS, "/edge")
    assert got == (value if expected is None else expected)
    route = Route(
        "fl",
        "/fl",
        parse_upstream("http://127.0.0.1:19003"),
        policy(),
        strip_prefix=True,
        cookie_path=PATHS,
        cookie_domain=DOMAINS,
    )
    rewrite = response_rewrite(route, PUBLIC, "/edge")
    assert rewrite is not None
    assert rewrite.header("Set-Cookie", value) == got
    assert response_rewrite(route, PUBLIC) is not None
    unmapped = rewrite_set_cookie(value, MappingProxyType({"/nothing": "/x"}), DOMAINS, "/edge")
    assert "/edge" not in unmapped


def test_response_rewrite_touches_only_its_headers() -> None:
    route = Route(
        "svc",
        "/svc",
        parse_upstream("http://127.0.0.1:19003"),
        policy(),
        strip_prefix=True,
        cookie_path=PATHS,
    )
    rewrite = response_rewrite(route, PUBLIC)
    assert rewrite is not None
    headers = [
        ("Location", "/get"),
        ("content-location", " http://127.0.0.1:19003/x "),
        ("Refresh", "0; url=/r"),
        ("Link", "</l>; rel=next"),
        ("Set-Cookie", "a=1; Path=/"),
        ("X-Location", "/get"),
        ("Content-Security-Policy", "default-src http://127.0.0.1:19003/"),
    ]
    assert rewrite.headers(headers) == [
        ("Location", "/svc/get"),
        ("content-location", f" {PUBLIC}/svc/x "),
        ("Refresh", "0; url=/svc/r"),
        ("Link", "</svc/l>; rel=next"),
        ("Set-Cookie", "a=1; Path=/svc/"),
        ("X-Location", "/get"),
        ("Content-Security-Policy", "default-src http://127.0.0.1:19003/"),
    ]
    off = response_rewrite(
        Route("x", "/x", route.upstream, policy(), strip_prefix=True, rewrite_redirects=False),
        PUBLIC,
    )
    assert off is None  # rewrite_redirects: false and no cookie maps: nothing at all
    cookies_only = response_rewrite(
        Route("x", "/x", route.upstream, policy(), rewrite_redirects=False, cookie_path=PATHS),
        PUBLIC,
    )
    assert cookies_only is not None
    assert cookies_only.headers(headers[:1] + headers[4:5]) == [
        ("Location", "/get"),
        ("Set-Cookie", "a=1; Path=/svc/"),
    ]


def test_no_header_gets_a_protocol_relative_url_from_a_path() -> None:
    """Base path `/base`, no prefix put back: the upstream's same-origin `/base//evil/`
    would be `//evil/` (another host for a browser) in every URL header: kept as sent."""
    rewrite = ResponseRewrite(BASE_SLASH)
    evil = "/base//evil.example/"
    headers = [
        ("Location", evil),
        ("Content-Location", evil),
        ("Refresh", f"0; url={evil}"),
        ("Link", f"<{evil}>; rel=next, </base/ok>; rel=prev"),
    ]
    assert rewrite.rewritten(headers) == (
        [*headers[:3], ("Link", f"<{evil}>; rel=next, </ok>; rel=prev")],
        False,
    )


def test_only_an_absolute_rewrite_makes_the_answer_vary_on_host() -> None:
    rewrite = ResponseRewrite(STRIPPED, PATHS)
    absolute = ("Location", "http://127.0.0.1:19003/x")
    assert rewrite.rewritten([("Location", "/x")])[1] is False
    assert rewrite.rewritten([("Set-Cookie", "a=1; Path=/")])[1] is False
    assert rewrite.rewritten([("Location", "http://other/x")])[1] is False
    assert rewrite.rewritten([absolute])[1] is True
    assert rewrite.rewritten([("Link", "</a>, <//127.0.0.1:19003/b>")])[1] is True
    assert rewrite.rewritten([("Refresh", "1;url=http://127.0.0.1:19003/")])[1] is True
    # a rewrite the field-value guard refused wrote nothing
    bad = ResponseRewrite(UrlMap(STRIPPED.upstream, "", "", None, "http://a\r\nX: 1"))
    assert bad.rewritten([absolute]) == ([absolute], False)
    assert with_vary_host([("A", "1"), ("Vary", "Origin"), ("vary", "accept, host")]) == [
        ("A", "1"),
        ("Vary", "Origin, accept, host"),
    ]
    assert with_vary_host([("Vary", "*")]) == [("Vary", "*")]
    assert with_vary_host([("A", "1")]) == [("A", "1"), ("Vary", "Host")]


def test_a_rewritten_value_is_never_unclean() -> None:
    """The guard behind the construction: a public origin that somehow held a control
    character leaves the upstream's value as it was."""
    bad = UrlMap(STRIPPED.upstream, "", "/svc", None, "http://a\r\nX-Evil: 1")
    rewrite = ResponseRewrite(bad)
    value = "http://127.0.0.1:19003/x"
    assert bad.url(value) != value  # the map alone would splice it in ...
    assert rewrite.header("Location", value) == value  # ... the header guard refuses


# --- properties -----------------------------------------------------------------------

URL_CHARS = st.sampled_from(
    [*list("/:?#@[]%.-_~!$&'()*+,;=aAzZ09 \\\t\"<>"), "//", "http://", "..", "%2e", "%2E"]
)
UPSTREAM_URLS = st.sampled_from(
    [
        "http://127.0.0.1:19003",
        "HTTP://127.0.0.1:19003",
        "//127.0.0.1:19003",
        "http://127.0.0.1:19003/api",
        "",
        "/",
        "/api",
        "/api/",
        "//127.0.0.1",
        PUBLIC,
        "http://localhost:45444",
        "//localhost:45444",
        "https://api.example.com:443",
        "//api.example.com",
        "/djp",
        "/edge",
    ]
)
MAPS = st.sampled_from(
    [
        PLAIN,
        STRIPPED,
        BASED,
        urls("http://127.0.0.1:19003/api", "/s/t"),
        urls("http://127.0.0.1:19003/api"),
        urls("http://127.0.0.1:19003/api", "/"),
        EDGE,
        EDGE_BASED,
        urls("http://127.0.0.1:19003/api", "/edge/s/t", inherited="/edge"),
        ALIAS,
        ALIAS_BASED,
        SELF,
        SELF_BARE,
    ]
)
CONTROL = {chr(c) for c in range(32) if c != 9} | {"\x7f"}


@settings(max_examples=600, deadline=None)
@given(MAPS, UPSTREAM_URLS, st.lists(URL_CHARS, max_size=12).map("".join))
@example(STRIPPED, "http://127.0.0.1:19003", "")
@example(BASED, "/api", "/x")
@example(urls("http://127.0.0.1:19003/api"), "/api/", "/evil.example")
@example(STRIPPED, "/", "../x")
def test_properties(urlmap: UrlMap, head: str, tail: str) -> None:
    url = head + tail
    got = urlmap.url(url)
    assert urlmap.url(got) == got, "idempotent"
    assert not CONTROL & set(got)
    if got is url:
        return
    assert got != url
    # Never a network-path reference made from a path (a browser goes to that host) ...
    if got.startswith(("//", "/\\")):
        assert url.startswith("//") and urlsplit(got).netloc == "api.example.com"
    # ... and never a URL that resolves (dot segments, %2e as browsers read it) elsewhere
    # than on the public origin, under the prefix.
    resolved = urlsplit(urljoin(f"{PUBLIC}/a/b/c", re.sub("%2e", ".", got, flags=re.I)))
    assert resolved.netloc == "api.example.com"
    if urlmap.prefix:
        path = resolved.path.lower()
        assert path == urlmap.prefix.lower() or path.startswith(urlmap.prefix.lower() + "/")
    # A rewritten URL parses, and is on the public origin or a path under the prefix.
    parts = urlsplit(got)
    if got.startswith("/") and not got.startswith("//"):
        assert parts.scheme == "" and parts.netloc == ""
        if urlmap.prefix:
            assert got.lower().startswith(urlmap.prefix.lower())
    else:
        assert parts.scheme == ("" if got.startswith("//") else "https")
        assert parts.netloc == "api.example.com"
        assert parts.path.startswith(urlmap.prefix)


@settings(max_examples=600, deadline=None)
@given(
    st.sampled_from(["", "/", "/api", "/me", "?q", "#f", "//x", "/plain"]),
    st.lists(URL_CHARS, max_size=12).map("".join),
)
def test_the_public_origin_as_the_upstreams_belief_changes_nothing(path: str, tail: str) -> None:
    """preserve_host with the Host that makes the public origin, no prefix, no base path:
    every URL on that origin, however written, leaves byte for byte."""
    for head in (
        PUBLIC,
        "HTTPS://API.example.com:443",
        "//api.example.com",
        "https://api.example.com:",
    ):
        url = head + path + tail
        assert SELF_BARE.url(url) is url
        assert ResponseRewrite(SELF_BARE).rewritten([("Location", url)]) == (
            [("Location", url)],
            False,
        )


HEADER_TEXT = st.text(
    alphabet=st.sampled_from([*list("<>;,=\"'\\ /:aurlURLPathDomain.0123456789"), "\t"]),
    max_size=40,
)


@settings(max_examples=600, deadline=None)
@given(HEADER_TEXT)
def test_header_parsers_never_break_a_value(value: str) -> None:
    """Whatever the header holds: no exception, no control byte, and the parts outside the
    URLs stay as they were (only spans the parsers found change)."""
    rewrite = ResponseRewrite(STRIPPED, PATHS, DOMAINS)
    for name in ("Location", "Refresh", "Link", "Set-Cookie"):
        got = rewrite.header(name, value)
        assert not CONTROL & set(got)
        assert rewrite.header(name, value) == got
        if name == "Refresh" and (span := refresh_url_span(value)) is not None:
            start, end = span
            assert got.startswith(value[:start]) and got.endswith(value[end:])
        if name == "Link":
            spans = link_url_spans(value)
            if not spans:
                assert got == value


def test_utf8_text_in_a_header_does_not_stop_its_rewrite() -> None:
    """UTF-8 header values reach the rewrite as text above U+00FF since the relay reads them
    as UTF-8; the final clean-value check refused them and relayed the upstream's value
    (the internal address) as it was (outside review, second round)."""
    route = Route(
        "svc",
        "/svc",
        parse_upstream("http://127.0.0.1:19003"),
        policy(),
        strip_prefix=True,
        cookie_path=PATHS,
    )
    rewrite = response_rewrite(route, PUBLIC)
    assert rewrite is not None
    assert rewrite.header("Location", "http://127.0.0.1:19003/caf€") == f"{PUBLIC}/svc/caf€"
    link = '<http://127.0.0.1:19003/next>; rel=next; title="Prix €"'
    assert rewrite.header("Link", link) == f'<{PUBLIC}/svc/next>; rel=next; title="Prix €"'
    assert rewrite.header("Set-Cookie", "n=€; Path=/") == "n=€; Path=/svc/"
    assert rewrite.header("Location", "http://127.0.0.1:19003/a\x01") == (
        "http://127.0.0.1:19003/a\x01"  # never a control character out of a rewrite
    )
