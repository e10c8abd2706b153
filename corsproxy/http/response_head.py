"""The head of a relayed answer in one pass, for the common case: the upstream's clean
headers (http/headers.py: `clean_head`) with the CORS decision applied.

`policy/cors.py: response_headers` applies a decision header by header: it takes out the
upstream's `Access-Control-*` (in enforce mode) and merges its `Vary` lines with the
decision's. When the upstream sent neither (nearly every answer), that is the upstream's
headers followed by the decision's own block, which depends on the decision alone and is
built once per decision here. Anything else returns None, and the caller takes the plain
path; tests/test_fast_paths.py holds both to byte-identical answers.
"""

from __future__ import annotations

from corsproxy.http.headers import CleanHead
from corsproxy.policy.cors import Decision, merge_vary

# The decision's own headers (its Access-Control-* and the merged Vary) and their lower-case
# names, by (headers, vary): decisions are memoized, so there are few; the bound is a guard.
_BLOCKS: dict[tuple[object, ...], tuple[tuple[tuple[str, str], ...], frozenset[str]]] = {}
_MAX_BLOCKS = 256


def _block(decision: Decision) -> tuple[tuple[tuple[str, str], ...], frozenset[str]]:
    key = (decision.headers, decision.vary)
    found = _BLOCKS.get(key)
    if found is None:
        block = decision.headers
        if decision.vary:
            block = (*block, ("Vary", merge_vary([], decision.vary)))
        found = (block, frozenset(name.lower() for name, _ in block))
        if len(_BLOCKS) >= _MAX_BLOCKS:
            _BLOCKS.clear()
        _BLOCKS[key] = found
    return found


def decided(decision: Decision, head: CleanHead) -> tuple[list[tuple[str, str]], set[str]] | None:
    """`response_headers(decision, head.headers)` and the lower-case names in it, when no
    upstream header is one the decision takes out or merges; else None."""
    if decision.strip_upstream_cors and "\naccess-control-" in head.joined:
        return None
    if decision.vary and "vary" in head.lowers:
        return None
    block, block_names = _block(decision)
    headers = head.headers + list(block)
    names = set(head.lowers)
    names.update(block_names)
    return headers, names
