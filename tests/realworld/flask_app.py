"""A small Flask app that builds URLs the ways real apps do: a session-cookie login that
answers with `redirect(url_for(...))`, absolute URLs (`_external=True`), a `Link` header and a
`Set-Cookie` with Path and Domain."""

from __future__ import annotations

from flask import Flask, Response, redirect, request, session, url_for

app = Flask(__name__)
app.secret_key = "test-only"


@app.get("/login")
def login_form() -> str:
    return '<form method="post"><input name="user"></form>'


@app.post("/login")
def login() -> Response:
    session["user"] = request.form["user"]
    return redirect(url_for("me"))


@app.get("/login-external")
def login_external() -> Response:
    session["user"] = request.args.get("user", "anon")
    return redirect(url_for("me", _external=True))


@app.get("/me")
def me() -> Response:
    if "user" not in session:
        return redirect(url_for("login_form"))
    response = Response(f"user={session['user']}")
    response.headers["Link"] = (
        f'<{url_for("page", n=2)}>; rel="next", '
        f'<{url_for("page", n=1, _external=True)}>; rel="prev"; title="a, <b>"'
    )
    response.headers["Content-Location"] = url_for("me", _external=True)
    response.headers["Refresh"] = f"30; url={url_for('login_form')}"
    return response


@app.get("/page/<int:n>")
def page(n: int) -> str:
    return f"page {n}"


@app.get("/cookie")
def cookie() -> Response:
    response = Response("ok")
    response.set_cookie("pref", "dark", path="/", domain="legacy.internal", httponly=True)
    return response


@app.get("/elsewhere")
def elsewhere() -> Response:
    return redirect("https://www.example.org/x")
