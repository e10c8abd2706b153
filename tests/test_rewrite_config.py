"""The config keys of issue 14's sections 1 and 2: preserve_host's new default, and
rewrite_redirects, cookie_path and cookie_domain (defaults, inheritance, file:line errors)."""

from __future__ import annotations

import textwrap

import jsonschema
import pytest
import yaml

from corsproxy.config import Config, ConfigError, json_schema, parse_config


def load(text: str) -> Config:
    return parse_config(textwrap.dedent(text), "cfg.yaml", {})


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load(text)
    return [str(d) for d in info.value.diagnostics]


def test_defaults_preserve_the_host_and_rewrite_redirects() -> None:
    config = load(
        """\
        upstream: http://u:1
        routes:
          - path_prefix: /a
        """
    )
    assert config.preserve_host is True
    assert config.rewrite_redirects is True
    assert dict(config.cookie_path) == dict(config.cookie_domain) == {}
    for route in (config.routes.default, *config.routes.routes):
        assert route is not None
        assert route.preserve_host is True
        assert route.rewrite_redirects is True
        assert dict(route.cookie_path) == dict(route.cookie_domain) == {}


def test_routes_inherit_the_top_level_values_and_may_replace_them() -> None:
    config = load(
        """\
        upstream: http://u:1
        preserve_host: false
        rewrite_redirects: false
        cookie_path: {"/": "/svc/", "/a/": "/b/"}
        cookie_domain: {".Legacy.internal": "api.example.com"}
        routes:
          - path_prefix: /inherits
          - path_prefix: /own
            preserve_host: true
            rewrite_redirects: true
            cookie_path: {"/x/": "/y/"}
            cookie_domain: {}
        """
    )
    default = config.routes.default
    inherits, own = config.routes.routes
    assert default is not None
    for route in (default, inherits):
        assert (route.preserve_host, route.rewrite_redirects) == (False, False)
        assert list(route.cookie_path.items()) == [("/", "/svc/"), ("/a/", "/b/")]  # in order
        assert dict(route.cookie_domain) == {".Legacy.internal": "api.example.com"}
    assert (own.preserve_host, own.rewrite_redirects) == (True, True)
    assert dict(own.cookie_path) == {"/x/": "/y/"}  # replaced as a whole, not merged
    assert dict(own.cookie_domain) == {}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            'cookie_path: {"svc/": "/x/"}',
            "cfg.yaml:2: cookie_path.svc/: cookie path 'svc/' does not start with '/' "
            "(write '/svc/')",
        ),
        (
            'cookie_path: {"/": "svc"}',
            "cfg.yaml:2: cookie_path./: cookie path 'svc' does not start with '/' (write '/svc')",
        ),
        (
            'cookie_path: {"/": "/a;b"}',
            "cfg.yaml:2: cookie_path./: cookie path '/a;b' holds a space, ',', ';' or a "
            "control character (write a plain path such as /svc/)",
        ),
        (
            'cookie_path: {"/": "/a b"}',
            "cfg.yaml:2: cookie_path./: cookie path '/a b' holds a space",
        ),
        (
            'cookie_path: {"/": 5}',
            "cfg.yaml:2: cookie_path./: expected a string (quote the value)",
        ),
        (
            'cookie_path: "/"',
            "cfg.yaml:2: cookie_path: expected a mapping of from: to values",
        ),
        (
            'cookie_domain: {"a b": "x.example"}',
            "cfg.yaml:2: cookie_domain.a b: 'a b' is not a domain name (write a host name",
        ),
        (
            'cookie_domain: {"legacy.internal": "x..example"}',
            "cfg.yaml:2: cookie_domain.legacy.internal: 'x..example' is not a domain name",
        ),
        (
            'cookie_domain: {"legacy.internal": "a", ".LEGACY.internal": "b"}',
            "cfg.yaml:2: cookie_domain..LEGACY.internal: '.LEGACY.internal' is already "
            "mapped on line 2 (keep one)",
        ),
        (
            "rewrite_redirects: yes please",
            "cfg.yaml:2: rewrite_redirects: expected true or false, got 'yes please'",
        ),
        (
            "rewrite_redirect: false",
            "cfg.yaml:2: rewrite_redirect: unknown key (did you mean 'rewrite_redirects'?)",
        ),
    ],
)
def test_bad_values_are_reported_with_file_line_and_hint(text: str, expected: str) -> None:
    found = problems(f"upstream: http://u:1\n{text}\n")
    assert any(p.startswith(expected) for p in found), found
    # In a route, the key path names the route.
    found = problems(f"upstream: http://u:1\nroutes:\n  - path_prefix: /r\n    {text}\n")
    key = expected.split(": ", 2)[1]
    assert any(f"cfg.yaml:4: routes[0].{key}" in p for p in found), found


def test_the_json_schema_takes_what_the_loader_takes() -> None:
    doc = yaml.safe_load(
        """\
        upstream: http://u:1
        preserve_host: false
        rewrite_redirects: true
        cookie_path: {"/": "/svc/"}
        cookie_domain: {"legacy.internal": "api.example.com"}
        routes:
          - path_prefix: /r
            rewrite_redirects: false
            cookie_path: {"/a/": "/b/"}
        """.replace("        ", "")
    )
    jsonschema.validate(doc, json_schema())
    load(yaml.safe_dump(doc))
    bad = {"upstream": "http://u:1", "cookie_path": {"/": 5}}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, json_schema())
    assert json_schema()["properties"]["preserve_host"]["default"] is True
    assert json_schema()["properties"]["cookie_path"]["default"] == {}
