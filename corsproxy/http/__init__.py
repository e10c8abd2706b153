"""The I/O shell: the aiohttp server wiring, the relay, the WebSocket tunnel, the upstream
client and its sans-I/O response reader, header hygiene and the error catalogue, and every
use of aiohttp's private API (aiohttp_private). Imports `config`, `policy` and `ops`.
"""
