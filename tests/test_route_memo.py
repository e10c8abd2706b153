"""The routing memo (http/route_memo.py) against the straightforward lookup: generated
request targets give the same path, query and route, or the same refusal; a reload starts
afresh; refused and over-long targets are never kept."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from corsproxy.http.route_memo import ENTRIES, KEY_CHARS, RouteMemo, route_target
from corsproxy.policy.paths import PathError
from tests.helpers import config

UP = "http://127.0.0.1:9"
CONFIG = config(
    {
        "upstream": UP,
        "cors": {"allow_origins": ["https://app.example.com"]},
        "routes": [
            {"path_prefix": "/api", "strip_prefix": True},
            {"path_prefix": "/api/v2.json", "upstream": "http://127.0.0.1:10"},
            {"path_prefix": "/Files", "upstream": "http://127.0.0.1:11"},
        ],
    }
)
_PIECES = st.sampled_from(
    ["api", "API", "v2.json", "v2", "files", "Files", "..", ".", "%2e%2e", "%2F", "%2f", "a",
     "", "x;y", "%00", "%zz", "~", "é", "%C3%A9"]
)  # fmt: skip
_TARGETS = st.builds(
    lambda parts, query: "/" + "/".join(parts) + query,
    st.lists(_PIECES, max_size=5),
    st.sampled_from(["", "?a=1", "?", "?x=%2F"]),
)


def _outcome(lookup, target: str) -> object:  # type: ignore[no-untyped-def]
    try:
        path, query, route = lookup(CONFIG, target)
    except PathError as exc:
        return ("refused", exc.reason, str(exc))
    return (path, query, route.name if route else None)


@settings(max_examples=400, deadline=None)
@given(targets=st.lists(_TARGETS, min_size=1, max_size=8))
def test_the_memo_answers_as_the_lookup(targets: list[str]) -> None:
    memo = RouteMemo()
    for target in targets + targets:  # the second time from the memo
        assert _outcome(memo.lookup, target) == _outcome(route_target, target), target


def test_a_reload_starts_afresh_and_refusals_are_not_kept() -> None:
    memo = RouteMemo()
    assert memo.lookup(CONFIG, "/files/x")[2] is route_target(CONFIG, "/files/x")[2]
    other = config({"upstream": UP, "cors": {"allow_origins": ["https://app.example.com"]}})
    path, _, route = memo.lookup(other, "/files/x")
    assert route is other.routes.match(path)
    for _ in range(2):
        try:
            memo.lookup(other, "/%2e%2e/x")
        except PathError:
            pass
        else:
            raise AssertionError("a refused path was answered")
    memo.lookup(other, "/" + "a" * KEY_CHARS)
    assert len(memo._young) + len(memo._old) == 1  # only /files/x is kept
    for n in range(3 * ENTRIES):
        memo.lookup(other, f"/p{n}")
    assert len(memo._young) + len(memo._old) <= ENTRIES
