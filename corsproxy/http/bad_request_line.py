"""What the access line can say about a request aiohttp's parser refused (http/server.py:
`_RequestHandler`): the parser's reason in a few words, and the method, path or Origin when
the line it quotes holds them.

The parser keeps nothing of a request it refuses but its error message, which quotes the
offending line as a Python literal (llhttp: the request line or the header line, with a
caret under the bad byte). That literal is read back, never evaluated as code; the words
before it are the reason (`invalid method`, `invalid header value char`), never the
client's bytes. Runs only for refused requests: nothing on the path of a parsed one.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass

MAX_WORDS = 80

# A quoted Python literal (str or bytes repr) in the parser's message.
_LITERAL = re.compile(r"""b?'(?:[^'\\\n]|\\.)*'|b?"(?:[^"\\\n]|\\.)*\"""")
_REQUEST_LINE = re.compile(r"([!-~]{1,64}) (\S+) HTTP/\S+\Z")
# Where the words end: a colon, a quote that opens a literal (not the apostrophe of "can't").
_CUT = re.compile(r"""[:"{(\n]|(?<![A-Za-z])'|\bb'""")


@dataclass(frozen=True, slots=True)
class Refused:
    words: str  # the parser's reason, plain words
    method: str = ""
    path: str = ""
    origin: str = ""


def read_refusal(message: str) -> Refused:
    """The parser's `message` (HttpProcessingError.message), read for the access line."""
    words = _CUT.split(message, maxsplit=1)[0].strip().lower().removesuffix(" encountered")
    refused = Refused(words[:MAX_WORDS] or "unreadable request")
    found = _LITERAL.search(message)
    if found is None:
        return refused
    try:
        quoted = ast.literal_eval(found.group())
    except (ValueError, SyntaxError):
        return refused
    line = quoted.decode("utf-8", "surrogateescape") if isinstance(quoted, bytes) else quoted
    if not isinstance(line, str):
        return refused
    request_line = _REQUEST_LINE.match(line)
    if request_line is not None:
        return Refused(refused.words, request_line.group(1), request_line.group(2))
    name, colon, value = line.partition(":")
    if colon and name.strip().lower() == "origin":
        return Refused(refused.words, origin=value.strip(" \t"))
    return refused
