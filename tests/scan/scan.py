"""CORScanner (PyPI `cors` 1.0.1) against corsproxy, offline.

    python tests/scan/scan.py

Everything runs inside `unshare -rnm`: a user, network and mount namespace whose only
interface is loopback (nothing outside can be reached) and whose /etc/hosts maps
api.victim-example.com to 127.0.0.1. corsproxy does not terminate TLS, so a small TLS front
(a throw-away certificate from trustme) sits before it, and the scanner targets
https://api.victim-example.com:8443/api/r, where its http-downgrade check runs too.

Two runs, so a pass is never vacuous:
1. a deliberately broken server that reflects any Origin with credentials: the scanner
   must report it;
2. corsproxy with a credentialed allow-list policy: the scanner must report nothing, and the
   upstream must have seen its requests.
Exit status 0 only when both hold.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import ssl
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
VENV = ROOT / ".cache" / "scan-venv"
HOST = "api.victim-example.com"
TARGET = f"https://{HOST}:8443/api/r"
ALLOWED = "https://app.victim-example.com"


def scanner() -> Path:
    """The scanner in its own venv (its pins would clash with ours)."""
    binary = VENV / "bin" / "cors"
    if not binary.exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        subprocess.run(
            [str(VENV / "bin" / "pip"), "install", "-q", "cors==1.0.1", "tldextract==5.4.0"],
            check=True,
        )
    return binary


async def tls_front(certificate: ssl.SSLContext, backend: int) -> asyncio.Server:
    """TLS on 127.0.0.1:8443, bytes piped to 127.0.0.1:backend."""

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", backend)
        except OSError:
            writer.close()
            return
        # When either side ends, end both: a kept-alive backend must not hold the front open.
        tasks = [asyncio.create_task(pipe(reader, up_writer)),
                 asyncio.create_task(pipe(up_reader, writer))]  # fmt: skip
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in tasks:
            task.cancel()
        writer.close()
        up_writer.close()

    return await asyncio.start_server(on_connect, "127.0.0.1", 8443, ssl=certificate)


async def scan(binary: Path, work: Path, name: str) -> list[dict[str, object]]:
    output = work / f"{name}.json"
    env = {
        key: value
        for key, value in os.environ.items()
        if key.lower() not in ("http_proxy", "https_proxy", "all_proxy")
    }
    env.update(NO_PROXY="*", TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS="", TLDEXTRACT_CACHE=str(work))
    command = [str(binary), "-u", TARGET, "-t", "1", "-T", "5", "-d", "Cookie: s=1",
               "-o", str(output)]  # fmt: skip
    result = await asyncio.to_thread(
        subprocess.run, command, env=env, capture_output=True, text=True, timeout=180
    )
    print(f"-- scanner against {name}: exit {result.returncode}")
    print(result.stdout[-2000:], result.stderr[-2000:], sep="\n")
    if not output.exists():
        raise SystemExit(f"the scanner wrote no {output.name}: it did not run")
    findings: list[dict[str, object]] = json.loads(output.read_text() or "[]")
    return findings


@contextlib.asynccontextmanager
async def reflector() -> AsyncIterator[int]:
    """A broken server: any Origin is echoed with credentials (what the scanner hunts)."""
    from aiohttp import web

    async def handle(request: web.Request) -> web.Response:
        origin = request.headers.get("Origin", "")
        headers = {
            "Access-Control-Allow-Origin": origin,
            "Access-Control-Allow-Credentials": "true",
        }
        return web.Response(text="{}", headers=headers if origin else {})

    runner = web.ServerRunner(web.Server(handle), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    finally:
        await runner.cleanup()


async def inside(binary: Path) -> int:
    import trustme
    import yaml

    from tests.net import Recorder, running_app, start_cli

    work = Path(tempfile.mkdtemp(prefix="corsproxy-scan-"))
    authority = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert(HOST).configure_cert(context)

    async with reflector() as port:
        front = await tls_front(context, port)
        try:
            broken = await scan(binary, work, "reflector")
        finally:
            front.close()
            await front.wait_closed()
    if not broken:
        print("FAIL: the scanner found nothing on a reflecting server: the scan is not working")
        return 1
    print(f"ok: {len(broken)} finding(s) on the reflecting server, as expected")

    upstream = Recorder()
    async with running_app(upstream.app()) as url:
        config = work / "policy.yaml"
        config.write_text(
            yaml.safe_dump(
                {"upstream": url, "cors": {"allow_origins": [ALLOWED], "allow_credentials": True}}
            )
        )
        proc, proxy = await asyncio.to_thread(
            start_cli, "--config", str(config), "--listen", "127.0.0.1:0"
        )
        try:
            front = await tls_front(context, int(proxy.rsplit(":", 1)[1]))
            try:
                findings = await scan(binary, work, "corsproxy")
            finally:
                front.close()
                await front.wait_closed()
        finally:
            proc.terminate()
            await asyncio.to_thread(proc.communicate, timeout=15)
    origins = {
        value for seen in upstream.seen for name, value in seen["headers"] if name == "Origin"
    }
    print(f"corsproxy forwarded {len(upstream.seen)} scanner requests ({len(origins)} origins)")
    if findings:
        print("FAIL: findings against corsproxy:\n" + json.dumps(findings, indent=2))
        return 1
    if len(origins) < 20:
        print("FAIL: the scanner's requests did not reach corsproxy's upstream")
        return 1
    print("ok: no findings against corsproxy")
    return 0


def main() -> None:
    if sys.argv[1:2] == ["--inside"]:
        subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
        hosts = Path(tempfile.mkdtemp()) / "hosts"
        hosts.write_text(f"127.0.0.1 localhost {HOST}\n::1 localhost\n")
        subprocess.run(["mount", "--bind", str(hosts), "/etc/hosts"], check=True)
        sys.path.insert(0, str(ROOT))
        raise SystemExit(asyncio.run(inside(Path(sys.argv[2]))))
    binary = scanner()
    command = ["unshare", "-rnm", "--", sys.executable, __file__, "--inside", str(binary)]
    raise SystemExit(subprocess.run(command, check=False).returncode)


if __name__ == "__main__":
    main()
