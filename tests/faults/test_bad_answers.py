"""Upstream answers that break HTTP/1.1 in ways the reader must absorb, against a real
`corsproxy serve` process and a raw upstream: interim (1xx) answers with a body, and trailer
fields, which must never become response headers (RFC 9110 6.5)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.faults.harness import APP, POLICY, get, header, proxy, status
from tests.net import head_and_body, scripted_upstream, until_closed

FINAL = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Final: 1\r\n\r\nfinal"
FORGED = b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\nSet-Cookie: stolen=1\r\n\r\nFORGED"


@pytest.mark.parametrize(
    "interim",
    [
        b"HTTP/1.1 150 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(FORGED), FORGED),
        b"HTTP/1.1 199 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        b"HTTP/1.1 100 Continue\r\nContent-Length: 0\r\n\r\n",
    ],
    ids=["150-content-length", "199-chunked", "100-content-length"],
)
async def test_an_interim_answer_with_a_body_is_a_502_and_a_closed_connection_not_a_crash(
    tmp_path: Path, interim: bytes
) -> None:
    """llhttp reads a body after 104-199 when framing says so; it used to raise out of
    data_received, and asyncio logged a "Fatal error on transport" traceback per request."""

    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(interim + FINAL)
        await writer.drain()
        await until_closed(reader)

    async with (
        scripted_upstream(script) as up,
        proxy(tmp_path, {"upstream": up.url, "cors": POLICY}) as px,
    ):
        before = len(px.log)
        for _ in range(3):
            response = await get(px.url)
            assert status(response) == 502, response[:200]
            assert header(response, "Access-Control-Allow-Origin") == [APP]
            assert b"FORGED" not in response and b"final" not in response
        await asyncio.wait_for(up.closed_by_proxy.wait(), 5)
        assert up.connections == 3  # each closed after its bad answer
        for _ in range(50):  # the log reaches us a moment after the answer
            lines = px.log[before:]
            if sum("GET /x 502" in line for line in lines) >= 3:
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.2)
        lines = px.log[before:]
        assert len(lines) == 3, "".join(lines)  # one warning-level access line per request
        assert all("upstream_bad_response" in line for line in lines), "".join(lines)
        await px.healthy()  # no traceback, no "Fatal error on transport"


CHUNKED = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Up: 1\r\n\r\n2\r\nok\r\n"
TRAILERS = b"0;x=y\r\nTrailer-A: 1\r\nSet-Cookie: t=1\r\n\r\n"


@pytest.mark.parametrize("later", [False, True], ids=["same-segment", "later-segment"])
async def test_trailers_never_become_response_headers(tmp_path: Path, later: bool) -> None:
    async def script(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            if later:
                writer.write(CHUNKED)
                await writer.drain()
                await asyncio.sleep(0.2)
                writer.write(TRAILERS)
            else:
                writer.write(CHUNKED + TRAILERS)
            await writer.drain()
            await reader.readuntil(b"\r\n\r\n")  # the next request on this connection

    async with (
        scripted_upstream(script) as up,
        proxy(tmp_path, {"upstream": up.url, "cors": POLICY}) as px,
    ):
        for _ in range(3):
            response = await get(px.url)
            _, body = head_and_body(response)
            assert status(response) == 200 and header(response, "X-Up") == ["1"]
            assert header(response, "Set-Cookie") == [] and header(response, "Trailer-A") == []
            assert b"t=1" not in response and b"Trailer-A" not in response
            assert body == b"2\r\nok\r\n0\r\n\r\n", body
        assert up.connections == 1  # trailers end a chunked answer cleanly: reused
        await px.healthy()
