"""`explain --private-network`: what Chromium does now that Local Network Access (a
permission prompt, Chromium 142) replaced the Private Network Access preflight, with sources."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from corsproxy.commands.explain import explain, render_text
from corsproxy.policy import browser
from tests.helpers import config
from tests.net import ROOT

APP = "https://app.example.com"
DOC = {
    "upstream": "http://192.168.1.20:9000",
    "cors": {"allow_origins": [APP], "allow_methods": ["PUT"]},
    "routes": [{"path_prefix": "/device", "cors": {"allow_private_network": True}}],
}
SOURCES = (
    "https://developer.chrome.com/blog/private-network-access-preflight",
    "https://developer.chrome.com/blog/local-network-access",
    "https://github.com/WICG/local-network-access/blob/main/explainer.md",
)


def _step(text: str) -> str:
    start = text.index("Local Network Access")
    return text[start : text.index("\n5. ", start)]


def test_explain_says_which_chromium_sends_the_preflight_and_which_prompts() -> None:
    text = render_text(
        explain(config(DOC), APP, method="PUT", path="/device/x", private_network=True)
    )
    step = _step(text)
    assert "Chromium 104 to 141" in step and "Access-Control-Request-Private-Network" in step
    assert "answers it with Access-Control-Allow-Private-Network: true" in step
    assert "Chromium 142 and later" in step and "no response header can grant it" in step
    assert "secure context" in step
    assert "targetAddressSpace: 'local'" in step
    assert "local-network-access" in step
    for url in SOURCES:
        assert url in step
    # Chromium 142+ sends no Private Network Access preflight (with the permission granted).
    sent = text.split("5. Preflight")[1].splitlines()[1]
    assert sent.strip().startswith("OPTIONS /device/x with") and "Private-Network" not in sent


def test_explain_says_when_the_legacy_preflight_is_not_allowed() -> None:
    text = render_text(explain(config(DOC), APP, method="PUT", path="/x", private_network=True))
    assert "allow_private_network is false" in _step(text)
    assert "only warn in DevTools" in _step(text)


def test_no_local_network_step_without_private_network() -> None:
    text = render_text(explain(config(DOC), APP, method="PUT", path="/device/x"))
    assert "Local Network Access" not in text


def test_the_cli_prints_it(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(DOC))
    result = subprocess.run(
        [sys.executable, "-m", "corsproxy", "explain", "--config", str(path), "--origin", APP,
         "--method", "PUT", "--path", "/device/x", "--private-network"],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )  # fmt: skip
    assert result.returncode == 1, result.stderr  # blocked: local_network_access_denied
    assert "Chromium 142 and later (Local Network Access)" in result.stdout
    assert browser.FIRST_LNA_CHROMIUM == browser.LAST_PNA_PREFLIGHT_CHROMIUM + 1


def _cli(tmp_path: Path, *args: str) -> str:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(DOC))
    result = subprocess.run(
        [sys.executable, "-m", "corsproxy", "explain", "--config", str(path), "--origin", APP,
         "--private-network", *args],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )  # fmt: skip
    assert result.returncode in (0, 1), result.stderr
    return result.stdout


def test_a_simple_request_says_no_cors_preflight_but_the_pna_one(tmp_path: Path) -> None:
    """Step 3 and step 4 agree: no CORS preflight, yet Chromium 104-141 send the PNA one."""
    out = _cli(tmp_path, "--path", "/device/x")
    step3 = out[out.index("3. Preflight needed?") : out.index("\n4. ")]
    assert "no CORS preflight" in step3
    assert "Chromium 104-141 still send a Private Network Access preflight, see step 4" in step3
    assert "\n4. Local Network Access" in out
    assert "even before a simple request" in _step(out)


def test_the_permission_split_local_to_loopback_and_the_iframe_directives() -> None:
    step = _step(
        render_text(explain(config(DOC), APP, method="PUT", path="/device/x", private_network=True))
    )
    assert "'local-network' (private addresses) and 'loopback-network' (localhost)" in step
    assert "from Chromium 145" in step and "'local-network-access' kept as an alias" in step
    assert "a local (intranet) page's request to loopback" in step
    assert 'allow="local-network"' in step and 'allow="loopback-network"' in step
    assert "https://chromestatus.com/feature/5152728072060928" in step
    assert "Permissions-Policy/local-network" in step
    assert "does not yet cover WebSockets, WebTransport or WebRTC" in step


def test_a_websocket_path_says_local_network_access_does_not_cover_it(tmp_path: Path) -> None:
    out = _cli(tmp_path, "--path", "ws://proxy.example.com/device/x")
    assert "3. Local Network Access" in out, out
    step = out[out.index("3. Local Network Access") : out.index("\n4. ")]
    assert "not covered: a WebSocket to a local or loopback address" in step
    assert "WebSockets, WebTransport and WebRTC are separate, later features" in step
    assert "4. WebSocket handshake" in out
    # Without --private-network the WebSocket explanation is as before.
    plain = render_text(
        explain(config(DOC), APP, path="/device/x", websocket=True, proxy_origin="http://p")
    )
    assert "Local Network Access" not in plain
