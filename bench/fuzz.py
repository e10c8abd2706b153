"""Coverage-guided fuzzing (atheris, libFuzzer) of the two parsers that read attacker bytes
first: the Origin parser and the Access-Control-Request-Headers parser.

    python bench/fuzz.py [origin|request-headers|all] [--seconds 60]

Installs atheris if needed. Each target runs for a bounded time in its own process and
checks properties, not just the absence of crashes:
- origin: a parsed origin serializes back to a value that parses to the same origin, has
  only allowed characters, and an OriginMatcher built from its serialization allows exactly
  the serialized value; parsing never raises and stays fast on long input;
- request-headers: names are lower-case tokens, unique, and the parser never raises; a bad
  element always makes the whole value malformed (None).
A crash or a failed property makes libFuzzer stop with the reproducing input saved in
bench/.cache/fuzz/; the exit status is then non-zero.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / ".cache" / "fuzz"


def target_origin(data: bytes) -> None:
    from corsproxy.policy.origins import (
        OriginEntryError,
        OriginMatcher,
        compile_origin_entry,
        ends_in_a_number,
        parse_origin,
    )

    text = data.decode("utf-8", "surrogateescape")
    started = time.perf_counter()
    origin = parse_origin(text)
    assert time.perf_counter() - started < 0.05, "slow parse"
    if origin is None:
        return
    port = f":{origin.port}" if origin.port is not None else ""
    serialized = f"{origin.scheme}://{origin.host}{port}"
    assert parse_origin(serialized) == origin, (text, serialized)
    assert all(c.isascii() and c.isprintable() for c in serialized), serialized
    try:
        entry, _ = compile_origin_entry(0, serialized)
    except OriginEntryError:
        # Refused at load only as an IP address written other than as browsers send it.
        assert origin.host.startswith("[") or ends_in_a_number(origin.host), serialized
        return
    matcher = OriginMatcher((entry,))
    assert matcher.match(serialized).allowed
    assert not matcher.match(serialized + ".evil.example").allowed


def target_request_headers(data: bytes) -> None:
    from corsproxy.policy.cors import parse_request_headers
    from corsproxy.policy.http_grammar import TOKEN

    lines = data.decode("latin-1").split("\n")
    names = parse_request_headers(lines)
    if names is None:
        return
    assert len(names) == len(set(names)), names
    for name in names:
        assert name == name.lower() and TOKEN.match(name), name
    every = [e.strip(" \t") for line in lines for e in line.split(",")]
    if any(e and not TOKEN.match(e) for e in every):
        raise AssertionError(f"a malformed element was accepted: {lines!r}")


TARGETS = {"origin": target_origin, "request-headers": target_request_headers}
SEEDS = {
    "origin": [b"https://app.example.com", b"http://[::1]:3000", b"null", b"http://a:80"],
    "request-headers": [b"content-type, x-token", b"a,,b", b"X-A\n x-b ,"],
}


def run_one(name: str) -> None:
    import atheris

    with atheris.instrument_imports():
        import corsproxy.policy.cors
        import corsproxy.policy.origins  # noqa: F401

    target = TARGETS[name]
    atheris.Setup(sys.argv, target)
    atheris.Fuzz()


def main() -> None:
    if os.environ.get("CORSPROXY_FUZZ_TARGET"):
        sys.path.insert(0, str(ROOT))
        run_one(os.environ["CORSPROXY_FUZZ_TARGET"])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("target", nargs="?", default="all", choices=[*TARGETS, "all"])
    parser.add_argument("--seconds", type=int, default=60)
    args = parser.parse_args()
    try:
        import atheris  # noqa: F401
    except ImportError:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "atheris"], check=True)
    failed = []
    for name in TARGETS if args.target == "all" else [args.target]:
        corpus = OUT / name / "corpus"
        corpus.mkdir(parents=True, exist_ok=True)
        for i, seed in enumerate(SEEDS[name]):
            (corpus / f"seed-{i}").write_bytes(seed)
        print(f"== fuzzing {name} for {args.seconds} s", flush=True)
        result = subprocess.run(
            [sys.executable, __file__, str(corpus), f"-max_total_time={args.seconds}",
             "-max_len=4096", f"-artifact_prefix={OUT / name}/", "-print_final_stats=1"],
            env={**os.environ, "CORSPROXY_FUZZ_TARGET": name}, check=False,
        )  # fmt: skip
        if result.returncode != 0:
            failed.append(name)
    if failed:
        raise SystemExit(f"fuzzing failed: {', '.join(failed)} (inputs in {OUT})")
    print("fuzzing: no crash and no failed property")


if __name__ == "__main__":
    main()
