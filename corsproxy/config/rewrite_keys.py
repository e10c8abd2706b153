"""The specs of the keys that rewrite answers (`rewrite_redirects`, `cookie_path`,
`cookie_domain`): a from -> to mapping of strings, each side checked, with file:line
messages. What they do is policy/url_rewrite.py's."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

from yaml.nodes import MappingNode, Node

from corsproxy.config.spec import (
    INVALID,
    Context,
    Field,
    Invalid,
    Spec,
    SpecError,
    boolean,
    line_of,
    read_scalar,
)

Pairs = Mapping[str, str]
# The keys, as named on Config and Route alike.
REWRITE_KEYS = ("rewrite_redirects", "cookie_path", "cookie_domain")

# A cookie's Path attribute value (RFC 6265 4.1.1: any CHAR but CTLs and ';'); no spaces
# or commas either, which some readers split at.
_COOKIE_PATH = re.compile(r"/[\x21-\x2b\x2d-\x3a\x3c-\x7e]*\Z")
_COOKIE_DOMAIN = re.compile(r"\.?[A-Za-z0-9](?:[A-Za-z0-9.\-]*[A-Za-z0-9])?\Z")


def check_cookie_path(value: str) -> str:
    if not value.startswith("/"):
        raise SpecError(
            f"cookie path '{value}' does not start with '/'", f"write '/{value.lstrip('/')}'"
        )
    if not _COOKIE_PATH.match(value):
        raise SpecError(
            f"cookie path '{value}' holds a space, ',', ';' or a control character",
            "write a plain path such as /svc/",
        )
    return value


def check_cookie_domain(value: str) -> str:
    if not _COOKIE_DOMAIN.match(value) or ".." in value:
        raise SpecError(
            f"'{value}' is not a domain name",
            "write a host name such as api.example.com (a leading dot is allowed and ignored)",
        )
    return value


class StrMap(Spec[Pairs]):
    """A mapping of strings to strings, in the order written; `key_of` says which keys are
    the same one (a duplicate is an error)."""

    def __init__(
        self,
        check: Callable[[str], str],
        key_of: Callable[[str], str] = str,
        schema: dict[str, Any] | None = None,
    ) -> None:
        self.check = check
        self.key_of = key_of
        self._schema = schema or {"type": "string"}

    def parse(self, node: Node, key: str, ctx: Context) -> Pairs | Invalid:
        if not isinstance(node, MappingNode):
            return ctx.error(
                node, key, "expected a mapping of from: to values", 'write {"/": "/svc/"}'
            )
        pairs: dict[str, str] = {}
        seen: dict[str, int] = {}
        failed = False
        for key_node, value_node in node.value:
            old = read_scalar(key_node, key, ctx)
            if isinstance(old, Invalid):
                failed = True
                continue
            child = f"{key}.{old}"
            new = read_scalar(value_node, child, ctx)
            if isinstance(new, Invalid):
                failed = True
                continue
            for side, part in ((key_node, old), (value_node, new)):
                if not isinstance(part, str):
                    ctx.error(side, child, "expected a string", "quote the value")
                    failed = True
                    break
                try:
                    self.check(part)
                except SpecError as exc:
                    ctx.error(side, child, exc.message, exc.hint)
                    failed = True
                    break
            else:
                same = self.key_of(old)
                if same in seen:
                    ctx.error(
                        key_node,
                        child,
                        f"'{old}' is already mapped on line {seen[same]}",
                        "keep one",
                    )
                    failed = True
                    continue
                seen[same] = line_of(key_node)
                pairs[old] = new
        return INVALID if failed else MappingProxyType(pairs)

    def schema(self) -> dict[str, Any]:
        return {
            "type": "object",
            "propertyNames": self._schema,
            "additionalProperties": self._schema,
        }


def _domain_key(value: str) -> str:
    return value.lstrip(".").lower()


COOKIE_PATH_SCHEMA = {"type": "string", "pattern": "^/"}


def rewrite_fields(inherited: bool) -> dict[str, Field]:
    """The three keys, at the top level (`inherited=False`) or in a route."""
    where = "Default for routes: " if not inherited else ""
    return {
        "rewrite_redirects": Field(
            boolean(),
            f"{where}Rewrite Location, Content-Location, Refresh and Link URLs that point at "
            "the upstream to the address the client used (nginx's proxy_redirect default).",
            inherited=inherited,
        ),
        "cookie_path": Field(
            StrMap(check_cookie_path, schema=COOKIE_PATH_SCHEMA),
            f"{where}Set-Cookie Path prefixes to replace, from: to (nginx's "
            'proxy_cookie_path), e.g. {"/": "/svc/"}; the first that matches applies.',
            inherited=inherited,
        ),
        "cookie_domain": Field(
            StrMap(check_cookie_domain, _domain_key),
            f"{where}Set-Cookie Domain values to replace, from: to (nginx's "
            "proxy_cookie_domain), compared without case and leading dot.",
            inherited=inherited,
        ),
    }
