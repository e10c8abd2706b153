"""Path normalization and route matching: the route is decided on the path that is forwarded."""

from __future__ import annotations

import pytest

from corsproxy.paths import PathError, normalize_path
from corsproxy.routes import Upstream
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
    ("/a/%252e%252e/b", "/a/%252e%252e/b", "/a/%252e%252e/b"),  # B24: decoded at most once
    ("/a%28b%29+c;d", "/a%28b%29+c;d", "/a%28b%29+c;d"),
    ("/caf%C3%A9", "/caf%C3%A9", "/caf%C3%A9"),
]


@pytest.mark.parametrize(("raw", "route", "forward"), NORMALIZE)
def test_normalize(raw: str, route: str, forward: str) -> None:
    path = normalize_path(raw)
    assert path.route_path == route
    assert path.forward_path() == forward


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
