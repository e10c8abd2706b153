"""A Flask app behind werkzeug's ProxyFix, as users deploy one behind proxies: it believes one
hop of X-Forwarded-Proto, -Host and -Prefix (and X-Forwarded-For), and answers with what it
sees and the absolute URLs it builds. Run under gunicorn: `proxyfix_app:app`."""

from __future__ import annotations

from typing import Any

from flask import Flask, jsonify, redirect, request, url_for
from werkzeug.middleware.proxy_fix import ProxyFix

app = Flask(__name__)
app.wsgi_app = ProxyFix(  # type: ignore[method-assign]
    app.wsgi_app, x_for=1, x_proto=1, x_host=1, x_prefix=1
)
FORWARDING = ("x-forwarded-", "forwarded", "x-real-ip")


@app.get("/whoami")
def whoami() -> Any:
    """What the app believes about the request, and the URLs it builds from it."""
    return jsonify(
        scheme=request.scheme,
        host=request.host,
        script_root=request.script_root,
        remote_addr=request.remote_addr,
        url=request.url,
        external=url_for("whoami", _external=True),
        secure=request.is_secure,
        headers=[[n, v] for n, v in request.headers.items() if n.lower().startswith(FORWARDING)],
    )


@app.get("/go")
def go() -> Any:
    """A redirect to an absolute URL, as `redirect(url_for(..., _external=True))` builds."""
    return redirect(url_for("whoami", _external=True), code=302)
