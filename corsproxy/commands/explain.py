"""`corsproxy explain`: what a browser does with one request, against the loaded policy.

Everything corsproxy would send comes from the server's own code (`decide()` and
`response_headers()`); `browser.py` plays the browser's part.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from corsproxy.commands.explain_fixes import (
    NO_FIX,
    Edit,
    Fix,
    credentials_fix,
    disabled_fix,
    every,
    places_of,
    reason_fix,
    set_key,
)
from corsproxy.config import Config, ConfigError, Override
from corsproxy.config.edited import EditOp, load_edited
from corsproxy.http.aiohttp_private import parser_accepts_header, parser_accepts_method
from corsproxy.policy import browser, engines, local_network
from corsproxy.policy.cors import (
    ACRH,
    ACRM,
    ACRPN,
    HEADERS_INVALID,
    METHOD_INVALID,
    ORIGIN_NOT_ALLOWED,
    PRIVATE_NETWORK_NOT_ALLOWED,
    SAFELISTED_METHODS,
    Action,
    CorsPolicy,
    Decision,
    Mode,
    Reason,
    ReasonCode,
    RequestView,
    decide,
    response_headers,
    same_origin,
)
from corsproxy.policy.origins import parse_origin
from corsproxy.policy.paths import PathError, normalize_path, split_target
from corsproxy.policy.routes import AmbiguousPath, Route


@dataclass
class Step:
    title: str
    outcome: str  # "ok" | "blocked" | "info"
    lines: list[str] = field(default_factory=list)
    headers: list[tuple[str, str]] = field(default_factory=list)


# What a browser would report for each refusal if a server answered the preflight with 200
# and a list that lacks the value (corsproxy answers 403, which shows as a status error).
CAUSE_NAMES = {
    ReasonCode.ORIGIN_NOT_ALLOWED: "CORSMissingAllowOrigin",
    ReasonCode.METHOD_NOT_ALLOWED: "CORSMethodNotFound",
    ReasonCode.HEADER_NOT_ALLOWED: "CORSMissingAllowHeaderFromPreflight",
    ReasonCode.CORS_DISABLED: "CORSMissingAllowOrigin",
}


@dataclass
class Explanation:
    steps: list[Step] = field(default_factory=list)
    allowed: bool = False
    # The decision's Reason, or another code (a path error, no_route, a browser's error name).
    reason: str = ""
    failure: browser.Block | None = None
    fix: str = ""
    # The fix as edits of the config (each accepted by `check`), when it is one.
    fix_edits: tuple[Edit, ...] = ()
    # For an --origin no browser sends: the serialized origin it would send instead.
    did_you_mean: str | None = None
    # The method as fetch() sends it (DELETE, GET, HEAD, OPTIONS, POST, PUT upper-cased).
    method: str = ""
    readable: tuple[str, ...] = ()
    # A WebSocket handshake forwarded without the page's Cookie and Authorization.
    strips_credentials: bool = False
    # The route's mode. In report-only mode corsproxy changes no CORS header: `allowed`,
    # `reason`, `failure` and `fix` then say what mode: enforce would do, and
    # `upstream_decides` is true when the browser's verdict rests on the upstream's own
    # headers (or, for a WebSocket, its answer to the handshake).
    mode: str = "enforce"
    upstream_decides: bool = False
    websocket: bool = False
    # The path and query the browser sends (WHATWG URL parsing of --path).
    path: str = ""
    withheld: str = ""  # the fix's words when its edits cannot be run through check
    # The engine predicted (--browser), and the page's origin and the URL it fetches, which
    # that engine's console messages name.
    browser: str = "chromium"
    origin: str = ""
    url: str = ""
    # Chromium's Local Network Access block (--private-network): what corsproxy's CORS does
    # once the user grants the permission (the verdict above is the block).
    with_permission: Explanation | None = None

    # The status corsproxy answers a refused WebSocket handshake with.
    websocket_status: int | None = None

    @property
    def engine_failure(self) -> engines.EngineBlock | None:
        """What the chosen engine shows for the block (None when not a CORS block)."""
        if self.failure is None or self.websocket:
            return None
        return engines.engine_block(self.browser, self.failure, self.url, self.origin)

    @property
    def websocket_failure(self) -> engines.WebSocketRefusal | None:
        """What the chosen engine shows when the handshake is not answered with 101."""
        if not self.websocket or self.reason in ("origin_malformed", WEBSOCKET_URL_FRAGMENT):
            return None
        if self.allowed and not self.upstream_decides:
            return None
        status = self.failure.status if self.failure is not None else self.websocket_status
        return engines.websocket_refusal(self.browser, self.url, status)

    @property
    def websocket_thrown(self) -> engines.WebSocketThrow | None:
        """What new WebSocket() throws in the chosen engine (a URL with a fragment)."""
        if not self.websocket or self.reason != WEBSOCKET_URL_FRAGMENT:
            return None
        return engines.websocket_fragment_error(self.browser, self.url)

    @property
    def verdict(self) -> str:
        """allowed, blocked, or upstream_decides (report-only mode)."""
        if self.upstream_decides:
            return "upstream_decides"
        return "allowed" if self.allowed else "blocked"

    @property
    def cause(self) -> str:
        """The refusal in words, with the browser's name for that cause."""
        reason = self.reason
        if not isinstance(reason, Reason):
            return ""
        name = CAUSE_NAMES.get(reason.code)
        if not name or self.failure is None or self.failure.firefox == name:
            return ""
        return f"{reason.describe()} (the cause Firefox names {name})"

    def to_json(self) -> dict[str, Any]:
        shown = self.engine_failure
        return {
            "browser": self.browser,
            "verdict": self.verdict,
            "mode": self.mode,
            "enforce_verdict": "allowed" if self.allowed else "blocked",
            "reason": self.reason,
            "browser_error": None
            if self.failure is None
            else {
                "firefox": self.failure.firefox,
                "chrome": self.failure.chrome,
                "message": self.failure.message,
                "code": None if shown is None else shown.code,
                "console": None if shown is None else shown.console,
                "messages": [] if shown is None else list(shown.messages),
                "fetch_error": None if shown is None else shown.fetch_error,
                # The status in the console lines; null: the upstream's (N in the text).
                "status": self.failure.status,
            },
            "websocket_error": None
            if self.websocket_failure is None
            else {
                "messages": list(self.websocket_failure.messages),
                "console": self.websocket_failure.console,
                "status": self.websocket_failure.status,
                "close_code": self.websocket_failure.close_code,
            },
            "websocket_exception": None
            if self.websocket_thrown is None
            else {
                "exception": self.websocket_thrown.exception,
                "messages": list(self.websocket_thrown.messages),
                "console": self.websocket_thrown.console,
            },
            "cause": self.cause,
            "with_permission": None
            if self.with_permission is None
            else {
                "verdict": self.with_permission.verdict,
                "reason": self.with_permission.reason,
                "fix": self.with_permission.fix,
            },
            "fix": self.fix,
            "fix_edits": [e.to_json() for e in self.fix_edits],
            "did_you_mean": self.did_you_mean,
            "method": self.method,
            "readable_headers": list(self.readable),
            "strips_credentials": self.strips_credentials,
            "path": self.path,
            "steps": [
                {
                    "title": s.title,
                    "outcome": s.outcome,
                    "lines": s.lines,
                    "headers": [[n, v] for n, v in s.headers],
                }
                for s in self.steps
            ],
        }


def _route_text(config: Config, route: Route | None) -> str:
    if route is None:
        return "no route (404)"
    where = f"{config.source}:{route.line}" if route.line else "the default policy"
    return f"route '{route.name}' (path_prefix {route.path_prefix}, {where})"


def _request_view(
    method: str, path: str, origin: str, headers: Sequence[tuple[str, str]]
) -> RequestView:
    return RequestView.from_pairs(method, path, [("Origin", origin), *headers])


def _enforced(decision: Decision) -> Decision:
    return decision.would if decision.would is not None else decision


def _answer(decision: Decision) -> tuple[int, list[tuple[str, str]]]:
    """Status and headers corsproxy answers with itself (preflight, refusal)."""
    headers = response_headers(decision, [])
    return decision.status, headers


Recheck = Callable[[Sequence[Edit]], Config]

# new WebSocket(url) with a #fragment throws a SyntaxError: nothing is sent.
WEBSOCKET_URL_FRAGMENT = "websocket_url_fragment"
WEBSOCKET_FRAGMENT_LINE = (
    "new WebSocket() throws a SyntaxError for a URL with a fragment (#...), before any "
    "connection (WebSockets standard): nothing is sent, the page gets no error or close event"
)
# Outcomes that do not depend on the mode: no request, or corsproxy's 400/404 before CORS.
MODE_INDEPENDENT = frozenset(
    {
        "origin_malformed",
        "fetch_method_refused",
        "method_unparsable",
        "fetch_header_refused",
        "header_unparsable",
        local_network.CODE,
        WEBSOCKET_URL_FRAGMENT,
    }
)
# fetch() throws, or the origin is no origin: nothing is sent, Local Network Access or not.
_BEFORE_ANY_REQUEST = frozenset(
    {"origin_malformed", "fetch_method_refused", "fetch_header_refused", WEBSOCKET_URL_FRAGMENT}
)
# Rounds of "apply the fix, explain again" before giving up on a complete fix.
_FIX_ROUNDS = 4


def rechecker(path: str | None, overrides: Sequence[Override]) -> Recheck:
    """Load the configuration (file and overrides) with edits applied, as `check` would."""

    def recheck(edits: Sequence[Edit]) -> Config:
        return load_edited(path, overrides, [EditOp(e.op, e.key, e.value) for e in edits])

    return recheck


def explain(
    config: Config,
    origin: str,
    method: str = "GET",
    path: str = "/",
    headers: Sequence[tuple[str, str]] = (),
    credentials: bool = False,
    private_network: bool = False,
    websocket: bool = False,
    proxy_origin: str = "",
    recheck: Recheck | None = None,
    engine: str = "chromium",
) -> Explanation:
    """What a browser does with one request. `websocket`: a page's `new WebSocket()` to the
    proxy addressed as `proxy_origin` (unknown when empty). `recheck`: loads the
    configuration with a fix's edits applied (see `rechecker`); with it the fix covers every
    refusal and its edits pass check (tried, not guessed); without it, a fix a guess says
    check may refuse is given as words only."""

    def run(loaded: Config) -> Explanation:
        return _explain(
            loaded, origin, method, path, headers, credentials, private_network, websocket,
            proxy_origin, recheck, engine,
        )  # fmt: skip

    result = run(config)
    result.browser, result.origin = engine, origin
    url = (proxy_origin.rstrip("/") or "<proxy>") + (result.path or path)
    if websocket:
        url = "ws" + url[4:] if url.startswith("http") else url
    result.url = engines.console_url(url, path)
    result.upstream_decides = result.mode == "report-only" and (
        str(result.reason) not in MODE_INDEPENDENT
    )
    # (a malformed origin's fix is its retry's)
    fixable = not result.allowed and result.reason != "origin_malformed"
    if fixable and recheck is not None and result.fix_edits:
        _verify_fix(result, recheck, run)
    elif fixable and result.withheld:
        result.fix, result.fix_edits = result.withheld, ()
    lna = engines.BY_NAME[engine].local_network_access
    if private_network and lna and not websocket and result.reason not in _BEFORE_ANY_REQUEST:
        _local_network_denied(result, proxy_origin, origin)
    return result


def _local_network_denied(result: Explanation, proxy_origin: str, origin: str) -> None:
    """Chromium 142+ (Local Network Access): nothing is sent without the user's permission,
    so the verdict is its block; what corsproxy does with the permission is kept aside."""
    space = local_network.address_space(proxy_origin)
    step = next((s for s in result.steps if s.title == "Local Network Access"), None)
    if step is None:  # (the route step refused it: Chromium blocks before corsproxy does)
        step = Step("Local Network Access", "info")
        result.steps.append(step)
    if space == "public":
        step.lines.insert(
            0,
            f"{proxy_origin} is a public address: Chromium makes no Local Network Access "
            "check (--private-network says the API is private: check the address)",
        )
        return
    page_space = local_network.address_space(origin)
    if local_network.not_checked(page_space, space):
        step.lines.insert(
            0,
            f"the page at {origin} is itself in the `{page_space}` address space: no Local "
            "Network Access check (Chromium 156, checked: only a public page's requests to "
            "`local` or `loopback` addresses need the permission; a `local` page reaches "
            "`loopback` too, though the specification would check that)",
        )
        return
    step.outcome = "blocked"
    step.lines[:0] = local_network.step_lines(space, proxy_origin)
    permitted = replace(result, steps=[])
    result.with_permission = permitted
    result.allowed, result.upstream_decides, result.readable = False, False, ()
    result.reason = local_network.CODE
    result.failure = local_network.denied(space)
    result.fix = local_network.fix_text(space)
    if not permitted.allowed and permitted.fix:
        result.fix += f"; once the permission is granted: {permitted.fix}"
    result.fix_edits = permitted.fix_edits


def _verify_fix(
    result: Explanation, recheck: Recheck, run: Callable[[Config], Explanation]
) -> None:
    """Apply the fix's edits to the document, check it, explain again; add the next fix
    until the request passes (every refusal gets its edit), or say why not."""
    edits = list(result.fix_edits)
    text = result.fix
    for _ in range(_FIX_ROUNDS):
        try:
            loaded = recheck(edits)
        except ConfigError as exc:
            problem = exc.errors[0] if exc.errors else exc.diagnostics[0]
            if result.withheld:  # allow_credentials is what check refuses, most likely
                text = "fetch without credentials; or " + text.replace(
                    ", or fetch without credentials", ""
                )
            result.fix = f"{text} (not offered as edits: check would refuse them: {problem})"
            result.fix_edits = ()
            return
        again = run(loaded)
        if again.allowed:
            break
        new = [e for e in again.fix_edits if e not in edits]
        if not new:
            then = f": {again.fix}" if again.fix else ""
            text += f"; after that the request is still blocked ({again.reason}){then}"
            break
        edits += new
        text += f"; then {again.fix}"
    result.fix, result.fix_edits = text, tuple(edits)


def _explain(
    config: Config,
    origin: str,
    method: str,
    path: str,
    headers: Sequence[tuple[str, str]],
    credentials: bool,
    private_network: bool,
    websocket: bool,
    proxy_origin: str,
    recheck: Recheck | None,
    engine: str = "chromium",
) -> Explanation:
    result = Explanation(websocket=websocket)
    facts = engines.BY_NAME[engine]
    asked_private_network = private_network
    private_network = private_network and facts.private_network  # (the PNA notes)
    # The PNA preflight (Chromium 104-141): Chromium 142+ sends none (Local Network Access).
    pna_preflight = private_network and not facts.local_network_access
    steps = result.steps
    sent = browser.normalize_method(method)
    result.method = sent
    credentials_text = "with credentials" if credentials else "without credentials"

    # 0. The URL as the browser sends it.
    as_written = path
    path = browser.fetch_target(path)
    result.path = path
    if websocket and "#" in re.sub(r"[\t\n\r]", "", as_written):
        steps.append(Step("new WebSocket()", "blocked", [WEBSOCKET_FRAGMENT_LINE]))
        fix = Fix("drop the fragment (#...) from the URL the page passes to new WebSocket()")
        return _blocked(result, WEBSOCKET_URL_FRAGMENT, None, fix)
    if path != as_written:
        steps.append(Step("URL", "info", _url_lines(as_written, path)))

    # 1. Which route and policy.
    try:
        raw_path, query = split_target(path)
        normalized = normalize_path(raw_path)
        route = config.routes.match(normalized)
    except PathError as exc:
        lines = [f"corsproxy answers 400: {exc} ({exc.reason})"]
        if isinstance(exc, AmbiguousPath):
            lines += [
                f"corsproxy's reading: {_route_text(config, exc.route)}",
                f"read {exc.reading}: {_route_text(config, exc.other)}",
            ]
        steps.append(Step("Route", "blocked", lines))
        failure = _answered_before_cors(400, method, headers, origin, credentials)
        return _blocked(result, exc.reason, failure, NO_FIX)
    if route is None:
        steps.append(
            Step(
                "Route",
                "blocked",
                [
                    f"no route matches {normalized.route_path} and there is no top-level "
                    "upstream: corsproxy answers 404"
                ],
            )
        )
        return _blocked(
            result,
            "no_route",
            _answered_before_cors(404, method, headers, origin, credentials),
            Fix("add a route for this path, or a top-level upstream"),
        )
    policy = route.cors
    where = f"{config.source}:{route.line}" if route.line else "the default policy"
    upstream = route.upstream
    target = upstream.url(route.forward_path(normalized), query) if upstream else "(none)"
    route_lines = [
        f"route '{route.name}' (path_prefix {route.path_prefix}, {where})",
        f"forwarded to {target}",
    ]
    if not normalized.route_path.startswith(route.path_prefix):
        route_lines.append("matched case-insensitively (routes_case_sensitive is false)")
    if not policy.enabled:
        route_lines.append("cors: false on this route: no cross-origin access")
    block = places_of(route, config.source, config.warnings).block
    if (
        policy.enabled
        and block is not None
        and f"{block.file}:{block.line}"
        in (places_of(route, config.source, config.warnings).turned_on)
    ):
        route_lines.append(
            f"{block} is false in the file, but flags or variables set cors keys: cors is on, "
            "with the keys they set and the others at their defaults"
        )
    if policy.mode is Mode.REPORT_ONLY:
        result.mode = Mode.REPORT_ONLY.value
        route_lines.append(
            "mode report-only: corsproxy changes no CORS header: it forwards preflights to the "
            "upstream, passes the upstream's own Access-Control-* headers unchanged (adds "
            "none, removes none) and forwards WebSocket handshakes whatever their Origin; "
            "the steps below show what mode: enforce would do"
        )
    steps.append(Step("Route", "info", route_lines))
    spelled = browser.serialized_origin(origin)
    if not spelled.valid:
        return _malformed_origin(config, result, origin, spelled, again={
            "method": method, "path": path, "headers": headers, "credentials": credentials,
            "private_network": asked_private_network, "websocket": websocket, "engine": engine,
            "proxy_origin": proxy_origin, "recheck": recheck,
        })  # fmt: skip
    if websocket:
        own, own_lines = websocket_own_origin(
            proxy_origin, tls=config.tls is not None, trusted=bool(config.trusted_proxies)
        )
        route_lines += own_lines
        return _explain_websocket(
            config,
            route,
            origin,
            normalized.route_path,
            target,
            own,
            result,
            asked_private_network,
        )

    # 2. What fetch() does with the method.
    thrown = browser.fetch_method_error(method)
    if thrown is not None:
        steps.append(
            Step(
                "fetch()",
                "blocked",
                [f"fetch() throws TypeError: {thrown} No request is sent (Fetch standard)"],
            )
        )
        return _blocked(result, "fetch_method_refused", None, NO_FIX)
    method_lines = _method_lines(method, sent)
    parsable = parser_accepts_method(sent)
    if not parsable:
        method_lines.append(
            f"corsproxy's HTTP parser (llhttp) does not read the method {sent}: it knows the "
            "registered methods, in upper case only, and answers any other with 400, before "
            "any CORS header"
        )
    if method_lines:
        steps.append(Step("Method", "info" if parsable else "blocked", method_lines))
    method = sent

    # 2b. What fetch() does with the headers: throws, drops forbidden ones, normalizes.
    header_lines: list[str] = []
    kept: list[tuple[str, str]] = []
    for name, value in headers:
        thrown = browser.fetch_header_error(name, value)
        if thrown is not None:
            lines = [f"fetch() throws TypeError: {thrown} No request is sent (Fetch standard)"]
            steps.append(Step("fetch()", "blocked", lines))
            fix = Fix(f"remove NUL, CR and LF (and characters above U+00FF) from {name}")
            return _blocked(result, "fetch_header_refused", None, fix)
        if browser.fetch_drops_header(name, value):
            header_lines.append(
                f"fetch() drops the header {name} (a forbidden header): the browser sets it "
                "itself or never sends it; the rest is explained without it"
            )
            continue
        kept.append((name, browser.normalize_header_value(value)))
    headers = browser.combine_headers(kept)
    repeated = [n for n, _ in headers if sum(k.lower() == n.lower() for k, _ in kept) > 1]
    for name in repeated:
        value = next(v for n, v in headers if n == name)
        header_lines.append(
            f"the page sets {name} more than once: fetch() sends one {name} header with the "
            f"values joined by ', ' ({value!r}), and that value is what is checked below"
        )
    unparsable = next(((n, v) for n, v in headers if not parser_accepts_header(n, v)), None)
    if unparsable is not None:
        header_lines.append(
            f"corsproxy's HTTP parser (llhttp) refuses the value of {unparsable[0]} "
            f"({unparsable[1]!r}: a control character other than tab): fetch() sends it, and "
            "corsproxy answers 400 (bad_request: invalid header value char), before any "
            "CORS header"
        )
    if header_lines:
        steps.append(Step("Headers", "info" if unparsable is None else "blocked", header_lines))

    # 3. The origin against the allow-list.
    steps.append(_origin_step(config, route, policy, origin))

    # 4. Does the browser send a preflight?
    need = browser.preflight_need(method, headers)
    if need.needed:
        steps.append(Step("Preflight needed?", "info", ["yes: " + r for r in need.reasons]))
    else:
        steps.append(
            Step(
                "Preflight needed?",
                "info",
                [
                    f"no CORS preflight: {method} with only CORS-safelisted headers is a "
                    "simple request"
                    + (
                        "; Chromium 104-141 still send a Private Network Access preflight, "
                        f"see step {len(steps) + 2}"
                        if private_network
                        else ""
                    )
                ],
            )
        )

    other_engine = engines.private_network_note(engine)
    if asked_private_network and not websocket and other_engine is not None:
        steps.append(Step("Local Network Access", "info", [other_engine]))
    if private_network:  # Local Network Access replaced the PNA preflight in Chromium 142
        steps.append(
            Step(
                "Local Network Access",
                "info",
                browser.local_network_access_notes(policy.allow_private_network),
            )
        )

    # 5. The preflight, answered by corsproxy.
    if need.needed:
        pre_headers = [(ACRM, method)]
        if need.request_header_names:
            pre_headers.append((ACRH, ",".join(need.request_header_names)))
        if pna_preflight:
            pre_headers.append((ACRPN, "true"))
        view = _request_view("OPTIONS", normalized.route_path, origin, pre_headers)
        decision = _enforced(decide(policy, view))
        status, answer = _answer(decision)
        lines = [
            f"OPTIONS {normalized.route_path} with "
            + ", ".join(f"{n}: {v}" for n, v in pre_headers),
            f"answered by corsproxy (never forwarded): {status}",
        ]
        lines += _preflight_checks(policy, decision, method, need.request_header_names)
        if decision.allowed:
            max_age = next((v for n, v in answer if n.lower() == "access-control-max-age"), None)
            seconds = int(max_age) if max_age is not None and max_age.isdigit() else None
            lines.append(engines.preflight_cache_note(engine, seconds, credentials))
        failure = browser.preflight_check(
            status,
            answer,
            origin,
            credentials,
            method,
            need.request_header_names,
            pna_preflight,
        )
        steps.append(Step("Preflight", "blocked" if failure else "ok", lines, answer))
        if failure is not None:
            reason = decision.reason if not decision.allowed else browser.block_code(failure)
            if not parsable and reason == Reason(ReasonCode.METHOD_NOT_ALLOWED, method):
                fix = _unparsable_method_fix(config, route, method)
            else:
                fix = _decision_fix(config, route, decision, origin, headers, credentials)
            return _blocked(result, reason, failure, fix)

    # 6. The actual request and the response corsproxy sends back.
    if not parsable:
        lines = [f"{method} {normalized.route_path}: corsproxy answers 400 (the request could "
                 "not be parsed), without Access-Control-* headers"]  # fmt: skip
        failure = browser.cors_check([], origin, credentials, status=400)
        steps.append(Step("Actual request", "blocked", lines))
        fix = _unparsable_method_fix(config, route, method)
        return _blocked(result, "method_unparsable", failure, fix)
    if unparsable is not None:
        lines = [
            f"{method} {normalized.route_path}: corsproxy answers 400 (the header "
            f"{unparsable[0]} could not be parsed), without Access-Control-* headers"
        ]
        failure = browser.cors_check([], origin, credentials, status=400)
        steps.append(Step("Actual request", "blocked", lines))
        fix = Fix(f"remove the control characters from the value of {unparsable[0]} in the page")
        return _blocked(result, "header_unparsable", failure, fix)
    view = _request_view(method, normalized.route_path, origin, headers)
    decision = _enforced(decide(policy, view))
    answered: int | None = None  # None: the upstream answers
    if decision.action is Action.REFUSE:
        answered, answer = _answer(decision)
        lines = [f"{method} refused by corsproxy with {answered} (on_disallowed: reject)"]
    elif decision.action is Action.BAD_REQUEST:
        answered, answer = _answer(decision)
        lines = [f"corsproxy answers {answered}: {decision.reason.describe()}"]
    else:
        answer = response_headers(decision, [])
        lines = [f"{method} {credentials_text}: forwarded to {target}"]
        if decision.strip_upstream_cors:
            lines.append("the upstream's own Access-Control-* headers are removed")
        lines.append(
            "headers corsproxy adds to the upstream's response:"
            if answer
            else "corsproxy adds no header to the upstream's response"
        )
    failure = browser.cors_check(answer, origin, credentials, status=answered)
    if (
        failure is not None
        and answered is None
        and engines.UPSTREAM_STATUS
        in " ".join(engines.engine_block(engine, failure, "", origin).messages)
    ):
        lines.append(
            f"the {facts.label} console names the upstream's status, unknown here: "
            f"'{engines.UPSTREAM_STATUS}' below"
        )
    steps.append(Step("Actual request", "blocked" if failure else "ok", lines, answer))
    if failure is not None:
        fix = _decision_fix(config, route, decision, origin, headers, credentials)
        reason = decision.reason if not decision.allowed else browser.block_code(failure)
        return _blocked(result, reason, failure, fix)

    result.allowed = True
    result.reason = decision.reason
    result.readable = browser.readable_headers(answer, credentials)
    readable = "every response header" if result.readable == ("*",) else ", ".join(result.readable)
    steps.append(Step("Script can read", "ok", [f"status, body and headers: {readable}"]))
    return result


def websocket_url(url: str) -> tuple[str, str] | None:
    """For a ws:// or wss:// URL as a page passes it to `new WebSocket()`: the path (and
    query) requested, and the origin the page addresses the proxy at (without the userinfo,
    which is not part of the Host a browser sends)."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() not in ("ws", "wss"):
        return None
    authority, slash, tail = rest.partition("/")
    authority, _, query = authority.partition("?")
    host = authority.rpartition("@")[2]
    path = slash + tail if slash else "/" + (f"?{query}" if query else "")
    return path, f"{'https' if scheme.lower() == 'wss' else 'http'}://{host}"


def websocket_own_origin(
    proxy_origin: str, *, tls: bool = False, trusted: bool = False
) -> tuple[str, list[str]]:
    """The proxy's own origin as the server computes it for a handshake to `proxy_origin`
    (`scheme://host[:port]` as the page addresses the proxy), and lines saying what was
    assumed. The scheme is the listener's (`https` with `tls:`); behind a proxy in
    `trusted_proxies`, the one it reports, taken here as the one the page used; otherwise
    `http`, whatever the page used (a TLS terminator in front that is not trusted)."""
    if not proxy_origin:
        return "", [
            "the proxy's own origin (scheme and Host as the page addresses the proxy) is "
            "unknown: pass --proxy-origin, or the ws:// URL the page opens as --path; until "
            "then no Origin counts as the proxy's own"
        ]
    scheme, sep, authority = proxy_origin.partition("://")
    authority = authority.rpartition("@")[2].split("/", 1)[0]
    page_scheme = "https" if scheme.lower() in ("https", "wss") else "http"
    if not sep:
        return proxy_origin, [f"the proxy's own origin: {proxy_origin}"]
    if tls:
        own = f"https://{authority}"
        lines = [f"the proxy's own origin: {own} (corsproxy terminates TLS: `tls:` is set)"]
        if page_scheme == "http":
            lines.append("the listener speaks only TLS: a page cannot reach it as ws:// or http://")
        return own, lines
    if trusted:
        own = f"{page_scheme}://{authority}"
        return own, [
            f"the proxy's own origin: {own}, as a proxy in trusted_proxies reports it "
            "(X-Forwarded-Proto/-Host, or Forwarded with forwarded_headers: forwarded); "
            "taken here as the scheme and host the page used"
        ]
    own = f"http://{authority}"
    lines = [f"the proxy's own origin: {own}"]
    if page_scheme == "https":
        lines.append(
            f"corsproxy does not terminate TLS here (no `tls:`) and trusts no proxy in front "
            f"(no trusted_proxies): behind the TLS terminator it sees http, so it takes {own} "
            f"(not https://{authority}) as its own origin, and pages on https:// count as "
            "cross-origin; set trusted_proxies to the terminator's address, or serve TLS "
            "with `tls:`"
        )
    return own, lines


def _explain_websocket(
    config: Config,
    route: Route,
    origin: str,
    path: str,
    target: str,
    own: str,
    result: Explanation,
    private_network: bool = False,
) -> Explanation:
    """A WebSocket handshake: no preflight and no CORS in the browser, so the decision's
    Origin check is all that stands between a page and every message."""
    policy = route.cors
    steps = result.steps
    if policy.enabled:
        steps.append(_origin_step(config, route, policy, origin))
    else:
        same = same_origin(origin, own)
        line = (
            f"{origin} {'is' if same else 'is not'} the proxy's own origin {own} "
            "(scheme, host and port as the page addressed the proxy)"
            if own
            else f"{origin} is not known to be the proxy's own origin (see --proxy-origin)"
        )
        steps.append(Step("Origin", "ok" if same else "blocked", [line]))
    if private_network:  # said, never silently dropped
        steps.append(Step("Local Network Access", "info", browser.websocket_local_network_notes()))
    view = RequestView.from_pairs("GET", path, [("Origin", origin)], True, own)
    decision = _enforced(decide(policy, view))
    lines = [
        "browsers send no preflight for a WebSocket and apply no CORS to it: a page that "
        "opens one reads every message, so corsproxy checks the Origin of the handshake",
    ]
    if decision.action is Action.REFUSE:
        status, answer = _answer(decision)
        lines += [
            f"corsproxy refuses the handshake with {status} ({decision.reason}); "
            "it never reaches the upstream",
            "the page sees an error event, then a close with code 1006 (the 403 shows in "
            "DevTools only)",
        ]
        steps.append(Step("WebSocket handshake", "blocked", lines, answer))
        result.websocket_status = status
        return _blocked(result, decision.reason, None, _websocket_fix(config, route, origin, own))
    ws_target = target.replace("http://", "ws://", 1).replace("https://", "wss://", 1)
    lines.append(f"forwarded to {ws_target}; the upstream's 101 reaches the page")
    if decision.strip_credentials:
        places = places_of(route, config.source, config.warnings)
        enforce = policy.mode is Mode.ENFORCE
        result.strips_credentials = enforce
        lines.append(
            ("" if enforce else "with mode: enforce, it would be ")
            + "forwarded WITHOUT the page's Cookie and Authorization headers: browsers attach "
            "cookies to every WebSocket handshake, and this policy has allow_credentials: "
            "false, so a cross-origin handshake gets what a CORS request without credentials "
            f"gets ({set_key(places, 'allow_credentials', True).text} "
            "to keep them)"
        )
    answer = response_headers(decision, [])
    if answer:
        lines.append("headers corsproxy adds to the 101:")
    steps.append(Step("WebSocket handshake", "ok", lines, answer))
    steps.append(Step("Script can read", "ok", ["every message, both ways"]))
    result.allowed = True
    result.reason = decision.reason
    return result


def _answered_before_cors(
    status: int,
    method: str,
    headers: Sequence[tuple[str, str]],
    origin: str,
    credentials: bool,
) -> browser.Block | None:
    """The block for an answer corsproxy gives before any CORS (a bad path's 400, no
    route's 404), without CORS headers: to the preflight, when the request needs one (the
    browser sends it first, to the same path), else to the request itself."""
    sent = browser.normalize_method(method)
    kept = browser.combine_headers(
        [
            (name, browser.normalize_header_value(value))
            for name, value in headers
            if browser.fetch_header_error(name, value) is None
            and not browser.fetch_drops_header(name, value)
        ]
    )
    need = browser.preflight_need(sent, kept)
    if need.needed:
        return browser.preflight_check(
            status, [], origin, credentials, sent, need.request_header_names
        )
    return browser.cors_check([], origin, credentials, status=status)


def _decision_fix(
    config: Config,
    route: Route,
    decision: Decision,
    origin: str,
    headers: Sequence[tuple[str, str]],
    credentials: bool,
) -> Fix:
    """Every edit the request needs: one per refusal of the decision, and credentials."""
    places = places_of(route, config.source, config.warnings)
    policy = route.cors
    fixes: list[Fix] = []
    for reason in () if decision.allowed else decision.reasons:
        name = next((n for n, _ in headers if n.lower() == reason.detail), reason.detail)
        fixes.append(reason_fix(places, policy, reason, origin, name))
    if credentials and policy.enabled and (not policy.allow_credentials or not fixes):
        fixes.append(credentials_fix(places, policy, origin))
    return every(fixes)


def _url_lines(written: str, sent: str) -> list[str]:
    """The path as the page writes it, and as the browser sends it."""
    lines = [
        f"the browser sends {sent} for {written!r}: the URL parser drops the fragment, reads "
        "'\\' as '/', resolves '.' and '..' segments (also written %2e) and percent-encodes "
        "spaces, quotes, <>`{}|^, controls and non-ASCII bytes (UTF-8); the rest is "
        "explained for that path"
    ]
    try:
        raw, _ = split_target(written)
        normalize_path(raw)
    except PathError as exc:
        lines.append(
            f"a client that sends {written!r} as written (curl --path-as-is) gets 400 from "
            f"corsproxy: {exc} ({exc.reason})"
        )
    return lines


def _websocket_fix(config: Config, route: Route, origin: str, own: str) -> Fix:
    places = places_of(route, config.source, config.warnings)
    if route.cors.enabled:
        return reason_fix(places, route.cors, ORIGIN_NOT_ALLOWED, origin)
    fix = disabled_fix(places, origin)
    where = fix.text.split(" is false", 1)[0] if fix.text else "this path's route: cors: false"
    return Fix(
        f"{where} is false, so only pages of the proxy's own origin ({own or 'unknown'}) may "
        f"open WebSockets: give the route a cors policy that lists '{origin}', or pass "
        "--proxy-origin if the page addresses the proxy otherwise",
        fix.edits,
    )


def _method_lines(written: str, sent: str) -> list[str]:
    """What fetch() makes of the method as the page writes it."""
    if sent != written:
        return [
            f"fetch() sends {sent}: it upper-cases DELETE, GET, HEAD, OPTIONS, POST and PUT "
            f"written in any case ('{written}')"
        ]
    if sent != sent.upper():
        return [
            f"fetch() sends '{sent}' as written: only DELETE, GET, HEAD, OPTIONS, POST and PUT "
            f"are upper-cased, and methods are case-sensitive, so a preflight asks for "
            f"'{sent}' and allow_methods must list '{sent}' exactly"
        ]
    return []


def _unparsable_method_fix(config: Config, route: Route, method: str) -> Fix:
    """A method corsproxy's parser refuses: no config allows it; the page can send another."""
    upper = method.upper()
    if upper != method and parser_accepts_method(upper):
        return Fix(
            f"write the method as '{upper}' in the page: the browser sends '{method}' as "
            "written, and corsproxy's HTTP parser refuses it with 400"
            + (
                ""
                if route.cors.any_method or upper in route.cors.allow_methods
                else " (then allow it: "
                + reason_fix(
                    places_of(route, config.source, config.warnings),
                    route.cors,
                    Reason(ReasonCode.METHOD_NOT_ALLOWED, upper),
                    "",
                ).text
                + ")"
            )
        )
    return Fix(
        f"no configuration lets the method {method} through: corsproxy's HTTP parser refuses "
        "it with 400; use a registered method (POST, PUT, PATCH, DELETE, ...)"
    )


def _malformed_origin(
    config: Config,
    result: Explanation,
    origin: str,
    spelled: browser.SerializedOrigin,
    again: dict[str, Any],
) -> Explanation:
    """An --origin no browser sends: blocked, with the serialized origin it would send."""
    lines = [f"{origin!r} is not an Origin a browser sends: {spelled.problem}"]
    result.did_you_mean = spelled.suggestion
    if spelled.suggestion is None:
        lines.append("a browser sends scheme://host[:port], e.g. https://app.example.com")
        result.steps.append(Step("Origin", "blocked", lines))
        return _blocked(result, "origin_malformed", None, NO_FIX)
    lines.append(f"a page at that address sends Origin: {spelled.suggestion}")
    result.steps.append(Step("Origin", "blocked", lines))
    retry = explain(config, spelled.suggestion, **again)
    text = f"did you mean `{spelled.suggestion}`? (explain --origin {spelled.suggestion}: "
    if retry.allowed:
        fix = Fix(text + "allowed)")
    else:
        then = f"; fix: {retry.fix}" if retry.fix else ""
        fix = Fix(text + f"blocked, {retry.reason}{then})", retry.fix_edits)
    return _blocked(result, "origin_malformed", None, fix)


def _blocked(
    result: Explanation, reason: str, failure: browser.Block | None, fix: Fix
) -> Explanation:
    result.allowed = False
    result.reason = reason
    result.failure = failure
    result.fix = fix.text
    result.fix_edits = fix.edits
    result.withheld = fix.withheld
    return result


def _preflight_checks(
    policy: CorsPolicy, decision: Decision, method: str, names: Sequence[str]
) -> list[str]:
    """Each check corsproxy made; pass or fail comes from the decision's own reasons."""
    if not policy.enabled:
        return ["FAIL  cors is false on this route: every preflight is refused"]
    reasons = set(decision.reasons)

    def line(failed: bool, what: str, why: str) -> str:
        return f"{'FAIL' if failed else 'ok  '}  {what}: {why}"

    origin_failed = ORIGIN_NOT_ALLOWED in reasons
    checks = [line(origin_failed, "origin", "not allowed" if origin_failed else "allowed")]
    method_failed = (
        Reason(ReasonCode.METHOD_NOT_ALLOWED, method) in reasons or METHOD_INVALID in reasons
    )
    if method_failed:
        why = "not in allow_methods"
        by_case = any(m != method and m.upper() == method.upper() for m in policy.allow_methods)
        if by_case or method not in browser.NORMALIZED_METHODS:
            why += " (methods are case-sensitive)"
    elif method in SAFELISTED_METHODS:
        why = "GET, HEAD and POST never need listing"
    else:
        why = "allowed by '*'" if policy.any_method else "listed in allow_methods"
    checks.append(line(method_failed, f"method {method}", why))
    if HEADERS_INVALID in reasons:
        checks.append(line(True, "request headers", "malformed or too many"))
    for name in names:
        failed = Reason(ReasonCode.HEADER_NOT_ALLOWED, name) in reasons
        if failed:
            why = "not in allow_headers"
        elif name in policy.allow_headers:
            why = "listed in allow_headers"
        elif policy.any_header:
            why = "allowed by '*'"
        else:
            why = "a CORS-safelisted name, always allowed"
        checks.append(line(failed, f"header {name}", why))
    if PRIVATE_NETWORK_NOT_ALLOWED in reasons:
        checks.append(line(True, "private network", "allow_private_network is false"))
    return checks


def _origin_step(config: Config, route: Route, policy: CorsPolicy, origin: str) -> Step:
    if not policy.enabled:
        return Step("Origin", "info", ["not checked: cors is false on this route"])
    match = policy.origins.match(origin)
    if match.allowed and match.entry is not None:
        source = route.cors_sources.get("allow_origins", "")
        at = f" ({source})" if source else ""
        return Step(
            "Origin",
            "ok",
            [f"{origin} is allowed by allow_origins[{match.entry.index}] '{match.entry.text}'{at}"],
        )
    lines = [f"{origin} matches no entry of allow_origins"]
    if origin == "null":
        lines.append("'null' is only allowed when listed literally")
    elif parse_origin(origin) is None and browser.serialized_origin(origin).valid:
        lines.append(
            "a page whose host name ends in a dot sends it so; corsproxy's origin parser "
            "does not read such a host name, so only allow_origins '*' matches it"
        )
    elif parse_origin(origin) is None:
        lines.append("it is not a serialized origin (scheme://host[:port]), so nothing matches it")
    return Step("Origin", "blocked", lines)


def render_text(result: Explanation) -> str:
    out: list[str] = []
    marks = {"ok": "ok", "blocked": "BLOCKED", "info": ""}
    for number, step in enumerate(result.steps, 1):
        mark = marks[step.outcome]
        out.append(f"{number}. {step.title}" + (f"  [{mark}]" if mark else ""))
        out.extend(f"     {line}" for line in step.lines)
        out.extend(f"       {name}: {value}" for name, value in step.headers)
    pad = ""
    if result.upstream_decides:
        if result.websocket:
            out.append(
                "VERDICT (report-only): corsproxy forwards the handshake whatever its Origin; "
                "the upstream's answer decides whether the socket opens (a 101 opens it)"
            )
        else:
            out.append(
                "VERDICT (report-only): corsproxy passes the upstream's own CORS headers "
                "(and forwards preflights to it); the browser's verdict depends on them"
            )
        pad = "  "
        enforce = "ALLOWED" if result.allowed else f"BLOCKED ({result.reason})"
        out.append(f"  With mode: enforce: {enforce}")
    elif result.allowed:
        out.append("VERDICT: ALLOWED: the page can read the response")
    else:
        out.append(f"VERDICT: BLOCKED ({result.reason})")
    permitted = result.with_permission
    if permitted is not None:
        then = "ALLOWED" if permitted.allowed else f"BLOCKED ({permitted.reason})"
        out.append(f"  With the user's Local Network Access permission: {then}")
    label = engines.BY_NAME[result.browser].label
    out.append(f"{pad}  Browser: {label} (--browser)")
    refused = result.websocket_failure
    if refused is not None:
        when = " (if the upstream refuses it)" if result.allowed else ""
        out.append(f"{pad}  {label} console{when}:")
        out.extend(f"{pad}    {line}" for line in refused.messages)
        if refused.status is None and engines.UPSTREAM_STATUS in refused.console:
            out.append(f"{pad}    ({engines.UPSTREAM_STATUS}: the upstream's status)")
        out.append(
            f"{pad}  the page sees an error event, then a close event with code "
            f"{refused.close_code}"
        )
    thrown = result.websocket_thrown
    if thrown is not None:
        out.append(f"  new WebSocket() throws {thrown.exception}")
        if thrown.messages:
            out.append(f"  {label} console:")
            out.extend(f"    {line}" for line in thrown.messages)
    if not result.allowed:
        if result.failure is not None:
            out.append(f"{pad}  Firefox: {result.failure.firefox}")
            out.append(f"{pad}  Chrome:  {result.failure.chrome}: {result.failure.message}")
        shown = result.engine_failure
        if shown is not None:
            out.append(f"{pad}  {label} console:")
            out.extend(f"{pad}    {line}" for line in shown.messages)
            placeholder = f"Status code: {engines.UPSTREAM_STATUS}"
            if any(placeholder in line for line in shown.messages):
                out.append(f"{pad}    ({engines.UPSTREAM_STATUS}: the upstream's status)")
            out.append(f"{pad}  fetch() rejects with {shown.fetch_error}")
        if result.cause:
            out.append(f"{pad}  Cause:   {result.cause}")
        if result.fix:
            out.append(f"{pad}  Fix:     {result.fix}")
    return "\n".join(out) + "\n"
