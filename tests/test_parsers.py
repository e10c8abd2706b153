"""Pure parsers: Access-Control-Request-Headers, request origins, allow_origins entries."""

from __future__ import annotations

import tracemalloc

import pytest

from corsproxy.policy.cors import parse_request_headers
from corsproxy.policy.origins import (
    Origin,
    OriginEntryError,
    browser_ipv4,
    browser_ipv6,
    compile_origin_entry,
    ends_in_a_number,
    parse_origin,
    shared_suffix,
)

ACRH_CASES = [
    (["content-type"], ("content-type",)),
    (["authorization,content-type"], ("authorization", "content-type")),
    (["Content-Type , X-Requested-With"], ("content-type", "x-requested-with")),  # A57
    (["authorization", "content-type"], ("authorization", "content-type")),  # P6
    (["authorization\t", " ", " content-type"], ("authorization", "content-type")),  # P7
    (["a,a,A"], ("a",)),
    ([""], ()),
    ([], ()),
    ([",,,"], ()),
    (["x-a,,x-b"], ("x-a", "x-b")),
]


@pytest.mark.parametrize(("lines", "names"), ACRH_CASES)
def test_acrh_parsing(lines: list[str], names: tuple[str, ...]) -> None:
    assert parse_request_headers(lines) == names


@pytest.mark.parametrize(
    "lines",
    [
        ["," * (1 << 20)],  # P9: a megabyte of commas
        [","] * 1000,  # P9: a thousand lines of commas
        ["," * 17],  # more empty elements than a gateway ever makes
        ["x" * 8000],  # A58: one huge token
        ["a" * 300 + ",b"],
        [",".join(f"x-{i}" for i in range(65))],  # more names than any page sends
        ["x y"],
        ["x/y"],
        ['"x"'],
        ["x-é"],
    ],
    ids=lambda v: repr(v)[:30],
)
def test_acrh_malformed_or_oversized_is_refused(lines: list[str]) -> None:
    assert parse_request_headers(lines) is None


@pytest.mark.parametrize(
    "value",
    ["," * (1 << 20), ", " * (1 << 19), "a," * (1 << 19), "a" * (1 << 20)],
    ids=["commas", "comma-space", "names", "one-token"],
)
def test_acrh_parsing_work_is_bounded(value: str) -> None:
    """rs/cors#170: a megabyte of commas cost 121 MB of allocations there. Here the
    parser must give up after a bounded prefix, so it allocates almost nothing."""
    tracemalloc.start()
    try:
        parse_request_headers([value])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 64 * 1024


ORIGINS = [
    ("https://app.example.com", Origin("https", "app.example.com", None)),
    ("https://APP.Example.COM", Origin("https", "app.example.com", None)),
    ("HTTPS://app.example.com", Origin("https", "app.example.com", None)),
    ("https://app.example.com:443", Origin("https", "app.example.com", None)),
    ("http://app.example.com:443", Origin("http", "app.example.com", 443)),
    ("http://localhost:5173", Origin("http", "localhost", 5173)),
    ("http://[::1]:3000", Origin("http", "[::1]", 3000)),
    ("http://127.0.0.1", Origin("http", "127.0.0.1", None)),
    ("chrome-extension://abcdefgh", Origin("chrome-extension", "abcdefgh", None)),
    ("https://xn--bcher-kva.example", Origin("https", "xn--bcher-kva.example", None)),
]


@pytest.mark.parametrize(("value", "parsed"), ORIGINS)
def test_parse_origin(value: str, parsed: Origin) -> None:
    assert parse_origin(value) == parsed


@pytest.mark.parametrize(
    "value",
    [
        "",
        "null",
        "app.example.com",
        "https://",
        "https://app.example.com/",
        "https://app.example.com/x",
        "https://app.example.com?x",
        "https://user@app.example.com",
        "https://app.example.com:",
        "https://app.example.com:0",
        "https://app.example.com:065",
        "https://app.example.com:65536",
        "https://app..example.com",
        "https://.example.com",
        "https://app.example.com.",
        "https://-a.example.com",
        "https://bücher.example",
        "https://a b.example",
        "https://[::1",
        "https://[zz]",
        "http://[c:1:]:3000",  # found by the atheris fuzzer: the IPv6 grammar alone let it by
        "http://[1:2:3:4:5:6:7:8:9]",
        "1http://x",
        "https://" + "a" * 1100,
    ],
)
def test_parse_origin_refuses_non_origins(value: str) -> None:
    assert parse_origin(value) is None


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("app.example.com", "no scheme"),
        ("https://app.example.com/", "path, query, fragment"),
        ("https://app.example.com/api", "path, query, fragment"),
        ("https://app.example.com?x=1", "path, query, fragment"),
        ("https://u:p@app.example.com", "path, query, fragment"),
        ("https://*.com", "top-level domain"),
        ("https://*.co.uk", "anyone who can register"),
        ("https://*.github.io", "anyone who can register"),
        ("https://*.s3.amazonaws.com", "anyone who can register under '.s3.amazonaws.com'"),
        ("https://*.amazonaws.com", "anyone who can register under '.compute-1.amazonaws"),
        ("https://*.blogspot.com", "anyone who can register"),
        ("https://*.com.au", "anyone who can register"),
        ("http://[0:0:0:0:0:0:0:1]", "writes the address [::1]"),
        ("http://0x7f.0.0.1", "writes the address 127.0.0.1"),
        ("http://127.1", "writes the address 127.0.0.1"),
        ("http://017.0.0.1", "writes the address 15.0.0.1"),
        ("http://2130706433:8080", "writes the address 127.0.0.1"),
        ("http://[::ffff:127.0.0.1]", "writes the address [::ffff:7f00:1]"),
        ("http://1.2.3.4.5", "not a valid IPv4 address"),
        ("http://[1::2::3]", "not a valid IPv6 address"),
        ("http://*.0.0.1", "wildcard into an IP address"),
        ("https://*example.com", "not a whole leading label"),
        ("https://*", "not a whole leading label"),
        ("h*", "no scheme"),
        ("https://a.*.example.com", "not a whole leading label"),
        ("https://*.example.com:99999", "bad port"),
        ("regex:https://(x", "does not compile"),
        ("regex:", "empty regex"),
        ("https://bücher.example", "non-ASCII"),
        (" https://a.example", "whitespace"),
        ("https://a_b:1x", "not a serialized origin"),
    ],
)
def test_bad_origin_entries(entry: str, message: str) -> None:
    with pytest.raises(OriginEntryError) as info:
        compile_origin_entry(0, entry)
    assert message in info.value.message
    assert info.value.hint


@pytest.mark.parametrize(
    ("entry", "warns"),
    [
        (r"regex:https://app\.example\.com", False),
        ("regex:https://app.example.com", True),  # O9: unescaped dot
        (r"regex:https://.*\.example\.com", False),  # `.*` is meant as a wildcard
        (r"regex:https://[a.]+\.example\.com", False),  # a dot in a class is literal
        ("https://*.example.com", False),
    ],
)
def test_origin_entry_warnings(entry: str, warns: bool) -> None:
    _, warnings = compile_origin_entry(0, entry)
    assert bool(warnings) is warns


@pytest.mark.parametrize(
    "entry",
    [
        "https://*.example.com",
        "https://*.example.co.uk",  # registrable under a public suffix: the operator's own
        "https://*.alice.github.io",
        "https://*.city.kawasaki.jp",  # a PSL exception: registrable, not a suffix
        "https://*.app.localhost",
        "http://127.0.0.1:8080",
        "http://[::1]:3000",
        "http://[::FFFF:7F00:1]",  # folded to lower case, as hosts are
        "http://10.0.0.255:*",
        "https://0x7f.example",  # ends in a name, not a number
    ],
)
def test_good_origin_entries_load(entry: str) -> None:
    compile_origin_entry(0, entry)


# The hand-made list the Public Suffix List replaced: each stays refused, except glitch.me,
# which left the PSL when Glitch stopped hosting projects.
FORMER_SHARED_SUFFIXES = [
    "github.io", "gitlab.io", "herokuapp.com", "vercel.app", "netlify.app", "pages.dev",
    "workers.dev", "web.app", "firebaseapp.com", "appspot.com", "azurewebsites.net",
    "cloudfront.net", "amazonaws.com", "onrender.com", "fly.dev", "repl.co", "ngrok.io",
    "ngrok-free.app", "blogspot.com", "co.uk", "com.au", "ac.jp", "or.jp", "ne.jp", "go.jp",
]  # fmt: skip


@pytest.mark.parametrize("suffix", FORMER_SHARED_SUFFIXES)
def test_wildcards_over_shared_suffixes_stay_refused(suffix: str) -> None:
    assert shared_suffix(suffix) is not None
    with pytest.raises(OriginEntryError, match="anyone who can register"):
        compile_origin_entry(0, f"https://*.{suffix}")


@pytest.mark.parametrize(
    ("host", "address"),
    [
        # WHATWG URL's IPv4 parser, as browsers apply it to a host that ends in a number.
        ("127.0.0.1", "127.0.0.1"),
        ("127.1", "127.0.0.1"),
        ("127.0.1", "127.0.0.1"),
        ("0x7f.0.0.1", "127.0.0.1"),
        ("0X7F.1", "127.0.0.1"),
        ("017.0.0.1", "15.0.0.1"),
        ("2130706433", "127.0.0.1"),
        ("0x", "0.0.0.0"),
        ("1.2.3.256", None),
        ("1.2.65536", None),
        ("4294967296", None),
        ("1.2.3.4.5", None),
        ("08.1.1.1", None),
        ("a.1", None),
    ],
)
def test_ipv4_hosts_read_as_browsers_read_them(host: str, address: str | None) -> None:
    assert ends_in_a_number(host)
    assert browser_ipv4(host) == address


@pytest.mark.parametrize(
    ("body", "serialized"),
    [
        ("0:0:0:0:0:0:0:1", "::1"),
        ("::1", "::1"),
        ("1:0:0:0:0:0:0:0", "1::"),
        ("0:0:0:0:0:0:0:0", "::"),
        ("1:0:1:1:1:1:1:1", "1:0:1:1:1:1:1:1"),  # one zero piece is not compressed
        ("1:0:0:1:0:0:0:1", "1:0:0:1::1"),  # the longest run
        ("1:0:0:1:0:0:1:1", "1::1:0:0:1:1"),  # the first of equal runs
        ("2001:DB8::0001", "2001:db8::1"),
        ("::ffff:127.0.0.1", "::ffff:7f00:1"),
        ("1::2::3", None),
        ("fe80::1%eth0", None),
    ],
)
def test_ipv6_hosts_serialize_as_browsers_serialize_them(body: str, serialized: str | None) -> None:
    assert browser_ipv6(body) == serialized
