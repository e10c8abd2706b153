"""Path normalization and route matching: the route is decided on the path that is forwarded."""

from __future__ import annotations

import pytest

from corsproxy.config import Config
from corsproxy.policy.paths import (
    PathError,
    has_other_readings,
    normalize_path,
    readings_of,
    split_target,
)
from corsproxy.policy.routes import AmbiguousPath, Upstream
from tests.helpers import config

# raw path -> (route path, forwarded path)
NORMALIZE = [
    ("/", "/", "/"),
    ("/a/b", "/a/b", "/a/b"),
    ("/a/b/", "/a/b/", "/a/b/"),
    ("//a///b", "/a/b", "/a/b"),
    ("/a/./b", "/a/b", "/a/b"),
    ("/a/../b", "/b", "/b"),
    ("/a/b/..", "/a/", "/a/"),
    ("/a/%2e%2e/b", "/b", "/b"),  # B22: encoded dot segments are dot segments
    ("/a/%2E%2E/b", "/b", "/b"),
    ("/a/.%2e/b", "/b", "/b"),
    ("/a;x=1/../b", "/b", "/b"),
    ("/%7Euser/x", "/~user/x", "/%7Euser/x"),  # decided decoded, forwarded byte for byte
    ("/a%2Fb", "/a%2Fb", "/a%2Fb"),  # B23: %2F stays encoded in both
    ("/a%2fb", "/a%2Fb", "/a%2fb"),
    ("/k%F8benhavn", "/k%F8benhavn", "/k%F8benhavn"),  # Latin-1 is not overlong UTF-8
    ("/%C2%AE/%E0%A0%80/%F0%90%80%80", "/%C2%AE/%E0%A0%80/%F0%90%80%80", None),  # shortest forms
    ("/a/%252e%252e/b", "/a/%252e%252e/b", "/a/%252e%252e/b"),  # B24: decoded at most once
    ("/a%28b%29+c;d", "/a%28b%29+c;d", "/a%28b%29+c;d"),
    ("/caf%C3%A9", "/caf%C3%A9", "/caf%C3%A9"),
]


@pytest.mark.parametrize(("raw", "route", "forward"), NORMALIZE)
def test_normalize(raw: str, route: str, forward: str | None) -> None:
    path = normalize_path(raw)
    assert path.route_path == route
    assert path.forward_path() == (forward or raw)


BAD_PATHS = [
    ("*", "path_not_origin_form"),  # B19: OPTIONS *
    ("http://evil.com/x", "path_not_origin_form"),  # B16: absolute-form
    ("evil.com:443", "path_not_origin_form"),  # B18: authority-form
    ("/foo/bar%", "path_malformed_escape"),  # B25
    ("/foo/bar%1", "path_malformed_escape"),
    ("/foo/%zz", "path_malformed_escape"),
    ("/a%00b", "path_nul"),
    ("/a\x00b", "path_nul"),
    ("/a#frag", "path_fragment"),  # B26
    ("/..", "path_escapes_root"),
    ("/a/../../b", "path_escapes_root"),
    ("/%2e%2e/etc/passwd", "path_escapes_root"),
    ("/a\\b", "path_bad_character"),  # B23: backslash
    ("/a b", "path_bad_character"),
    # overlong UTF-8, decoded once or twice: lenient decoders read these as ASCII
    ("/%C0%AE%C0%AE/x", "path_bad_encoding"),
    ("/a/..%c0%afb", "path_bad_encoding"),
    ("/%c1%9c", "path_bad_encoding"),
    ("/%E0%80%AE", "path_bad_encoding"),
    ("/%F0%80%80%AE", "path_bad_encoding"),
    ("/%F8%80%80%80%AE", "path_bad_encoding"),
    ("/%FC%80%80%80%80%AE", "path_bad_encoding"),
    ("/%25c0%25ae", "path_bad_encoding"),
    ("/%c0%25ae", "path_bad_encoding"),
]


@pytest.mark.parametrize(("raw", "reason"), BAD_PATHS)
def test_bad_paths_are_400(raw: str, reason: str) -> None:
    with pytest.raises(PathError) as info:
        normalize_path(raw)
    assert info.value.reason == reason


ROUTES = config(
    {
        "upstream": "http://127.0.0.1:9000",
        "cors": {"allow_origins": ["https://a.example"]},
        "routes": [
            {"path_prefix": "/api", "cors": {"allow_origins": ["*"]}},
            {"path_prefix": "/api/admin", "cors": {"allow_origins": ["https://b.example"]}},
            {"path_prefix": "/Admin", "cors": False},
            {"path_prefix": "/a+b", "cors": False},
            {
                "path_prefix": "/reports",
                "upstream": "http://127.0.0.1:9001/base",
                "strip_prefix": True,
            },
            {"path_prefix": "/public", "cors": {"allow_origins": ["*"]}},
        ],
    }
)


def route_of(raw: str) -> str:
    route = ROUTES.routes.match(normalize_path(raw))
    assert route is not None
    return route.path_prefix


@pytest.mark.parametrize(
    ("raw", "prefix"),
    [
        ("/api", "/api"),
        ("/api/", "/api"),
        ("/api/x", "/api"),
        ("/apix", "/"),  # segment boundaries only
        ("/api/admin", "/api/admin"),  # R2: most specific wins
        ("/api/admin/users", "/api/admin"),
        ("/api/administrator", "/api"),
        ("/Admin/x", "/Admin"),
        ("/admin/x", "/Admin"),  # case-insensitive by default (issue 11; R3 is opt-in)
        ("/api/public/../admin/x", "/api/admin"),  # A64: decided on the normalized path
        ("/public/%2e%2e/api/admin", "/api/admin"),
        ("/a+b", "/a+b"),
        ("/other", "/"),  # R6: the default policy applies
        ("/api/v4/projects/group%2Fproject", "/api"),  # %2F inside one route: fine
    ],
)
def test_route_matching(raw: str, prefix: str) -> None:
    assert route_of(raw) == prefix


@pytest.mark.parametrize(
    "raw",
    [
        "/api%2Fadmin/users",  # %2F would be a separator upstream: /api/admin
        "/api%2fadmin",
        "/api/public/..;/admin",  # Tomcat drops ;params: /api/admin
        "/api;x/admin",
        "/a%2Bb",  # R4: a decoding upstream sees /a+b, a cors:false route
        "/public/..%2Fapi/admin",
        "/api/x/%2e%2e%2F..%2Fadmin",
    ],
)
def test_paths_that_read_as_another_route_are_refused(raw: str) -> None:
    with pytest.raises(PathError) as info:
        ROUTES.routes.match(normalize_path(raw))
    assert info.value.reason == "path_ambiguous"


def test_strip_prefix_and_upstream_base_path() -> None:
    path = normalize_path("/reports/2026/%7Eq3")
    route = ROUTES.routes.match(path)
    assert route is not None and route.upstream is not None
    forward = route.forward_path(path)
    assert forward == "/2026/%7Eq3"
    assert (
        route.upstream.url(forward, "a=1;b=%2F+")
        == "http://127.0.0.1:9001/base/2026/%7Eq3?a=1;b=%2F+"
    )
    bare = normalize_path("/reports")
    assert route.forward_path(bare) == "/"


def test_upstream_authority() -> None:
    assert Upstream("http", "legacy", 80).authority == "legacy"
    assert Upstream("https", "legacy", 443).origin == "https://legacy"
    assert Upstream("http", "[::1]", 9000).url("/x") == "http://[::1]:9000/x"


def test_no_default_route_without_top_level_upstream() -> None:
    cfg = config({"routes": [{"path_prefix": "/api", "upstream": "http://127.0.0.1:1"}]})
    assert cfg.routes.match(normalize_path("/other")) is None
    assert cfg.routes.match(normalize_path("/api/x")) is not None


def test_prefixes_differing_in_case_are_two_routes_only_when_case_sensitive() -> None:
    routes = [{"path_prefix": "/Api", "cors": False}, {"path_prefix": "/api"}]
    cfg = config(
        {"upstream": "http://127.0.0.1:9", "routes_case_sensitive": True, "routes": routes}
    )
    assert route_prefix(cfg, "/Api/x") == "/Api"
    assert route_prefix(cfg, "/api/x") == "/api"
    assert route_prefix(cfg, "/API/x") == "/"


# Issue 11: a credentialed default, a lenient /public and a cors:false /internal.
READ = {
    "upstream": "http://127.0.0.1:9",
    "cors": {"allow_origins": ["https://a.example"], "allow_credentials": True},
    "routes": [
        {"path_prefix": "/internal", "cors": False},
        {"path_prefix": "/public", "cors": {"allow_origins": ["*"], "allow_credentials": False}},
        {"path_prefix": "/caf%C3%A9", "cors": False},
        {"path_prefix": "/a/b.c"},
    ],
}
CASE_INSENSITIVE = config(READ)
CASE_SENSITIVE = config({**READ, "routes_case_sensitive": True})
AMBIGUOUS = "400"


def route_prefix(cfg: Config, raw: str) -> str:
    try:
        route = cfg.routes.match(normalize_path(raw))
    except PathError as exc:
        assert exc.reason == "path_ambiguous"
        return AMBIGUOUS
    assert route is not None
    return route.path_prefix


# raw path -> route prefix (or 400) when case-insensitive (the default), when case-sensitive
READINGS = [
    ("/internal/x", "/internal", "/internal"),
    ("/INTERNAL/secret", "/internal", "/"),
    ("/Internal", "/internal", "/"),
    ("/%69nternal/x", "/internal", "/internal"),
    ("/%49nternal/x", "/internal", "/"),
    ("/internals/x", "/", "/"),
    # trailing dots and spaces (IIS, Windows), alone and combined
    ("/internal./x", AMBIGUOUS, AMBIGUOUS),
    ("/INTERNAL./x", AMBIGUOUS, "/"),  # a case-sensitive upstream reads /INTERNAL
    ("/internal%20/x", AMBIGUOUS, AMBIGUOUS),
    ("/internal. ./x".replace(" ", "%20"), AMBIGUOUS, AMBIGUOUS),
    ("/internal...", AMBIGUOUS, AMBIGUOUS),
    ("/internal%2E", AMBIGUOUS, AMBIGUOUS),
    ("/public/..%20/internal", AMBIGUOUS, AMBIGUOUS),  # '.. ' climbs on Windows
    ("/public/.%20./internal", AMBIGUOUS, AMBIGUOUS),
    ("/public/x./y", "/public", "/public"),  # same route either way: fine
    ("/public./x", AMBIGUOUS, AMBIGUOUS),  # the default route here, /public on IIS
    ("/a/b.c./x", AMBIGUOUS, AMBIGUOUS),
    ("/a/b.c/x.", "/a/b.c", "/a/b.c"),
    # NTFS stream suffixes
    ("/internal::$DATA", AMBIGUOUS, AMBIGUOUS),
    ("/internal:$DATA/x", AMBIGUOUS, AMBIGUOUS),
    ("/internal::$INDEX_ALLOCATION/x", AMBIGUOUS, AMBIGUOUS),
    ("/internal:$I30:$INDEX_ALLOCATION/x", AMBIGUOUS, AMBIGUOUS),
    ("/internal:stream:$DATA/x", AMBIGUOUS, AMBIGUOUS),
    ("/internal%3A%3A%24DATA/x", AMBIGUOUS, AMBIGUOUS),
    ("/internal:/x", AMBIGUOUS, AMBIGUOUS),
    ("/internal. ::$DATA/x".replace(" ", "%20"), AMBIGUOUS, AMBIGUOUS),
    ("/internal:named/x", "/", "/"),  # a named stream is another file
    # 8.3 short names (Windows serves the long name for them)
    ("/INTERN~1/x", AMBIGUOUS, AMBIGUOUS),
    ("/intern~12", AMBIGUOUS, AMBIGUOUS),
    ("/IN1A2B~1/x", AMBIGUOUS, AMBIGUOUS),  # the hashed form keeps two characters
    ("/internal/X~1", "/internal", "/internal"),  # inside the route: same route
    ("/other~1/x", "/", "/"),
    ("/a/BC3F~1/x", AMBIGUOUS, AMBIGUOUS),  # /a/b.c
    ("/v1/items:batchGet", "/", "/"),
    # a second decoding
    ("/public%252finternal", AMBIGUOUS, AMBIGUOUS),  # one segment here, /public/internal there
    ("/public%252f..%252finternal/x", AMBIGUOUS, AMBIGUOUS),
    ("/public/%252e%252e/internal/x", AMBIGUOUS, AMBIGUOUS),
    ("/public/%252E%252e/internal/x", AMBIGUOUS, AMBIGUOUS),
    ("/x%252f..%252f..%252finternal", AMBIGUOUS, AMBIGUOUS),
    ("/internal%252e/x", AMBIGUOUS, AMBIGUOUS),  # decoded twice, then the dot dropped
    ("/%2569nternal/x", AMBIGUOUS, AMBIGUOUS),
    ("/public/%25252e%25252e/internal", "/public", "/public"),  # no third decoding
    # the earlier readings, and combined with the new ones
    ("/public/..%5Cinternal", AMBIGUOUS, AMBIGUOUS),
    ("/public/..%255Cinternal", AMBIGUOUS, AMBIGUOUS),
    ("/public/..;x/internal", AMBIGUOUS, AMBIGUOUS),
    ("/internal.;x/y", AMBIGUOUS, AMBIGUOUS),
    ("/internal%3B.x/y", AMBIGUOUS, AMBIGUOUS),
    # case folding beyond ASCII (case-insensitive only)
    ("/caf%C3%A9/x", "/caf%C3%A9", "/caf%C3%A9"),
    ("/CAF%C3%A9/x", "/caf%C3%A9", "/"),
    ("/caf%c3%a9/x", "/caf%C3%A9", "/caf%C3%A9"),  # the escape's hex case is no difference
    ("/CAF%C3%89/x", AMBIGUOUS, "/"),  # 'É': .NET folds it, ASCII folding does not
    ("/%C4%B0nternal", AMBIGUOUS, "/"),  # 'İ'
    ("/%C4%B1nternal", AMBIGUOUS, "/"),  # dotless i
    ("/%EF%BD%89nternal", AMBIGUOUS, "/"),  # fullwidth i (Windows best fit)
    ("/%E2%84%AA", "/", "/"),  # the Kelvin sign near no route
    ("/interna%C5%82", AMBIGUOUS, "/"),  # 'ł' (Windows best fit: 'l')
    ("/%C4%81/x", "/", "/"),  # 'ā' near no route
    # Java trim (Spring AntPathMatcher, CVE-2016-5007), .NET, Python and JavaScript trims
    ("/internal%09/x", AMBIGUOUS, AMBIGUOUS),
    ("/internal%0D%0A", AMBIGUOUS, AMBIGUOUS),
    ("/internal%1F/x", AMBIGUOUS, AMBIGUOUS),
    ("/internal%7F/x", AMBIGUOUS, AMBIGUOUS),
    ("/%20internal/x", AMBIGUOUS, AMBIGUOUS),
    ("/%0Binternal/x", AMBIGUOUS, AMBIGUOUS),
    ("/%09/internal", AMBIGUOUS, AMBIGUOUS),  # trimmed to an empty segment, then merged
    ("/public/%09../internal", AMBIGUOUS, AMBIGUOUS),  # trimmed to '..'
    ("/internal%C2%A0/x", AMBIGUOUS, AMBIGUOUS),
    ("/internal%C2%85/x", AMBIGUOUS, AMBIGUOUS),  # NEL
    ("/internal%E2%80%A8/x", AMBIGUOUS, AMBIGUOUS),  # line separator
    ("/internal%E3%80%80/x", AMBIGUOUS, AMBIGUOUS),
    ("/%EF%BB%BFinternal/x", AMBIGUOUS, AMBIGUOUS),
    ("/internal%E2%80%8B/x", AMBIGUOUS, AMBIGUOUS),
    ("/internal%E2%81%A0/x", AMBIGUOUS, AMBIGUOUS),  # word joiner
    ("/internal%A0/x", AMBIGUOUS, AMBIGUOUS),  # NBSP in Latin-1
    ("/internal%2509/x", AMBIGUOUS, AMBIGUOUS),
    ("/internal.%09/x", AMBIGUOUS, AMBIGUOUS),  # trimmed, then the dot dropped
    ("/internal%09./x", AMBIGUOUS, AMBIGUOUS),
    ("/internal%09;x/y", AMBIGUOUS, AMBIGUOUS),  # params dropped, then trimmed
    ("/internal%09::$DATA/x", AMBIGUOUS, AMBIGUOUS),
    ("/internal%09%3F/x", AMBIGUOUS, AMBIGUOUS),  # cut, then trimmed
    ("/internal%E2%80%8Bx/y", "/", "/"),  # inside the segment: no trim drops it
    ("/public/a%20b", "/public", "/public"),
    ("/public%20x", "/", "/"),
    ("/%20public/x", AMBIGUOUS, AMBIGUOUS),
    # decoded, then cut at '?', '#' or NUL
    ("/internal%3F/x", AMBIGUOUS, AMBIGUOUS),
    ("/internal%3f", AMBIGUOUS, AMBIGUOUS),
    ("/internal%23x", AMBIGUOUS, AMBIGUOUS),
    ("/internal%2500/x", AMBIGUOUS, AMBIGUOUS),
    ("/internal%253F/x", AMBIGUOUS, AMBIGUOUS),
    ("/internal.%3F/x", AMBIGUOUS, AMBIGUOUS),  # cut, then the dot dropped
    ("/public/x%3F/internal", "/public", "/public"),  # cut inside /public: same route
    ("/public%3Fx", AMBIGUOUS, AMBIGUOUS),
    ("/x%3F/internal", "/", "/"),
    ("/internal%25252500/x", "/", "/"),  # no third decoding
    # Windows best fit before the split: separators and dots from compatibility forms
    ("/public%EF%BC%8F..%EF%BC%8Finternal", AMBIGUOUS, AMBIGUOUS),  # fullwidth '/'
    ("/public/%EF%BC%8E%EF%BC%8E/internal", AMBIGUOUS, AMBIGUOUS),  # fullwidth '.'
    ("/public/%E2%80%A4%E2%80%A4/internal", AMBIGUOUS, AMBIGUOUS),  # one dot leader
    ("/public/..%EF%BC%BCinternal", AMBIGUOUS, AMBIGUOUS),  # fullwidth '\'
    ("/public/..%C2%A5internal", AMBIGUOUS, AMBIGUOUS),  # yen: '\' in cp932
    ("/public/..%E2%82%A9internal", AMBIGUOUS, AMBIGUOUS),  # won: '\' in cp949
    ("/public/..%E2%88%95internal", AMBIGUOUS, AMBIGUOUS),  # division slash
    ("/internal%EF%BC%9B/x", AMBIGUOUS, AMBIGUOUS),  # fullwidth ';', then params dropped
    ("/internal%EF%BC%9F/x", AMBIGUOUS, AMBIGUOUS),  # fullwidth '?', then cut
    ("/public/%EF%BC%8Fx", "/public", "/public"),  # inside /public either way
    ("/x%EF%BC%8Finternal", "/", "/"),  # /x/internal: not /internal
    # bytes that are not UTF-8 read as Latin-1
    ("/intern%AAl/x", AMBIGUOUS, "/"),  # 'ª' folds to 'a'
    ("/intern%C2%AAl/x", AMBIGUOUS, "/"),
    ("/k%F8benhavn", "/", "/"),
    # ASP.NET (System.Web) drops cookieless-session segments before routing (CVE-2023-36899)
    ("/(S(x))/internal/x", AMBIGUOUS, AMBIGUOUS),
    ("/(A(abc))/internal/x", AMBIGUOUS, AMBIGUOUS),
    ("/(F(..))/internal", AMBIGUOUS, AMBIGUOUS),
    ("/(S(x)A(y))/internal", AMBIGUOUS, AMBIGUOUS),
    ("/%28S%28x%29%29/internal", AMBIGUOUS, AMBIGUOUS),
    ("/(S(x))/Internal", AMBIGUOUS, "/"),
    ("/public/(S(x))/x", "/public", "/public"),  # inside /public either way
    ("/(x)/internal", "/", "/"),  # not a cookieless segment
    ("/(S(x))/other", "/", "/"),
    # Rails `(.:format)` and Spring suffix patterns serve /internal for /internal.json
    ("/internal.json", AMBIGUOUS, AMBIGUOUS),
    ("/INTERNAL.json", AMBIGUOUS, "/"),
    ("/internal.xml/x", AMBIGUOUS, AMBIGUOUS),
    ("/internal%2Ejson", AMBIGUOUS, AMBIGUOUS),
    ("/public.json", AMBIGUOUS, AMBIGUOUS),
    ("/a/b.c.json", AMBIGUOUS, AMBIGUOUS),
    ("/x/..%2Finternal.json", AMBIGUOUS, AMBIGUOUS),  # decoded, then the suffix dropped
    ("/internal/x.json", "/internal", "/internal"),  # inside /internal: same route
    ("/x.json", "/", "/"),
    ("/a/b.json", "/", "/"),  # /a/b is no prefix
    ("/internal.verylongext", "/", "/"),  # eleven characters: not a format
    ("/internal.js-on", "/", "/"),
]


@pytest.mark.parametrize(("raw", "insensitive", "sensitive"), READINGS)
def test_every_reading_selects_the_same_route_or_the_path_is_refused(
    raw: str, insensitive: str, sensitive: str
) -> None:
    assert route_prefix(CASE_INSENSITIVE, raw) == insensitive
    assert route_prefix(CASE_SENSITIVE, raw) == sensitive


@pytest.mark.parametrize(
    ("raw", "refused"),
    [
        # /reports/x on every reading, but forwarded as /base/..%2Freports/x: /reports/x upstream
        ("/reports/..%2Freports/x", True),
        ("/reports/..%5Creports%5Cx", True),
        ("/reports/%252e%252e%252freports/x", True),
        ("/reports/x/..%2F..%2Freports", True),
        ("/reports/..;/reports/x", True),
        ("/reports/..%20/reports/x", True),
        ("/reports/x/..%2Fy", False),  # stays below the base path
        ("/reports/a%2Fb", False),
        ("/api/x/..%2F..%2Fapi/y", False),  # no base path, nothing stripped: /api/y
    ],
)
def test_a_path_that_climbs_out_of_a_stripped_prefix_or_base_path_is_refused(
    raw: str, refused: bool
) -> None:
    if not refused:
        assert ROUTES.routes.match(normalize_path(raw)) is not None
        return
    with pytest.raises(PathError) as info:
        ROUTES.routes.match(normalize_path(raw))
    assert info.value.reason == "path_ambiguous"
    assert "upstream base path" in str(info.value)


def test_a_top_level_upstream_base_path_is_never_left() -> None:
    cfg = config({"upstream": "http://127.0.0.1:9/base"})
    assert route_prefix(cfg, "/..%2Fx") == AMBIGUOUS
    assert route_prefix(cfg, "/a/..%2F..%2Fb") == AMBIGUOUS
    assert route_prefix(cfg, "/a/..%2Fb") == "/"


def test_the_forwarded_path_keeps_the_client_bytes_whatever_the_case() -> None:
    path = normalize_path("/INTERNAL/%7eSecret")
    route = CASE_INSENSITIVE.routes.match(path)
    assert route is not None and route.path_prefix == "/internal"
    assert route.forward_path(path) == "/INTERNAL/%7eSecret"


def test_a_route_prefix_with_other_readings_is_checked_on_every_path() -> None:
    cfg = config({"upstream": "http://127.0.0.1:9", "routes": [{"path_prefix": "/%C5%BFecret"}]})
    # the long s (U+017F) folds to 's' on .NET: an upstream reads /secret as that route.
    assert route_prefix(cfg, "/secret") == AMBIGUOUS
    assert route_prefix(cfg, "/%C5%BFecret/x") == "/%C5%BFecret"
    assert route_prefix(cfg, "/other") == "/"


def test_an_ambiguous_path_names_both_routes_and_the_reading() -> None:
    with pytest.raises(AmbiguousPath) as info:
        CASE_INSENSITIVE.routes.match(normalize_path("/public/%252e%252e/internal"))
    exc = info.value
    assert exc.route is not None and exc.route.path_prefix == "/public"
    assert exc.other is not None and exc.other.path_prefix == "/internal"
    assert "decoded twice" in exc.reading and "decoded twice" in str(exc)


@pytest.mark.parametrize(
    ("raw", "segments"),
    [
        (("a", "b"), ()),  # no other reading: the fast check says so
        (("a", "B", "c-d_e~"), ()),
        (("a%2Fb",), ("a", "b")),
        (("x.",), ("x",)),
        (("x%20. %20",), ("x",)),
        (("x::$DATA",), ("x",)),
        (("a", "..%20", "b"), ("b",)),
        (("%252e%252e", "b"), ("b",)),
        (("a..;p", "b"), ("a", "b")),
        (("%09a%0D%0A", "b"), ("a", "b")),
        (("%EF%BB%BFa%E3%80%80",), ("a",)),
        (("a%3Fb", "c"), ("a",)),
        (("a%2500b", "c"), ("a",)),
        (("a%23b",), ("a",)),
        (("a%AA",), ("a\xaa",)),  # Latin-1, not U+FFFD
        (("(S(x))", "a"), ("a",)),  # ASP.NET cookieless session: the fast check sees it
        (("(S(x)A(y))", "a"), ("a",)),
        (("(x)", "a(b)"), ()),
    ],
)
def test_readings_of_a_path(raw: tuple[str, ...], segments: tuple[str, ...]) -> None:
    readings = readings_of(raw) if has_other_readings(raw) else []
    if not segments:
        assert readings == []
        return
    seen = {found for _, found in readings}
    assert segments in seen, seen


@pytest.mark.parametrize(
    ("target", "path", "query"),
    [
        ("/x", "/x", None),
        ("/x?", "/x", ""),
        ("/x??", "/x", "?"),
        ("/x?a=1&b", "/x", "a=1&b"),
    ],
)
def test_split_target_keeps_an_empty_query(target: str, path: str, query: str | None) -> None:
    assert split_target(target) == (path, query)
    assert Upstream("http", "u", 80).target(path, query) == target


@pytest.mark.parametrize("target", ["/x#f", "/x?a#f", "/x?#", "/#"])
def test_split_target_refuses_fragments(target: str) -> None:
    with pytest.raises(PathError) as info:
        split_target(target)
    assert info.value.reason == "path_fragment"
