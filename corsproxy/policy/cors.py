"""The CORS decision: pure functions over a request view and a compiled policy.

`decide()` says what to do with a request (answer a preflight, refuse, forward) and which
headers to send; `response_headers()` applies a decision to the upstream's response headers.
The server only executes decisions; `corsproxy explain` runs this very code.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from corsproxy.policy.http_grammar import TOKEN
from corsproxy.policy.origins import OriginMatcher, parse_origin

SAFELISTED_METHODS = frozenset({"GET", "HEAD", "POST"})
# Fetch's forbidden methods, matched byte-case-insensitively: no page can ever send them.
FORBIDDEN_METHODS = frozenset({"CONNECT", "TRACE", "TRACK"})
# Request header names a preflight may list that every policy allows (Fetch safelist; the
# browser lists them only for unusual values, e.g. `Content-Type: application/json`).
SAFELISTED_HEADER_NAMES = frozenset(
    {"accept", "accept-language", "content-language", "content-type"}
)

ACAO = "Access-Control-Allow-Origin"
ACAC = "Access-Control-Allow-Credentials"
ACAM = "Access-Control-Allow-Methods"
ACAH = "Access-Control-Allow-Headers"
ACEH = "Access-Control-Expose-Headers"
ACMA = "Access-Control-Max-Age"
ACAPN = "Access-Control-Allow-Private-Network"
ACRM = "Access-Control-Request-Method"
ACRH = "Access-Control-Request-Headers"
ACRPN = "Access-Control-Request-Private-Network"

PREFLIGHT_VARY = ("Origin", ACRM, ACRH)
ACTUAL_VARY = ("Origin",)

_OWS = " \t"

# Bounds for parsing Access-Control-Request-Headers (see rs/cors#170): a browser sends one
# short line of sorted, unique, lower-case names; anything far beyond that is refused early.
MAX_REQUEST_HEADER_NAMES = 64
MAX_EMPTY_ELEMENTS = 16
MAX_HEADER_NAME_LENGTH = 256
MAX_FIELD_LINES = 16


class Mode(StrEnum):
    ENFORCE = "enforce"
    REPORT_ONLY = "report-only"


class OnDisallowed(StrEnum):
    FORWARD = "forward"
    REJECT = "reject"


class Action(StrEnum):
    FORWARD = "forward"  # send to the upstream, then apply `response_headers()`
    PREFLIGHT = "preflight"  # answer 204 here with `headers`
    REFUSE = "refuse"  # answer 403 here, no Access-Control-* header
    BAD_REQUEST = "bad_request"  # answer 400 here


class Kind(StrEnum):
    PREFLIGHT = "preflight"
    ACTUAL = "actual"  # a request with an Origin that is not a preflight
    NONE = "none"  # no Origin: not a CORS request


class ReasonCode(StrEnum):
    """Why a decision went as it did: the stable codes of logs, metrics and `explain`."""

    NO_ORIGIN = "no_origin"
    ORIGIN_ALLOWED = "origin_allowed"
    ORIGIN_NOT_ALLOWED = "origin_not_allowed"
    ORIGIN_MULTIPLE = "origin_multiple"
    CORS_DISABLED = "cors_disabled"
    METHOD_NOT_ALLOWED = "method_not_allowed"  # detail: the method
    METHOD_INVALID = "method_invalid"
    HEADER_NOT_ALLOWED = "header_not_allowed"  # detail: the lower-case header name
    HEADERS_INVALID = "headers_invalid"
    PRIVATE_NETWORK_NOT_ALLOWED = "private_network_not_allowed"
    WEBSOCKET_ORIGIN_NOT_ALLOWED = "websocket_origin_not_allowed"
    WEBSOCKET_CROSS_ORIGIN = "websocket_cross_origin"
    WEBSOCKET_SAME_ORIGIN = "websocket_same_origin"


_WEBSOCKET_CODES = frozenset(
    {
        ReasonCode.WEBSOCKET_ORIGIN_NOT_ALLOWED,
        ReasonCode.WEBSOCKET_CROSS_ORIGIN,
        ReasonCode.WEBSOCKET_SAME_ORIGIN,
    }
)


class Reason(str):
    """A code and its detail, which *is* its rendering (`code` or `code:detail`).

    The rendered text is the interface (access log, metric label source, `explain`), so a
    reason is that string, made once here; readers take `code` and `detail`, never parse.
    """

    code: ReasonCode
    detail: str

    def __new__(cls, code: ReasonCode, detail: str = "") -> Reason:
        self = super().__new__(cls, f"{code.value}:{detail}" if detail else code.value)
        self.code = code
        self.detail = detail
        return self

    def describe(self) -> str:
        """The reason in words, for answer bodies and `explain`."""
        return _describe(self.code, self.detail)


def _describe(code: ReasonCode, detail: str) -> str:
    match code:
        case ReasonCode.ORIGIN_NOT_ALLOWED | ReasonCode.WEBSOCKET_ORIGIN_NOT_ALLOWED:
            return "origin not allowed"
        case ReasonCode.ORIGIN_MULTIPLE:
            return "more than one Origin header"
        case ReasonCode.CORS_DISABLED:
            return "cross-origin access is disabled on this path"
        case ReasonCode.METHOD_NOT_ALLOWED:
            return f"method '{detail}' not allowed"
        case ReasonCode.METHOD_INVALID:
            return "Access-Control-Request-Method is not a single method token"
        case ReasonCode.HEADER_NOT_ALLOWED:
            return f"header '{detail}' not allowed"
        case ReasonCode.HEADERS_INVALID:
            return "Access-Control-Request-Headers is malformed or too long"
        case ReasonCode.PRIVATE_NETWORK_NOT_ALLOWED:
            return "private network access not allowed"
        case ReasonCode.WEBSOCKET_CROSS_ORIGIN:
            return "cross-origin WebSocket to a path without cross-origin access"
        case ReasonCode.WEBSOCKET_SAME_ORIGIN:
            return "same-origin WebSocket"
    return f"{code.value}:{detail}" if detail else code.value


# The reasons without detail, made once: decisions share them.
NO_ORIGIN = Reason(ReasonCode.NO_ORIGIN)
ORIGIN_ALLOWED = Reason(ReasonCode.ORIGIN_ALLOWED)
ORIGIN_NOT_ALLOWED = Reason(ReasonCode.ORIGIN_NOT_ALLOWED)
ORIGIN_MULTIPLE = Reason(ReasonCode.ORIGIN_MULTIPLE)
CORS_DISABLED = Reason(ReasonCode.CORS_DISABLED)
METHOD_INVALID = Reason(ReasonCode.METHOD_INVALID)
HEADERS_INVALID = Reason(ReasonCode.HEADERS_INVALID)
PRIVATE_NETWORK_NOT_ALLOWED = Reason(ReasonCode.PRIVATE_NETWORK_NOT_ALLOWED)
WEBSOCKET_ORIGIN_NOT_ALLOWED = Reason(ReasonCode.WEBSOCKET_ORIGIN_NOT_ALLOWED)
WEBSOCKET_CROSS_ORIGIN = Reason(ReasonCode.WEBSOCKET_CROSS_ORIGIN)
WEBSOCKET_SAME_ORIGIN = Reason(ReasonCode.WEBSOCKET_SAME_ORIGIN)


@dataclass(frozen=True, slots=True)
class CorsPolicy:
    """A compiled, immutable policy. `enabled=False` is `cors: false`."""

    origins: OriginMatcher
    allow_methods: tuple[str, ...] = ("GET", "HEAD", "POST")
    any_method: bool = False
    allow_headers: frozenset[str] = frozenset()  # lower-case names
    any_header: bool = False
    expose_headers: tuple[str, ...] = ()
    expose_any: bool = False
    allow_credentials: bool = False
    max_age: int = 600
    allow_private_network: bool = False
    on_disallowed: OnDisallowed = OnDisallowed.FORWARD
    mode: Mode = Mode.ENFORCE
    enabled: bool = True
    # Derived once, so the hot path only joins nothing.
    methods_value: str = field(init=False, default="")
    expose_value: str = field(init=False, default="")
    # Memo of decide() for this policy (see decide_cached); a reload compiles a new policy.
    decisions: DecisionMemo = field(
        init=False, default_factory=lambda: DecisionMemo(), compare=False, hash=False, repr=False
    )

    def __post_init__(self) -> None:
        object.__setattr__(self, "methods_value", ", ".join(self.allow_methods))
        expose = "*" if self.expose_any else ", ".join(self.expose_headers)
        object.__setattr__(self, "expose_value", expose)

    @property
    def answers_wildcard(self) -> bool:
        """`*` is answered as ACAO only to any-origin policies without credentials."""
        return self.origins.allows_any and not self.allow_credentials


@dataclass(frozen=True, slots=True)
class RequestView:
    """What the decision reads of a request: all field lines, duplicates kept."""

    method: str
    path: str
    origin: tuple[str, ...] = ()
    request_method: tuple[str, ...] = ()
    request_headers: tuple[str, ...] = ()
    request_private_network: tuple[str, ...] = ()
    # A WebSocket handshake, and the proxy's own origin as the client addressed it
    # (`scheme://Host`): CORS does not protect WebSockets, so the decision checks Origin itself.
    websocket: bool = False
    own_origin: str = ""

    @classmethod
    def from_pairs(
        cls,
        method: str,
        path: str,
        headers: Iterable[tuple[str, str]],
        websocket: bool = False,
        own_origin: str = "",
    ) -> RequestView:
        lines: dict[str, list[str]] = {}
        for name, value in headers:
            lines.setdefault(name.lower(), []).append(value.strip(_OWS))
        return cls(
            method,
            path,
            tuple(lines.get("origin", ())),
            tuple(lines.get(ACRM.lower(), ())),
            tuple(lines.get(ACRH.lower(), ())),
            tuple(lines.get(ACRPN.lower(), ())),
            websocket,
            own_origin,
        )


@dataclass(frozen=True, slots=True)
class Decision:
    action: Action
    kind: Kind
    allowed: bool  # the origin may read the response (preflight: may send the request)
    reasons: tuple[Reason, ...]
    headers: tuple[tuple[str, str], ...] = ()  # Access-Control-* headers to send
    vary: tuple[str, ...] = ()  # tokens to merge into Vary
    strip_upstream_cors: bool = True
    status: int = 0  # for answers made here
    would: Decision | None = None  # report-only: what enforce mode would have done
    # A WebSocket handshake forwarded without Cookie and Authorization (see _decide_enforced).
    strip_credentials: bool = False
    # Forwarded without X-HTTP-Method-Override and its kin: set on every refusal of a request
    # with an Origin line. A browser preflights those headers, so only a refused origin's
    # request carries them, and it must not turn a simple POST into a DELETE upstream.
    drop_method_overrides: bool = False

    @property
    def reason(self) -> Reason:
        return self.reasons[0]

    @property
    def verdict(self) -> str:
        """allowed | refused | would_refuse | none, as counted in metrics."""
        if self.would is not None:
            verdict = self.would.verdict
            return "would_refuse" if verdict == "refused" else verdict
        if self.kind is Kind.NONE:
            return "none"
        return "allowed" if self.allowed else "refused"

    def body(self) -> bytes:
        """The short text body of an answer made here (empty for a 204)."""
        if self.action is Action.PREFLIGHT:
            return b""
        what = "preflight" if self.kind is Kind.PREFLIGHT else "request"
        text = "; ".join(r.describe() for r in self.reasons)
        if self.action is Action.BAD_REQUEST:
            return f"Bad request: {text}\n".encode()
        if self.reason.code in _WEBSOCKET_CODES:
            return f"WebSocket refused: {text}\n".encode()
        return f"CORS {what} refused: {text}\n".encode()


def parse_request_headers(lines: Sequence[str]) -> tuple[str, ...] | None:
    """Parse Access-Control-Request-Headers field lines into lower-case unique names.

    Tolerates several lines, OWS and empty elements as gateways produce them, with bounded
    work: at most a few hundred bytes are looked at past the limits. None when malformed.
    """
    if len(lines) > MAX_FIELD_LINES:
        return None
    names: list[str] = []
    empty = elements = 0
    for line in lines:
        start, n = 0, len(line)
        while True:
            comma = line.find(",", start, start + MAX_HEADER_NAME_LENGTH + 8)
            end = n if comma < 0 else comma
            if end - start > MAX_HEADER_NAME_LENGTH + 8:
                return None
            element = line[start:end].strip(_OWS)
            if not element:
                empty += 1
                if empty > MAX_EMPTY_ELEMENTS:
                    return None
            elif not TOKEN.match(element):
                return None
            else:
                elements += 1  # duplicates count too, or `a,a,a,...` would be unbounded
                if elements > MAX_REQUEST_HEADER_NAMES:
                    return None
                name = element.lower()
                if name not in names:
                    names.append(name)
            if comma < 0:
                break
            start = comma + 1
    return tuple(names)


def is_preflight(request: RequestView) -> bool:
    """OPTIONS to a path with both a non-empty Origin and Access-Control-Request-Method.

    Not `OPTIONS *`: the server asks this of the raw target too (Max-Forwards), before the
    path check answers `*` with 400."""
    return (
        request.method == "OPTIONS"
        and request.path != "*"
        and any(request.origin)
        and any(request.request_method)
    )


def decide(policy: CorsPolicy, request: RequestView) -> Decision:
    """The whole CORS decision for one request."""
    if len(request.origin) > 1:
        # Browsers send one Origin; two lines make every reading ambiguous (and
        # `headers.get()` would see only the first).
        return Decision(
            Action.BAD_REQUEST,
            Kind.ACTUAL,
            allowed=False,
            reasons=(ORIGIN_MULTIPLE,),
            vary=ACTUAL_VARY,
            status=400,
            drop_method_overrides=policy.mode is Mode.ENFORCE,
        )
    enforced = _decide_enforced(policy, request)
    if policy.mode is Mode.ENFORCE:
        return enforced
    return Decision(
        Action.FORWARD,
        enforced.kind,
        allowed=enforced.allowed,
        reasons=enforced.reasons,
        strip_upstream_cors=False,
        would=enforced,  # report-only changes nothing on the wire
    )


# Browsers send a handful of distinct (origin, method, headers) combinations per route, so a
# small memo answers nearly every request; keys are bounded in size and count, so hostile
# traffic can only make it miss, never grow.
MEMO_ENTRIES = 1024
MEMO_KEY_CHARS = 512


class DecisionMemo:
    """decide()'s memo for one policy: two generations of MEMO_ENTRIES // 2, a cheap LRU.

    New entries go into `young`; a full `young` becomes `old` and the previous `old` is
    dropped; a hit in `old` moves the entry back into `young`. So an entry used once per
    MEMO_ENTRIES // 2 new keys stays, however many one-off keys hostile traffic sends, and a
    hit in `young` costs one dict lookup (an OrderedDict LRU reorders on every hit).
    """

    __slots__ = ("old", "young")

    def __init__(self) -> None:
        self.young: dict[tuple[object, ...], Decision] = {}
        self.old: dict[tuple[object, ...], Decision] = {}

    def __len__(self) -> int:
        return len(self.young) + len(self.old)

    def clear(self) -> None:
        self.young, self.old = {}, {}


def decide_cached(policy: CorsPolicy, request: RequestView) -> Decision:
    """`decide()`, memoized per policy: the decision reads nothing else of the request."""
    # The own origin (from the client's Host) is read only for WebSocket handshakes.
    own_origin = request.own_origin if request.websocket else ""
    key = (
        request.method,
        request.path == "*",  # `OPTIONS *` is no preflight (the server never decides it)
        request.origin,
        request.request_method,
        request.request_headers,
        request.request_private_network,
        request.websocket,
        own_origin,
    )
    memo = policy.decisions
    decision = memo.young.get(key)
    if decision is not None:
        return decision
    decision = memo.old.pop(key, None)
    if decision is None:
        decision = decide(policy, request)
        fields = (request.origin, request.request_method, request.request_headers,
                  request.request_private_network, (own_origin,))  # fmt: skip
        if sum(len(v) for values in fields for v in values) > MEMO_KEY_CHARS:
            return decision
    young = memo.young
    if len(young) >= MEMO_ENTRIES // 2:
        memo.old, memo.young = young, {}
        young = memo.young
    young[key] = decision
    return decision


def _decide_enforced(policy: CorsPolicy, request: RequestView) -> Decision:
    origin = request.origin[0] if request.origin else ""
    if is_preflight(request):
        return _decide_preflight(policy, request, origin)
    if not origin:
        vary = ACTUAL_VARY if policy.enabled else ()
        return Decision(
            Action.FORWARD,
            Kind.NONE,
            allowed=False,
            reasons=(NO_ORIGIN,),
            vary=vary,
            drop_method_overrides=bool(request.origin),  # an empty Origin line
        )
    if not policy.enabled:
        if request.websocket:
            return _decide_websocket_without_cors(request, origin)
        return Decision(
            Action.FORWARD,
            Kind.ACTUAL,
            allowed=False,
            reasons=(CORS_DISABLED,),
            drop_method_overrides=True,
        )
    match = policy.origins.match(origin)
    if not match.allowed and request.websocket:
        # Browsers apply no CORS to WebSockets: the page reads every message, so a handshake
        # from an origin the policy does not allow is refused whatever on_disallowed says.
        return Decision(
            Action.REFUSE,
            Kind.ACTUAL,
            allowed=False,
            reasons=(WEBSOCKET_ORIGIN_NOT_ALLOWED,),
            vary=ACTUAL_VARY,
            status=403,
            drop_method_overrides=True,
        )
    if not match.allowed:
        reject = policy.on_disallowed is OnDisallowed.REJECT
        return Decision(
            Action.REFUSE if reject else Action.FORWARD,
            Kind.ACTUAL,
            allowed=False,
            reasons=(ORIGIN_NOT_ALLOWED,),
            vary=ACTUAL_VARY,
            status=403 if reject else 0,
            drop_method_overrides=True,
        )
    headers = [(ACAO, "*" if policy.answers_wildcard else origin)]
    if policy.allow_credentials:
        headers.append((ACAC, "true"))
    if policy.expose_value:
        headers.append((ACEH, policy.expose_value))
    return Decision(
        Action.FORWARD,
        Kind.ACTUAL,
        allowed=True,
        reasons=(ORIGIN_ALLOWED,),
        headers=tuple(headers),
        vary=ACTUAL_VARY,
        # Browsers attach cookies to every WebSocket handshake and nothing stops the page
        # reading the answer: a policy without credentials forwards a cross-origin one
        # without them, as it would a CORS request (else `*` would give any site the
        # user's session, which the loader refuses for HTTP).
        strip_credentials=(
            request.websocket
            and not policy.allow_credentials
            and not same_origin(origin, request.own_origin)
        ),
    )


def same_origin(origin: str, own_origin: str) -> bool:
    """Whether a request's Origin is the proxy's own (scheme, host, port) as addressed."""
    theirs = parse_origin(origin)
    return theirs is not None and theirs == parse_origin(own_origin)


def _decide_websocket_without_cors(request: RequestView, origin: str) -> Decision:
    """`cors: false` allows no cross-origin access: only a page of the proxy's own origin
    may open a WebSocket (cross-site WebSocket hijacking would otherwise ride on cookies)."""
    if same_origin(origin, request.own_origin):
        return Decision(
            Action.FORWARD,
            Kind.ACTUAL,
            allowed=True,
            reasons=(WEBSOCKET_SAME_ORIGIN,),
        )
    return Decision(
        Action.REFUSE,
        Kind.ACTUAL,
        allowed=False,
        reasons=(WEBSOCKET_CROSS_ORIGIN,),
        status=403,
        drop_method_overrides=True,
    )


def _decide_preflight(policy: CorsPolicy, request: RequestView, origin: str) -> Decision:
    vary = PREFLIGHT_VARY + ((ACRPN,) if policy.allow_private_network else ())
    if not policy.enabled:
        return Decision(
            Action.REFUSE,
            Kind.PREFLIGHT,
            allowed=False,
            reasons=(CORS_DISABLED,),
            vary=vary,
            status=403,
            drop_method_overrides=True,
        )
    reasons: list[Reason] = []
    match = policy.origins.match(origin)
    if not match.allowed:
        reasons.append(ORIGIN_NOT_ALLOWED)
    method = request.request_method[0] if len(request.request_method) == 1 else ""
    if not TOKEN.match(method):
        reasons.append(METHOD_INVALID)
    elif not _method_allowed(policy, method):
        reasons.append(Reason(ReasonCode.METHOD_NOT_ALLOWED, method))
    names = parse_request_headers(request.request_headers)
    if names is None:
        reasons.append(HEADERS_INVALID)
    elif not policy.any_header:
        reasons.extend(
            Reason(ReasonCode.HEADER_NOT_ALLOWED, name)
            for name in names
            if name not in policy.allow_headers and name not in SAFELISTED_HEADER_NAMES
        )
    wants_private = any(v == "true" for v in request.request_private_network)
    if wants_private and not policy.allow_private_network:
        reasons.append(PRIVATE_NETWORK_NOT_ALLOWED)
    if reasons:
        return Decision(
            Action.REFUSE,
            Kind.PREFLIGHT,
            allowed=False,
            reasons=tuple(reasons),
            vary=vary,
            status=403,
            drop_method_overrides=True,
        )
    headers = [(ACAO, "*" if policy.answers_wildcard else origin)]
    if policy.allow_credentials:
        headers.append((ACAC, "true"))
    headers.append((ACAM, method if policy.any_method else policy.methods_value))
    if names:
        headers.append((ACAH, ", ".join(names)))
    headers.append((ACMA, str(policy.max_age)))
    if wants_private:
        headers.append((ACAPN, "true"))
    return Decision(
        Action.PREFLIGHT,
        Kind.PREFLIGHT,
        allowed=True,
        reasons=(ORIGIN_ALLOWED,),
        headers=tuple(headers),
        vary=vary,
        status=204,
    )


def _method_allowed(policy: CorsPolicy, method: str) -> bool:
    if method.upper() in FORBIDDEN_METHODS:
        return False
    # Fetch never needs a safelisted method in Allow-Methods, so refusing one would only
    # make preflighted GETs fail while simple GETs pass.
    return method in SAFELISTED_METHODS or policy.any_method or method in policy.allow_methods


def merge_vary(existing: Sequence[str], add: Sequence[str]) -> str:
    """Merge Vary field values and tokens to add: order kept, no duplicates, `*` wins."""
    tokens: list[str] = []
    seen: set[str] = set()
    for value in existing:
        for raw in value.split(","):
            name = raw.strip(_OWS)
            if name == "*":
                return "*"
            if name and name.lower() not in seen:
                seen.add(name.lower())
                tokens.append(name)
    for token in add:
        if token.lower() not in seen:
            seen.add(token.lower())
            tokens.append(token)
    return ", ".join(tokens)


def response_headers(
    decision: Decision, upstream: Iterable[tuple[str, str]]
) -> list[tuple[str, str]]:
    """The response headers to send: the upstream's, with the decision applied.

    In enforce mode every upstream `Access-Control-*` header is removed and replaced by the
    decision's; `Vary` lines are merged into one. Other headers keep their order and
    duplicates (two `Set-Cookie` stay two).
    """
    out: list[tuple[str, str]] = []
    vary_lines: list[str] = []
    for name, value in upstream:
        lower = name.lower()
        if decision.strip_upstream_cors and lower.startswith("access-control-"):
            continue
        if decision.vary and lower == "vary":
            vary_lines.append(value)
            continue
        out.append((name, value))
    out.extend(decision.headers)
    if decision.vary:
        out.append(("Vary", merge_vary(vary_lines, decision.vary)))
    return out
