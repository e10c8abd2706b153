"""The rule for forwarding headers behind trusted proxies (policy/forwarded.py), table by table,
then as properties: an untrusted peer's forwarding headers never reach the upstream."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from corsproxy.config import ConfigError, load_config
from corsproxy.http import headers as hygiene
from corsproxy.policy.forwarded import (
    NO_PROXIES,
    ForwardedHeaders,
    PublicOrigin,
    TrustedProxies,
    parse_forwarded,
    parse_network,
    public_origin,
    resolve,
)

EDGE = TrustedProxies([parse_network("10.0.0.0/8"), parse_network("2001:db8::/32")])
RFC7239 = ForwardedHeaders.FORWARDED
FORWARDING_NAMES = (
    "X-Forwarded-Proto",
    "X-Forwarded-Host",
    "X-Forwarded-Port",
    "X-Forwarded-Prefix",
    "Forwarded",
)


def sent(view_headers: list[tuple[str, str]]) -> dict[str, str]:
    return {n: v for n, v in view_headers}


# --- the public origin ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("origin", "text"),
    [
        (PublicOrigin("https", "api.example.com", 443), "https://api.example.com"),
        (PublicOrigin("https", "api.example.com", 8443), "https://api.example.com:8443"),
        (PublicOrigin("http", "api.example.com", 443), "http://api.example.com:443"),
        (PublicOrigin("http", "::1", 8080), "http://[::1]:8080"),
        (PublicOrigin("https", "2001:db8::1", 443), "https://[2001:db8::1]"),
    ],
)
def test_serialize(origin: PublicOrigin, text: str) -> None:
    assert origin.serialize() == text


def test_public_origin_from_the_connection_and_host() -> None:
    assert public_origin(False, "Proxy.Example:8080") == PublicOrigin("http", "proxy.example", 8080)
    assert public_origin(True, "proxy.example") == PublicOrigin("https", "proxy.example", 443)
    assert public_origin(True, "[::1]:8443").serialize() == "https://[::1]:8443"
    assert public_origin(False, None, fallback_host="127.0.0.1:8080").port == 8080
    assert public_origin(False, "a b", fallback_host="127.0.0.1:9").host == "127.0.0.1"


def test_untrusted_peer_is_today_exactly() -> None:
    spoof = [(n, "https") for n in FORWARDING_NAMES] + [("X-Forwarded-For", "6.6.6.6")]
    view = resolve("192.0.2.7", False, "proxy.example:8080", spoof, EDGE)
    assert not view.trusted
    assert view.origin == PublicOrigin("http", "proxy.example", 8080)
    assert view.client == "192.0.2.7"
    assert view.upstream_headers() == [
        ("X-Forwarded-Proto", "http"),
        ("X-Forwarded-Host", "proxy.example:8080"),
    ]
    assert view.upstream_headers("/svc")[-1] == ("X-Forwarded-Prefix", "/svc")


def test_trusted_peer_keeps_the_x_forwarded_family() -> None:
    inbound = [
        ("X-Forwarded-Proto", "https, http"),  # the first value: the outermost proxy's
        ("X-Forwarded-Host", "api.example.com"),
        ("X-Forwarded-Host", "inner.example"),
        ("X-Forwarded-Port", "8443"),
        ("X-Forwarded-Prefix", "/edge/"),
        ("X-Forwarded-For", "6.6.6.6, 203.0.113.9, 10.0.0.1"),
        ("Forwarded", "for=6.6.6.6;host=evil.example"),  # passed through by the edge
    ]
    view = resolve("10.0.0.5", False, "corsproxy:8080", inbound, EDGE)
    assert view.trusted
    assert view.origin.serialize() == "https://api.example.com:8443"
    assert view.client == "203.0.113.9"  # rightmost entry that is not a trusted proxy
    assert view.prefix("/svc") == "/edge/svc"
    assert view.upstream_headers("/svc") == [
        ("X-Forwarded-Proto", "https"),
        ("X-Forwarded-Host", "api.example.com"),
        ("X-Forwarded-Port", "8443"),
        ("X-Forwarded-Prefix", "/edge/svc"),
    ]


def test_trusted_peer_forwarded_chain() -> None:
    inbound = [
        ("Forwarded", 'for=198.51.100.17;proto=https;host="api.example.com", for=10.1.1.1'),
        ("Forwarded", 'For="[2001:db8:cafe::17]:4711";proto=https;host=edge.example'),
        ("X-Forwarded-Port", "1"),  # the other family: not read, not sent
        ("X-Forwarded-Prefix", "/evil"),
        ("X-Forwarded-Host", "evil.example"),
        ("X-Forwarded-For", "6.6.6.6"),
    ]
    view = resolve("2001:db8::5", True, "corsproxy", inbound, EDGE, family=RFC7239)
    # for=2001:db8:cafe::17 and for=10.1.1.1 are trusted hops: the client is the first
    # untrusted for= from the right; the scheme and host are those of the rightmost element,
    # the one the peer wrote.
    assert view.origin.serialize() == "https://edge.example"
    assert view.client == "198.51.100.17"
    assert view.prefix() == ""
    assert view.forwarded_for == "198.51.100.17, 10.1.1.1, 2001:db8:cafe::17, 2001:db8::5"
    assert sent(view.upstream_headers()) == {
        "X-Forwarded-Proto": "https",
        "X-Forwarded-Host": "edge.example",
        "Forwarded": 'for=198.51.100.17;proto=https;host="api.example.com", for=10.1.1.1, '
        'For="[2001:db8:cafe::17]:4711";proto=https;host=edge.example, '
        'for="[2001:db8::5]";proto=https;host=corsproxy',
    }


# What a client can put in front of the headers its trusted proxy writes, in each family.
CLIENT_FORWARDED = 'for=6.6.6.6;proto=https;host="evil.example:4443"'
CLIENT_X_FORWARDED = [
    ("X-Forwarded-Proto", "https"),
    ("X-Forwarded-Host", "evil.example"),
    ("X-Forwarded-Port", "4443"),
    ("X-Forwarded-Prefix", "/evil"),
]


def test_x_forwarded_family_never_believes_forwarded() -> None:
    """The default family. A front that sets only X-Forwarded-For (nginx's minimal set-up)
    passes a client's `Forwarded` on: it is neither read nor sent, whatever else is there."""
    inbound = [("Forwarded", CLIENT_FORWARDED), ("X-Forwarded-For", "6.6.6.6, 203.0.113.9")]
    view = resolve("10.0.0.5", False, "corsproxy:8080", inbound, EDGE)
    assert view.origin == PublicOrigin("http", "corsproxy", 8080)
    assert view.client == "203.0.113.9"
    assert view.forwarded_for is None  # the client's X-Forwarded-For, the peer appended
    assert view.upstream_headers() == [
        ("X-Forwarded-Proto", "http"),
        ("X-Forwarded-Host", "corsproxy:8080"),
    ]
    out = hygiene.upstream_request_headers(
        inbound, hygiene.Forwarding("10.0.0.5", "http", "corsproxy:8080", False, view=view)
    )
    assert "evil" not in repr(out) and "forwarded" not in {n.lower() for n, _ in out}


def test_forwarded_family_never_believes_x_forwarded() -> None:
    """`forwarded_headers: forwarded`: the client's X-Forwarded-* pass through a front that
    writes only `Forwarded`; they are replaced by corsproxy's, from what it believes."""
    element = 'for=203.0.113.9;proto=https;host="api.example.com"'
    inbound = [*CLIENT_X_FORWARDED, ("X-Forwarded-For", "6.6.6.6"), ("Forwarded", element)]
    view = resolve("10.0.0.5", False, "corsproxy:8080", inbound, EDGE, family=RFC7239)
    assert view.origin == PublicOrigin("https", "api.example.com", 443)
    assert view.client == "203.0.113.9"
    assert view.prefix("/svc") == "/svc"
    out = hygiene.upstream_request_headers(
        inbound, hygiene.Forwarding("10.0.0.5", "http", "corsproxy:8080", False, view=view)
    )
    assert [(n, v) for n, v in out if n != "Forwarded"] == [
        ("X-Forwarded-For", "203.0.113.9, 10.0.0.5"),
        ("X-Forwarded-Proto", "https"),
        ("X-Forwarded-Host", "api.example.com"),
    ]
    assert sent(out)["Forwarded"] == f'{element}, for=10.0.0.5;proto=http;host="corsproxy:8080"'
    # No Forwarded at all: the connection's scheme and Host; the client is the peer.
    view = resolve("10.0.0.5", False, "corsproxy", CLIENT_X_FORWARDED, EDGE, family=RFC7239)
    assert view.origin == PublicOrigin("http", "corsproxy", 80)
    assert view.client == "10.0.0.5" and view.forwarded_for == "10.0.0.5"
    assert "Forwarded" not in sent(view.upstream_headers())  # corsproxy starts no chain


@pytest.mark.parametrize(
    "client_wrote",
    [
        CLIENT_FORWARDED,  # well-formed: before the client's own element, the walk stops
        'for="unterminated',
        "for=6.6.6.6;for=7.7.7.7",
        "garbage",
        'for=6.6.6.6;host="a,b,c,d,e,f,g"',
        "for=6.6.6.6;proto=https;;",
        "",
    ],
)
def test_forwarded_appended_by_the_front_wins_over_the_client(client_wrote: str) -> None:
    """nginx `proxy_set_header Forwarded "$http_forwarded, for=$remote_addr;..."`: whatever
    the client wrote on the left, the element the front appended on the right decides."""
    front = 'for=203.0.113.9;proto=https;host="api.example.com"'
    inbound = [("Forwarded", f"{client_wrote}, {front}")]
    view = resolve("10.0.0.5", False, "corsproxy", inbound, EDGE, family=RFC7239)
    assert view.origin == PublicOrigin("https", "api.example.com", 443)
    assert view.client == "203.0.113.9"
    assert sent(view.upstream_headers())["Forwarded"] == (
        f"{front}, for=10.0.0.5;proto=http;host=corsproxy"
    )
    # A client inside a trusted range: the walk reaches its element, but the scheme and
    # host stay those of the rightmost element, the one the peer wrote.
    inbound = [("Forwarded", f"{client_wrote}, {front.replace('203.0.113.9', '10.9.9.9')}")]
    view = resolve("10.0.0.5", False, "corsproxy", inbound, EDGE, family=RFC7239)
    assert view.origin == PublicOrigin("https", "api.example.com", 443)


def test_a_malformed_rightmost_element_is_not_believed() -> None:
    inbound = [("Forwarded", 'for=203.0.113.9;proto=https;host="api.example.com", for="x')]
    view = resolve("10.0.0.5", False, "corsproxy", inbound, EDGE, family=RFC7239)
    assert view.origin == PublicOrigin("http", "corsproxy", 80)
    assert view.client == "10.0.0.5"
    assert "Forwarded" not in sent(view.upstream_headers())


def test_all_hops_trusted_gives_the_leftmost() -> None:
    view = resolve("10.0.0.3", False, "h", [("X-Forwarded-For", "10.0.0.1, 10.0.0.2")], EDGE)
    assert view.client == "10.0.0.1"


@pytest.mark.parametrize(
    ("xff", "client"),
    [
        ("203.0.113.9:5123", "203.0.113.9"),  # Azure writes ports
        ('"[2001:db8:1::9]:80", 10.0.0.1', "10.0.0.1"),  # quoted: not an address, stop
        ("[2001:db8:1::9]:80, 10.0.0.1", "2001:db8:1::9"),
        ("unknown, 10.0.0.1", "10.0.0.1"),  # garbage stops the walk at the last proxy
        ("6.6.6.6, , ,", "6.6.6.6"),
        ("::ffff:10.0.0.1, 10.0.0.2", "10.0.0.1"),  # IPv4-mapped: an IPv4 trusted proxy
        ("evil\r\nX: y", "10.0.0.9"),
    ],
)
def test_client_address_from_x_forwarded_for(xff: str, client: str) -> None:
    assert resolve("10.0.0.9", False, "h", [("X-Forwarded-For", xff)], EDGE).client == client


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("X-Forwarded-Proto", "javascript"),
        ("X-Forwarded-Proto", "https\r\nX-Admin: 1"),
        ("X-Forwarded-Proto", "ftp"),
        ("X-Forwarded-Host", "evil.example/path"),
        ("X-Forwarded-Host", "a b"),
        ("X-Forwarded-Host", "evil.example\r\nX: y"),
        ("X-Forwarded-Host", "user@evil.example"),
        ("X-Forwarded-Host", "[::1"),
        ("X-Forwarded-Host", "[zz::1]"),
        ("X-Forwarded-Host", "evil.example:99999"),
        ("X-Forwarded-Host", "a..b"),
        ("X-Forwarded-Port", "99999"),
        ("X-Forwarded-Port", "0"),
        ("X-Forwarded-Port", "443x"),
        ("X-Forwarded-Prefix", "/../admin"),
        ("X-Forwarded-Prefix", "//evil.example"),
        ("X-Forwarded-Prefix", "edge"),
        ("X-Forwarded-Prefix", "/a?b"),
        ("X-Forwarded-Prefix", "/a%zz"),
        # Encodings of `..` and `//`, path parameters, backslashes: all refused.
        ("X-Forwarded-Prefix", "/%2e%2e/admin"),
        ("X-Forwarded-Prefix", "/a/.%2e"),
        ("X-Forwarded-Prefix", "/..;/x"),
        ("X-Forwarded-Prefix", "/%2F%2Fevil.com"),
        ("X-Forwarded-Prefix", "/a;b"),
        ("X-Forwarded-Prefix", "/a\\..\\b"),
        ("X-Forwarded-Prefix", "/%61"),
        ("X-Forwarded-Prefix", "/a//b"),
        ("X-Forwarded-Prefix", "/a/./b"),
        ("X-Forwarded-Prefix", "/user@evil"),
        # Quotes, parentheses and commas end a quoted Refresh URL, a Link parameter or a
        # list item once the prefix is put into a header (second outside review).
        ("X-Forwarded-Prefix", "/it's"),
        ("X-Forwarded-Prefix", "/a(b)"),
        ("X-Forwarded-Prefix", "/a,b"),
    ],
)
def test_unsafe_values_from_a_trusted_peer_are_ignored(name: str, value: str) -> None:
    inbound = [("X-Forwarded-Proto", "http"), (name, value)]
    view = resolve("10.0.0.1", False, "proxy.example:8080", inbound, EDGE)
    assert view.origin == PublicOrigin("http", "proxy.example", 8080)
    out = view.upstream_headers()
    assert value not in [v for _, v in out]
    assert ("X-Forwarded-Host", "proxy.example:8080") in out


@pytest.mark.parametrize(
    "value",
    [
        'for="unterminated',
        "for=1;for=2",  # a parameter twice in one element
        "for",
        "for=a b",
        "=x",
        "for=1;;proto=https",
        'for="\x01"',
        "proto=https host=x",
    ],
)
def test_malformed_forwarded_is_ignored_whole(value: str) -> None:
    assert parse_forwarded([value]) is None
    view = resolve("10.0.0.1", False, "proxy.example", [("Forwarded", value)], EDGE,
                   family=RFC7239)  # fmt: skip
    assert view.origin == PublicOrigin("http", "proxy.example", 80)
    assert "Forwarded" not in sent(view.upstream_headers())


def test_forwarded_syntax() -> None:
    assert parse_forwarded(['for="_gazonk"', 'For="[2001:db8:cafe::17]:4711"']) == [
        {"for": "_gazonk"},
        {"for": "[2001:db8:cafe::17]:4711"},
    ]
    assert parse_forwarded(['host="a,b;c=d";proto=https , , for=x']) == [
        {"host": "a,b;c=d", "proto": "https"},
        {"for": "x"},
    ]
    assert parse_forwarded(['for="a\\"b"']) == [{"for": 'a"b'}]
    # A host in quotes with a comma is not a host a URL may carry: the connection's is used.
    view = resolve("10.0.0.1", False, "own", [("Forwarded", 'host="a,b";proto=https')], EDGE,
                   family=RFC7239)  # fmt: skip
    assert view.origin == PublicOrigin("https", "own", 443)


@pytest.mark.parametrize(
    ("value", "kept"),
    [("/edge", "/edge"), ("/edge/", "/edge"), ("/a-b_c.d~e/v1", "/a-b_c.d~e/v1"),
     ("/x!$&*+=,y", "/x!$&*+="), ("/...", "/..."), ("/", "")],
)  # fmt: skip
def test_plain_prefixes_are_kept(value: str, kept: str) -> None:
    # (Of a comma-separated value the first part is read: "/x!$&*+=".)
    view = resolve("10.0.0.1", False, "h", [("X-Forwarded-Prefix", value)], EDGE)
    assert view.prefix() == kept


def test_prefix_joins_trusted_and_route() -> None:
    view = resolve("10.0.0.1", False, "h", [("X-Forwarded-Proto", "https"),
                                           ("X-Forwarded-Prefix", "/")], EDGE)  # fmt: skip
    assert view.prefix("/svc") == "/svc"
    assert view.prefix("/") == ""
    assert view.prefix() == ""
    assert "X-Forwarded-Prefix" not in sent(view.upstream_headers())


def test_trusted_proxies_entries() -> None:
    assert parse_network("192.168.1.10").prefixlen == 32
    assert parse_network("[::1]").prefixlen == 128
    for bad in ("10.0.0.1/8", "nope", "10.0.0.0/33", "", " 10.0.0.1", "fe80::1%eth0", "*"):
        with pytest.raises(ValueError, match="'"):
            parse_network(bad)
    assert not NO_PROXIES.trusts("127.0.0.1")
    assert TrustedProxies([parse_network("0.0.0.0/0")]).everyone
    assert not EDGE.trusts("garbage") and not EDGE.trusts(None)


@pytest.mark.parametrize(
    ("entry", "matches", "misses"),
    [
        ("::ffff:127.0.0.2", ["127.0.0.2", "::ffff:127.0.0.2"], ["127.0.0.1", "::1"]),
        ("[::ffff:127.0.0.2]", ["127.0.0.2"], ["127.0.0.3"]),
        ("::ffff:10.0.0.0/104", ["10.1.2.3", "::ffff:10.9.9.9"], ["11.0.0.1"]),
        ("::ffff:0:0/96", ["127.0.0.1", "203.0.113.9"], ["::1", "2001:db8::1"]),
    ],
)
def test_ipv4_mapped_entries_match_ipv4_peers(
    entry: str, matches: list[str], misses: list[str]
) -> None:
    """Peers are matched in their IPv4 form (a dual-stack listener reports ::ffff:a.b.c.d):
    an IPv4-mapped entry is read as the IPv4 network it names, as nginx matches them."""
    network = parse_network(entry)
    assert network.version == 4
    trusted = TrustedProxies([network])
    assert all(trusted.trusts(a) for a in matches)
    assert not any(trusted.trusts(a) for a in misses)


# --- the upstream's headers, through header hygiene -------------------------------------

addresses = st.one_of(
    st.ip_addresses().map(str), st.sampled_from(["10.0.0.1", "2001:db8::1", "::ffff:10.0.0.1"])
)
values = st.one_of(
    st.text(st.characters(min_codepoint=0, max_codepoint=255), max_size=40),
    st.sampled_from(["https", "evil.example", "/evil", "443", "for=1.2.3.4;proto=https"]),
)
spoofs = st.lists(
    st.tuples(
        st.sampled_from([*FORWARDING_NAMES, "x-forwarded-proto", "FORWARDED", "X-Forwarded-For"]),
        values,
    ),
    max_size=8,
)


@settings(max_examples=400, deadline=None)
@given(peer=addresses, inbound=spoofs, tls=st.booleans(), family=st.sampled_from(ForwardedHeaders))
def test_untrusted_peers_never_reach_the_upstream(
    peer: str, inbound: list[tuple[str, str]], tls: bool, family: ForwardedHeaders
) -> None:
    trusted = TrustedProxies([parse_network("192.0.2.0/24")])
    if trusted.trusts(peer):
        return
    view = resolve(peer, tls, "proxy.example", inbound, trusted, family=family)
    forwarding = hygiene.Forwarding(peer, "https" if tls else "http", "proxy.example", False,
                                    view=view)  # fmt: skip
    out = hygiene.upstream_request_headers(inbound, forwarding)
    scheme = "https" if tls else "http"
    own = [(n, v) for n, v in out if n.lower() != "x-forwarded-for"]
    assert own == [("X-Forwarded-Proto", scheme), ("X-Forwarded-Host", "proxy.example")]
    assert view.origin == PublicOrigin(scheme, "proxy.example", 443 if tls else 80)
    assert view.client == peer


@settings(max_examples=400, deadline=None)
@given(
    peer=addresses,
    inbound=spoofs,
    tls=st.booleans(),
    host=values,
    family=st.sampled_from(ForwardedHeaders),
)
def test_the_rule_never_crashes_and_sends_only_safe_values(
    peer: str, inbound: list[tuple[str, str]], tls: bool, host: str, family: ForwardedHeaders
) -> None:
    # The server answers 400 to a Host that is not valid before anything is forwarded.
    valid = host if host and hygiene.valid_host(host) else None
    view = resolve(peer, tls, valid, inbound, EDGE, family=family)
    for name, value in view.upstream_headers("/svc"):
        assert "\r" not in value and "\n" not in value, (name, value)
        if name == "X-Forwarded-Proto":
            assert value in ("http", "https")
    assert view.origin.scheme in ("http", "https")
    assert "/" not in view.origin.host and "@" not in view.origin.host
    PublicOrigin(view.origin.scheme, view.origin.host, view.origin.port).serialize()


# --- configuration ----------------------------------------------------------------------


def test_config_refuses_bad_entries_with_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(
        "upstream: http://127.0.0.1:9\ncors: false\n"
        "trusted_proxies:\n  - 10.0.0.0/8\n  - 10.0.0.1/8\n  - proxy.internal\n"
    )
    with pytest.raises(ConfigError) as info:
        load_config(str(path))
    text = str(info.value)
    assert f"{path}:5: trusted_proxies[1]: '10.0.0.1/8' has host bits set" in text
    assert f"{path}:6: trusted_proxies[2]: 'proxy.internal' is not an IP address" in text
    assert "write an address or a CIDR" in text


def test_config_forwarded_headers(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("upstream: http://127.0.0.1:9\ncors: false\n")
    assert load_config(str(path)).forwarded_headers is ForwardedHeaders.X_FORWARDED
    path.write_text("upstream: http://127.0.0.1:9\ncors: false\nforwarded_headers: forwarded\n")
    assert load_config(str(path)).forwarded_headers is ForwardedHeaders.FORWARDED
    path.write_text("upstream: http://127.0.0.1:9\ncors: false\nforwarded_headers: forward\n")
    with pytest.raises(ConfigError) as info:
        load_config(str(path))
    assert f"{path}:3: forwarded_headers: 'forward' is not one of" in str(info.value)
    assert "did you mean 'forwarded'?" in str(info.value)


def test_config_warns_when_everyone_is_trusted(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(
        "upstream: http://127.0.0.1:9\ncors: false\ntrusted_proxies: ['::/0', 10.1.2.3]\n"
    )
    config = load_config(str(path))
    assert config.trusted_proxies.trusts("10.1.2.3") and config.trusted_proxies.trusts("::1")
    assert not config.trusted_proxies.trusts("10.1.2.4")
    assert any("trusts every peer" in d.message for d in config.warnings)


@settings(max_examples=300, deadline=None)
@given(
    hops=st.lists(st.tuples(st.ip_addresses(v=4).map(str), st.booleans()), min_size=1, max_size=6)
)
def test_client_is_the_rightmost_untrusted_hop(hops: list[tuple[str, bool]]) -> None:
    """Any chain of hops, some of them trusted proxies: the client is the rightmost address
    that is not trusted (the leftmost when every one is), by X-Forwarded-For and by
    Forwarded alike."""
    peer = "192.0.2.1"
    trusted = TrustedProxies(
        dict.fromkeys([parse_network(peer), *(parse_network(a) for a, t in hops if t)])
    )
    addresses = [a for a, _ in hops]
    untrusted = [a for a in addresses if not trusted.trusts(a)]
    expected = untrusted[-1] if untrusted else addresses[0]
    xff = resolve(peer, False, "h", [("X-Forwarded-For", ", ".join(addresses))], trusted)
    assert xff.client == expected
    chain = ", ".join(f"for={a}" for a in addresses)
    by_forwarded = resolve(peer, False, "h", [("Forwarded", chain)], trusted, family=RFC7239)
    assert by_forwarded.client == expected
