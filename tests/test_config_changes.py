"""What a reload changed (config/changes.py) and the start summary (config/summary.py): pure
functions of compiled configurations, tested on configs compiled by the real loader."""

from __future__ import annotations

from typing import Any

import pytest

from corsproxy.config.changes import MAX_NAMED, changes
from corsproxy.config.summary import JSON_ORIGINS, summary, summary_text
from tests.helpers import config

UP = "http://127.0.0.1:9"
APP = "https://app.example.com"


def doc(**top: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"upstream": UP, "cors": {"allow_origins": [APP]}}
    base.update(top)
    return base


def api(**cors: Any) -> dict[str, Any]:
    return {"path_prefix": "/api", "upstream": "http://127.0.0.1:10", "cors": cors}


CASES = [
    ("identical", doc(), doc(), ["no changes"]),
    # The same meaning written differently is no change: values are compared compiled.
    ("respelled", doc(timeouts={"read": "30s"}), doc(timeouts={"read": 30}), ["no changes"]),
    (
        "origins of the catch-all",
        doc(),
        doc(cors={"allow_origins": ["https://b.example", APP]}),
        ["route /: origins added: https://b.example"],
    ),
    (
        "origins removed, credentials on",
        doc(cors={"allow_origins": [APP, "https://b.example"]}),
        doc(cors={"allow_origins": [APP], "allow_credentials": True}),
        ["route /: origins removed: https://b.example", "route /: changed cors.allow_credentials"],
    ),
    (  # an allow-list is a set: the order of its entries decides nothing
        "origins reordered",
        doc(cors={"allow_origins": [APP, "https://b.example"]}),
        doc(cors={"allow_origins": ["https://b.example", APP]}),
        ["no changes"],
    ),
    (
        "route added and removed",
        doc(routes=[{"path_prefix": "/old", "cors": False}]),
        doc(routes=[api(allow_origins=[APP])]),
        ["route /api added", "route /old removed"],
    ),
    (
        "a route's methods",
        doc(routes=[api(allow_origins=[APP], allow_methods=["GET"])]),
        doc(routes=[api(allow_origins=[APP], allow_methods=["GET", "PUT"])]),
        ["route /api: changed cors.allow_methods"],
    ),
    (
        "a route's methods, to '*'",
        doc(routes=[api(allow_origins=[APP], allow_methods=["GET"])]),
        doc(routes=[api(allow_origins=[APP], allow_methods=["*"])]),
        ["route /api: changed cors.allow_methods"],
    ),
    (
        "a route's upstream and timeout",
        doc(routes=[api(allow_origins=[APP])]),
        doc(
            routes=[
                {**api(allow_origins=[APP]), "upstream": "http://other:1", "timeouts": {"read": 5}}
            ]
        ),
        ["route /api: changed timeouts.read, upstream"],
    ),
    (
        "other keys, by dotted name",
        doc(admin={"listen": "127.0.0.1:9901"}),
        doc(admin={"listen": "127.0.0.1:9902"}, limits={"max_body_size": 1000}),
        ["changed admin.listen, limits.max_body_size"],
    ),
    (  # the name labels the route's log lines and metrics
        "a route renamed",
        doc(routes=[{**api(allow_origins=[APP]), "name": "api-v1"}]),
        doc(routes=[{**api(allow_origins=[APP]), "name": "api-v2"}]),
        ["route /api: changed name"],
    ),
    (
        "a route turns cors off",
        doc(routes=[api(allow_origins=[APP], max_age=60)]),
        doc(routes=[{**api(), "cors": False}]),
        ["route /api: cors turned off (cors: false)"],
    ),
    (
        "a route turns cors back on",
        doc(routes=[{**api(), "cors": False}]),
        doc(routes=[api(allow_origins=[APP])]),
        ["route /api: cors turned on (was cors: false)", f"route /api: origins added: {APP}"],
    ),
    (
        "a route off before and after: the top-level cors it would inherit changes",
        doc(routes=[{"path_prefix": "/off", "cors": False}]),
        doc(
            cors={"allow_origins": [APP, "https://b.example"], "allow_methods": ["PUT"]},
            routes=[{"path_prefix": "/off", "cors": False}],
        ),
        [
            "route /: origins added: https://b.example",
            "route /: changed cors.allow_methods",
        ],
    ),
    (
        "no catch-all any more",
        doc(routes=[api(allow_origins=[APP])]),
        {"routes": [api(allow_origins=[APP])], "cors": {"allow_origins": [APP]}},
        ["route / removed"],
    ),
]


@pytest.mark.parametrize(
    ("old", "new", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_changes(old: dict[str, Any], new: dict[str, Any], expected: list[str]) -> None:
    assert changes(config(old), config(new)).lines() == expected


def test_long_origin_lists_are_counted_not_listed() -> None:
    many = [f"https://h{i}.example" for i in range(MAX_NAMED + 7)]
    line = changes(config(doc()), config(doc(cors={"allow_origins": [APP, *many]}))).lines()[0]
    assert line.endswith(" and 7 more")
    assert "https://h0.example" in line
    assert f"https://h{MAX_NAMED}.example" not in line


def test_summary_shows_the_catch_all_as_slash_and_cors_false_as_off() -> None:
    compiled = config(
        doc(
            listen="127.0.0.1:8080",
            admin={"listen": "127.0.0.1:9901"},
            routes=[
                api(allow_origins=["https://a.example"], mode="report-only"),
                {"path_prefix": "/open", "cors": False},
            ],
            cors={"allow_origins": [APP], "allow_credentials": True},
        )
    )
    assert summary(compiled) == {
        "config": "test.yaml",
        "listen": "127.0.0.1:8080",
        "admin": "127.0.0.1:9901",
        "routes": [
            {
                "path_prefix": "/",
                "upstream": UP,
                "origins": [APP],
                "credentials": True,
                "mode": "enforce",
            },
            {
                "path_prefix": "/api",
                "upstream": "http://127.0.0.1:10",
                "origins": ["https://a.example"],
                "credentials": True,  # inherited from the default policy
                "mode": "report-only",
            },
            {
                "path_prefix": "/open",
                "upstream": UP,
                "origins": [],
                "credentials": False,
                "mode": "off",
            },
        ],
    }


def test_summary_without_a_top_level_upstream_has_no_catch_all() -> None:
    compiled = config({"routes": [api(allow_origins=[APP])], "cors": {"allow_origins": [APP]}})
    fields = summary(compiled)
    assert [r["path_prefix"] for r in fields["routes"]] == ["/api"]
    assert fields["admin"] is None
    text = summary_text(fields)
    assert text == (
        "loaded test.yaml: listen 0.0.0.0:8080, admin none; routes: /api -> "
        f"http://127.0.0.1:10 (origins {APP}; credentials off; enforce)"
    )
    assert "\n" not in text


def test_summary_lists_at_most_json_origins_per_route_and_counts_the_rest() -> None:
    many = [f"https://h{i}.example" for i in range(JSON_ORIGINS + 50)]
    fields = summary(config(doc(cors={"allow_origins": many})))
    origins = fields["routes"][0]["origins"]
    assert len(origins) == JSON_ORIGINS
    assert origins[:-1] == many[: JSON_ORIGINS - 1]
    assert origins[-1] == "... and 51 more"
    assert f"https://h4.example and {len(many) - 5} more; credentials" in summary_text(fields)
