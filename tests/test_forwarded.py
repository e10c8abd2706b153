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
    PublicOrigin,
    TrustedProxies,
    parse_forwarded,
    parse_network,
    public_origin,
    resolve,
)

EDGE = TrustedProxies([parse_network("10.0.0.0/8"), parse_network("2001:db8::/32")])
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
        ("Forwarded", 'For="[2001:db8:cafe::17]:4711";proto=http'),  # a third trusted hop
        ("X-Forwarded-Port", "1"),  # the other family: not read, not sent
        ("X-Forwarded-Prefix", "/evil"),
    ]
    view = resolve("2001:db8::5", True, "corsproxy", inbound, EDGE)
    # for=2001:db8:cafe::17 and for=10.1.1.1 are trusted hops: the first element is the
    # outermost proxy's, describing what the client used.
    assert view.origin.serialize() == "https://api.example.com"
    assert view.client == "198.51.100.17"
    assert view.prefix() == ""
    assert sent(view.upstream_headers()) == {
        "X-Forwarded-Proto": "https",
        "X-Forwarded-Host": "api.example.com",
        "Forwarded": 'for=198.51.100.17;proto=https;host="api.example.com", for=10.1.1.1, '
        'For="[2001:db8:cafe::17]:4711";proto=http, '
        'for="[2001:db8::5]";proto=https;host=corsproxy',
    }


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
    view = resolve("10.0.0.1", False, "proxy.example", [("Forwarded", value)], EDGE)
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
    view = resolve("10.0.0.1", False, "own", [("Forwarded", 'host="a,b";proto=https')], EDGE)
    assert view.origin == PublicOrigin("https", "own", 443)


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
@given(peer=addresses, inbound=spoofs, tls=st.booleans())
def test_untrusted_peers_never_reach_the_upstream(
    peer: str, inbound: list[tuple[str, str]], tls: bool
) -> None:
    trusted = TrustedProxies([parse_network("192.0.2.0/24")])
    if trusted.trusts(peer):
        return
    view = resolve(peer, tls, "proxy.example", inbound, trusted)
    forwarding = hygiene.Forwarding(peer, "https" if tls else "http", "proxy.example", False,
                                    view=view)  # fmt: skip
    out = hygiene.upstream_request_headers(inbound, forwarding)
    scheme = "https" if tls else "http"
    own = [(n, v) for n, v in out if n.lower() != "x-forwarded-for"]
    assert own == [("X-Forwarded-Proto", scheme), ("X-Forwarded-Host", "proxy.example")]
    assert view.origin == PublicOrigin(scheme, "proxy.example", 443 if tls else 80)
    assert view.client == peer


@settings(max_examples=400, deadline=None)
@given(peer=addresses, inbound=spoofs, tls=st.booleans(), host=values)
def test_the_rule_never_crashes_and_sends_only_safe_values(
    peer: str, inbound: list[tuple[str, str]], tls: bool, host: str
) -> None:
    # The server answers 400 to a Host that is not valid before anything is forwarded.
    view = resolve(peer, tls, host if host and hygiene.valid_host(host) else None, inbound, EDGE)
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
    assert resolve(peer, False, "h", [("Forwarded", chain)], trusted).client == expected
