"""What each browser engine shows for a CORS block, for `explain --browser` (pure).

`browser.py` decides whether a response passes (the Fetch standard, as the engines agree);
this module turns its `Block` into what one engine's console shows and what fetch() rejects
with. Every text here was recorded from the real engines (tests/data/engine_messages.json:
Chromium 156, Firefox 153 ESR, WebKitGTK 2.50 MiniBrowser) and is checked against that table.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import quote

from corsproxy.policy.browser import Block
from corsproxy.policy.cors import ACAC, ACAH, ACAM, ACAO

ENGINES = ("chromium", "firefox", "webkit")


@dataclass(frozen=True, slots=True)
class Engine:
    name: str
    label: str
    # fetch()'s rejection for every CORS block (a TypeError).
    fetch_error: str
    # The longest a preflight answer is cached, whatever Access-Control-Max-Age says (s).
    preflight_cache_cap: int
    # Sends the Private Network Access preflight (Chromium 104-141); the others never do.
    private_network: bool
    # On a failed preflight: reports a non-ok status before the CORS check (WebKit).
    status_first: bool
    # Reuses a preflight made with credentials for a request without them, as the Fetch
    # standard's cache does (Firefox keeps the two apart: tests/test_browser.py).
    shares_credentialed_preflight: bool = True
    # One preflight cache entry per URL: a preflight for another method or header list
    # replaces it (Chromium, WebKit); Firefox keeps them side by side (tests/test_browser.py
    # test_which_later_request_reuses_a_cached_preflight).
    one_entry_per_url: bool = True
    # Blocks a public page's request to a local or loopback address unless the user granted
    # the permission (Local Network Access, Chromium 142+; policy/local_network.py).
    local_network_access: bool = False


CHROMIUM = Engine(
    "chromium", "Chromium", "TypeError: Failed to fetch", 7200, True, False,
    local_network_access=True,
)  # fmt: skip
FIREFOX = Engine(
    "firefox",
    "Firefox",
    "TypeError: NetworkError when attempting to fetch resource.",
    86400,
    False,
    False,
    shares_credentialed_preflight=False,
    one_entry_per_url=False,
)
WEBKIT = Engine("webkit", "WebKit", "TypeError: Load failed", 600, False, True)
BY_NAME = {e.name: e for e in (CHROMIUM, FIREFOX, WEBKIT)}


@dataclass(frozen=True, slots=True)
class EngineBlock:
    """One engine's report of a block: its error name (`code`: Chromium's DevTools
    `corsError`, Firefox's reason name, None for WebKit) and its console lines, in order."""

    engine: str
    code: str | None
    messages: tuple[str, ...]
    fetch_error: str

    @property
    def console(self) -> str:
        return "\n".join(self.messages)


# Chromium appends this to the console line of these DevTools names.
_VALID_VALUE_HINT = " Have the server send the header with a valid value."
_HINTED = {
    "MultipleAllowOriginValues",
    "PreflightMultipleAllowOriginValues",
    "AllowOriginMismatch",
    "PreflightAllowOriginMismatch",
}


# The status in a console line when it is the upstream's (explain cannot know it): text
# output says so next to the lines, JSON gives `status: null`.
UPSTREAM_STATUS = "N"


def _status(status: int | None) -> str:
    return UPSTREAM_STATUS if status is None else str(status)


# The URL parser's fragment percent-encode set (C0 controls, space, ", <, >, `); non-ASCII
# as UTF-8. All three engines name the URL in their console with its fragment so encoded.
_FRAGMENT_ENCODED = ' "<>`'


def console_url(url: str, written: str) -> str:
    """The URL an engine's console names for a fetch() of `url` (origin, path and query as
    sent) written as `written` by the page: the fragment, which the request drops, is kept."""
    text = re.sub(r"[\t\n\r]", "", written).rstrip("".join(map(chr, range(0x21))))
    if "#" not in text:
        return url
    fragment = text.split("#", 1)[1]
    encoded = "".join(
        quote(ch, safe="", encoding="utf-8", errors="surrogatepass")
        if ch in _FRAGMENT_ENCODED or ord(ch) < 0x20 or ord(ch) >= 0x7F
        else ch
        for ch in fragment
    )
    return f"{url}#{encoded}"


def _chromium(block: Block, url: str, origin: str) -> EngineBlock:
    hint = _VALID_VALUE_HINT if block.chrome in _HINTED else ""
    line = (
        f"Access to fetch at '{url}' from origin '{origin}' has been blocked by CORS policy: "
        f"{block.message}{hint}"
    )
    return EngineBlock(
        "chromium",
        block.chrome,
        (line, "Failed to load resource: net::ERR_FAILED"),
        CHROMIUM.fetch_error,
    )


# Firefox quotes names with typographic single quotes.
_L, _R = "\u2018", "\u2019"
_FIREFOX_REASONS = {
    "CORSMissingAllowOrigin": f"CORS header {_L}{ACAO}{_R} missing",
    "CORSMultipleAllowOriginNotAllowed": f"Multiple CORS header {_L}{ACAO}{_R} not allowed",
    "CORSNotSupportingCredentials": (
        f"Credential is not supported if the CORS header {_L}{ACAO}{_R} is {_L}*{_R}"
    ),
    "CORSAllowOriginNotMatchingOrigin": (
        f"CORS header {_L}{ACAO}{_R} does not match {_L}{{value}}{_R}"
    ),
    "CORSMIssingAllowCredentials": f"expected {_L}true{_R} in CORS header {_L}{ACAC}{_R}",
    "CORSPreflightDidNotSucceed": "CORS preflight response did not succeed",
    "CORSMethodNotFound": f"Did not find method in CORS header {_L}{ACAM}{_R}",
    "CORSMissingAllowHeaderFromPreflight": (
        f"header {_L}{{value}}{_R} is not allowed according to header {_L}{ACAH}{_R} "
        "from CORS preflight response"
    ),
}
# Firefox adds the status to these reasons only.
_FIREFOX_WITH_STATUS = {"CORSMissingAllowOrigin", "CORSPreflightDidNotSucceed"}
_BLOCKED = "Cross-Origin Request Blocked: The Same Origin Policy disallows reading the remote"


def _firefox(block: Block, url: str) -> EngineBlock:
    reason = _FIREFOX_REASONS.get(block.firefox, block.message).replace("{value}", block.value)
    # (sic: Firefox quotes the URL for this one reason only)
    at = f"{_L}{url}{_R}" if block.firefox == "CORSNotSupportingCredentials" else url
    line = f"{_BLOCKED} resource at {at}. (Reason: {reason})."
    if block.firefox in _FIREFOX_WITH_STATUS:
        line += f" Status code: {_status(block.status)}."
    lines = [line]
    if block.preflight:  # a failed preflight fails the request too
        lines.append(
            f"{_BLOCKED} resource at {url}. (Reason: CORS request did not succeed). "
            "Status code: (null)."
        )
    return EngineBlock("firefox", block.firefox, tuple(lines), FIREFOX.fetch_error)


def _webkit(block: Block, url: str, origin: str) -> EngineBlock:
    kind = block.firefox
    bad_status = block.status is not None and not 200 <= block.status <= 299
    if block.preflight and bad_status and WEBKIT.status_first:
        line = f"Preflight response is not successful. Status code: {block.status}"
    elif kind in ("CORSMissingAllowOrigin", "CORSAllowOriginNotMatchingOrigin"):
        line = f"Origin {origin} is not allowed by {ACAO}. Status code: {_status(block.status)}"
    elif kind == "CORSMultipleAllowOriginNotAllowed":
        line = f"{ACAO} cannot contain more than one origin."
    elif kind == "CORSNotSupportingCredentials":
        line = f"Cannot use wildcard in {ACAO} when credentials flag is true."
    elif kind == "CORSMIssingAllowCredentials":
        line = f'Credentials flag is true, but {ACAC} is not "true".'
    elif kind == "CORSMethodNotFound":
        line = f"Method {block.value} is not allowed by {ACAM}."
    elif kind == "CORSMissingAllowHeaderFromPreflight":
        line = f"Request header field {block.value} is not allowed by {ACAH}."
    else:  # pragma: no cover - every Block kind is listed above
        line = block.message
    return EngineBlock(
        "webkit",
        None,
        (line, f"Fetch API cannot load {url} due to access control checks."),
        WEBKIT.fetch_error,
    )


def engine_block(engine: str, block: Block, url: str, origin: str) -> EngineBlock:
    """What `engine` shows for `block` on a fetch() of `url` from a page of `origin`."""
    if engine == "firefox":
        return _firefox(block, url)
    if engine == "webkit":
        return _webkit(block, url, origin)
    return _chromium(block, url, origin)


@dataclass(frozen=True, slots=True)
class WebSocketRefusal:
    """One engine's report of a refused WebSocket handshake (any answer but 101): its
    console line, and the close event the page sees after its error event."""

    engine: str
    messages: tuple[str, ...]
    status: int | None
    close_code: int = 1006  # "abnormal closure": the page never sees the status

    @property
    def console(self) -> str:
        return "\n".join(self.messages)


def websocket_refusal(engine: str, url: str, status: int | None) -> WebSocketRefusal:
    """What `engine` shows when the handshake to `url` (ws:// or wss://) is answered with
    `status` (None: the upstream's) instead of 101 (recorded from the real engines:
    tests/test_browser_explain.py checks them live)."""
    if engine == "firefox":  # (a typographic apostrophe, and no status)
        line = f"Firefox can\u2019t establish a connection to the server at {url}."
    elif engine == "webkit":
        line = (
            f"WebSocket connection to '{url}' failed: The server did not accept the WebSocket "
            "handshake."
        )
    else:
        line = (
            f"WebSocket connection to '{url}' failed: Error during WebSocket handshake: "
            f"Unexpected response code: {_status(status)}"
        )
    return WebSocketRefusal(engine, (line,), status)


@dataclass(frozen=True, slots=True)
class WebSocketThrow:
    """What `new WebSocket(url)` throws in one engine (nothing is sent), and the console
    lines the engine adds of its own (WebKit names the URL; the others add none)."""

    engine: str
    exception: str
    messages: tuple[str, ...]

    @property
    def console(self) -> str:
        return "\n".join(self.messages)


def websocket_fragment_error(engine: str, url: str) -> WebSocketThrow:
    """`new WebSocket(url)` with a #fragment (WebSockets standard: a SyntaxError before any
    connection), as each engine words it; `url` as the console names it (fragment encoded)."""
    fragment = url.split("#", 1)[1] if "#" in url else ""
    if engine == "firefox":
        return WebSocketThrow(engine, "SyntaxError: An invalid or illegal string was specified", ())
    if engine == "webkit":
        return WebSocketThrow(
            engine,
            "SyntaxError: The string did not match the expected pattern.",
            (f"URL has fragment component {url}",),
        )
    return WebSocketThrow(
        engine,
        "SyntaxError: Failed to construct 'WebSocket': The URL contains a fragment identifier "
        f"('{fragment}'). Fragment identifiers are not allowed in WebSocket URLs.",
        (),
    )


def preflight_cache_note(engine: str, max_age: int | None, credentials: bool = False) -> str:
    """How long `engine` caches a preflight answered with this Access-Control-Max-Age, and
    (for a request with credentials) whether a request without them may reuse it."""
    facts = BY_NAME[engine]
    cap = f"{facts.label} caps it at {facts.preflight_cache_cap} s"
    if max_age is None:
        note = f"no Access-Control-Max-Age: {facts.label} caches the preflight briefly ({cap})"
    else:
        kept = min(max_age, facts.preflight_cache_cap)
        note = (
            f"Access-Control-Max-Age {max_age}: {facts.label} caches the preflight {kept} s ({cap})"
        )
    if facts.one_entry_per_url:
        note += (
            f"; {facts.label} keeps one preflight cache entry per URL: a preflight for another "
            "method or header list on the same URL replaces it"
        )
    else:
        note += (
            f"; {facts.label} keeps the preflights of other methods and header lists on the "
            "same URL beside it"
        )
    if credentials and not facts.shares_credentialed_preflight:
        note += (
            f"; {facts.label} keeps it for requests with credentials only: the same request "
            "without credentials is preflighted again (Chromium and WebKit reuse it)"
        )
    return note


def private_network_note(engine: str) -> str | None:
    """None for Chromium; for the others, that they send nothing of the kind."""
    if BY_NAME[engine].private_network:
        return None
    if engine == "firefox":  # (seen with Firefox 153 ESR; not modeled: the verdict is CORS's)
        return (
            "Firefox sends no Access-Control-Request-Private-Network preflight; Firefox 153 ESR "
            "has a Local Network Access permission prompt of its own (a public page's fetch "
            "to a local address was held unanswered in headless Firefox, nothing sent), which "
            "this explanation does not model: below, only the CORS headers decide"
        )
    return (
        f"{BY_NAME[engine].label} implements neither Private Network Access nor Local Network "
        "Access: it sends no Access-Control-Request-Private-Network preflight and asks no "
        "permission; only the CORS headers decide"
    )
