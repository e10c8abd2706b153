"""Real applications under gunicorn behind a real corsproxy process, driven by `requests`:
the Django admin's login (CSRF and its Origin check) and a Flask app's session login,
redirects, links and cookies, with and without a stripped prefix."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import pytest
import requests
import yaml

from tests.net import free_port, start_cli
from tests.realworld.gunicorn_apps import ROOT, gunicorn_app

DJANGO_SETTINGS = "tests.realworld.django_project.settings"
TIMEOUT = 20


@pytest.fixture(scope="module")
def django_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The Django project on a fresh sqlite database: migrated, with a superuser."""
    env = {
        "DJANGO_SETTINGS_MODULE": DJANGO_SETTINGS,
        "CORSPROXY_TEST_DJANGO_DB": str(tmp_path_factory.mktemp("django") / "db.sqlite3"),
    }
    setup = (
        "import django; django.setup();"
        "from django.core.management import call_command;"
        "call_command('migrate', verbosity=0, interactive=False);"
        "from django.contrib.auth.models import User;"
        "User.objects.create_superuser('admin', 'admin@example.com', 'pw-for-tests')"
    )
    done = subprocess.run(
        [sys.executable, "-c", setup],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    with gunicorn_app("tests.realworld.django_project.wsgi:application", env) as url:
        yield url


@pytest.fixture(scope="module")
def flask_app() -> Iterator[str]:
    with gunicorn_app("tests.realworld.flask_app:app") as url:
        yield url


@pytest.fixture(scope="module")
def proxy(
    django_app: str, flask_app: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """corsproxy with default settings in front of both apps: Django at the root and under
    /dj (prefix stripped), Flask under /svc (prefix stripped, cookies mapped), /internal
    (the upstream's own Host) and /raw (rewriting off)."""
    doc = {
        "listen": f"127.0.0.1:{free_port()}",
        "upstream": django_app,
        "cors": False,
        "routes": [
            {"path_prefix": "/dj", "upstream": django_app, "strip_prefix": True},
            {
                "path_prefix": "/svc",
                "upstream": flask_app,
                "strip_prefix": True,
                "cookie_path": {"/": "/svc/"},
                "cookie_domain": {"legacy.internal": "api.example.com"},
            },
            {
                "path_prefix": "/internal",
                "upstream": flask_app,
                "strip_prefix": True,
                "preserve_host": False,
            },
            {"path_prefix": "/raw", "upstream": flask_app, "strip_prefix": True},
        ],
    }
    doc["routes"][-1]["rewrite_redirects"] = False
    path = tmp_path_factory.mktemp("proxy") / "corsproxy.yaml"
    path.write_text(yaml.safe_dump(doc))
    proc, url = start_cli("--config", str(path))
    try:
        yield url
    finally:
        proc.terminate()
        try:
            proc.communicate(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate(timeout=TIMEOUT)


def redirects_of(response: requests.Response) -> list[str]:
    """Every Location on the way to `response`, resolved as a browser resolves it."""
    return [urljoin(r.url, r.headers["Location"]) for r in response.history]


def admin_login(session: requests.Session, base: str, origin: str) -> requests.Response:
    """Log into the Django admin under `base` as a browser does: the form (and its CSRF
    cookie and token), then the POST with the page's Origin; follows the redirects."""
    form = session.get(f"{base}/admin/", timeout=TIMEOUT)
    assert form.status_code == 200, form.text[:500]
    assert all(url.startswith(base + "/") for url in redirects_of(form)), redirects_of(form)
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form.text)
    assert token is not None, form.text[:500]
    return session.post(
        form.url,
        data={
            "csrfmiddlewaretoken": token.group(1),
            "username": "admin",
            "password": "pw-for-tests",
            "next": urlsplit(form.url).query.removeprefix("next="),
        },
        headers={"Origin": origin, "Referer": form.url},
        timeout=TIMEOUT,
    )


@pytest.mark.parametrize("prefix", ["", "/dj"])
def test_the_django_admin_login_works_through_the_proxy(proxy: str, prefix: str) -> None:
    base = proxy + prefix
    with requests.Session() as session:
        done = admin_login(session, base, proxy)
        assert done.status_code == 200, done.text[:500]
        assert "Site administration" in done.text
        assert done.url == f"{base}/admin/"
        assert all(url.startswith(base + "/") for url in redirects_of(done)), redirects_of(done)


def test_django_refuses_the_login_without_the_clients_host(
    proxy: str, django_app: str, tmp_path: Path
) -> None:
    """Why preserve_host is the default: with the upstream's own Host, Django's CSRF Origin
    check fails (the issue's "Origin checking failed")."""
    doc = {"listen": f"127.0.0.1:{free_port()}", "upstream": django_app, "cors": False}
    doc["preserve_host"] = False
    path = tmp_path / "corsproxy.yaml"
    path.write_text(yaml.safe_dump(doc))
    proc, url = start_cli("--config", str(path))
    try:
        with requests.Session() as session:
            refused = admin_login(session, url, url)
        assert refused.status_code == 403
        # DEBUG is off, so the page names no reason (Django logs "Origin checking failed").
        assert "CSRF verification failed" in refused.text
    finally:
        proc.terminate()
        proc.communicate(timeout=TIMEOUT)


def test_the_flask_login_stays_under_the_prefix(proxy: str) -> None:
    base = f"{proxy}/svc"
    with requests.Session() as session:
        first = session.get(f"{base}/me", allow_redirects=False, timeout=TIMEOUT)
        assert first.status_code == 302
        assert first.headers["Location"] == "/svc/login"
        login = session.post(f"{base}/login", data={"user": "ann"}, timeout=TIMEOUT)
        assert login.status_code == 200, login.text
        assert login.text == "user=ann"
        assert redirects_of(login) == [f"{base}/me"]
        # The session cookie's Path was mapped from / to /svc/.
        (cookie,) = login.history[0].raw.headers.getlist("Set-Cookie")
        assert "Path=/svc/" in cookie
        assert [c.path for c in session.cookies] == ["/svc/"]
        # Relative links get the prefix; so does an absolute one the app built on the Host
        # it was sent (preserve_host): that is its own origin as far as it knows.
        assert login.headers["Link"] == (
            f'</svc/page/2>; rel="next", <{base}/page/1>; rel="prev"; title="a, <b>"'
        )
        assert login.headers["Refresh"] == "30; url=/svc/login"
        # A cookie for the internal domain gets the public one; its other attributes stay.
        mapped = session.get(f"{base}/cookie", timeout=TIMEOUT)
        assert mapped.raw.headers.getlist("Set-Cookie") == [
            "pref=dark; Domain=api.example.com; HttpOnly; Path=/svc/"
        ]
        # A redirect to another site is left alone.
        away = session.get(f"{base}/elsewhere", allow_redirects=False, timeout=TIMEOUT)
        assert away.headers["Location"] == "https://www.example.org/x"


def test_absolute_urls_on_the_upstreams_address_come_back_on_the_proxys(
    proxy: str, flask_app: str
) -> None:
    """preserve_host: false (the app sees its own address and builds URLs on it)."""
    base = f"{proxy}/internal"
    with requests.Session() as session:
        done = session.get(f"{base}/login-external?user=bo", timeout=TIMEOUT)
        assert done.text == "user=bo"
        assert redirects_of(done) == [f"{base}/me"]
        assert done.history[0].headers["Location"] == f"{base}/me"
        assert done.headers["Content-Location"] == f"{base}/me"
        assert done.headers["Link"] == (
            f'</internal/page/2>; rel="next", <{base}/page/1>; rel="prev"; title="a, <b>"'
        )
        assert flask_app not in str(done.headers)


def test_rewrite_redirects_false_relays_the_apps_own_urls(proxy: str) -> None:
    response = requests.get(f"{proxy}/raw/me", allow_redirects=False, timeout=TIMEOUT)
    assert response.status_code == 302
    assert response.headers["Location"] == "/login"
