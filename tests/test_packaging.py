"""The package as a user gets it: ``python -m build``, then the wheel installed
into a fresh virtualenv, run from a directory with no checkout in sight.

The wheel and the virtualenv are made once for the module (pip's cache makes
the dependencies quick to install).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import redis_users
from processes import ROOT, SECRET_KEY, MainSite
from waiting import units

import wsserver

pytestmark = pytest.mark.e2e

# What the checkout ships: every file under these, bar bytecode, must be in
# the installed package.
SHIPPED = ["wsserver", "authproject", "settings_auth.py"]


def run(
    *command: str | Path, cwd: Path, env: dict[str, str], timeout: float = 120
) -> subprocess.CompletedProcess:
    """Run ``command``; fail the test, showing its output, if it fails."""
    result = subprocess.run(
        [str(part) for part in command],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=units(timeout),
    )
    assert result.returncode == 0, (
        f"{' '.join(map(str, command))} exited with {result.returncode}:\n"
        f"{result.stdout}{result.stderr}"
    )
    return result


class Venv:
    """A fresh virtualenv with the wheel installed: its commands run in an
    empty directory, without PYTHONPATH or the tests' Django settings."""

    def __init__(self, path: Path, cwd: Path) -> None:
        self.path = path
        self.cwd = cwd
        self.python = path / "bin" / "python"
        keep = ["HOME", "LANG", "LC_ALL", "TMPDIR", "PIP_CACHE_DIR", "PIP_CONFIG_FILE"]
        self.env = {name: os.environ[name] for name in keep if name in os.environ}
        self.env["PATH"] = f"{path / 'bin'}{os.pathsep}{os.environ['PATH']}"
        self.env["VIRTUAL_ENV"] = str(path)

    def run(
        self, *command: str | Path, cwd: Path | None = None, **env: str
    ) -> subprocess.CompletedProcess:
        return run(*command, cwd=cwd or self.cwd, env={**self.env, **env})

    def python_says(self, code: str) -> str:
        return self.run(self.python, "-c", code).stdout.strip()


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> Path:
    """``python -m build`` of the checkout: an sdist, and a wheel built from it."""
    out = tmp_path_factory.mktemp("dist")
    run(sys.executable, "-m", "build", "--outdir", out, ROOT, cwd=ROOT, env=os.environ)
    return out


@pytest.fixture(scope="module")
def wheel(dist) -> Path:
    (wheel,) = dist.glob(f"wsserver-{wsserver.__version__}-py3-none-any.whl")
    return wheel


@pytest.fixture(scope="module")
def venv(wheel, tmp_path_factory) -> Venv:
    """A new virtualenv (no system site-packages) with only the wheel and its
    dependencies installed, from the wheel's file and the package index.

    This pip installs into it (``--python``): a pip of its own would take
    longer to set up than the rest.
    """
    base = tmp_path_factory.mktemp("venv")
    cwd = base / "elsewhere"
    cwd.mkdir()
    venv = Venv(base / "venv", cwd)
    run(sys.executable, "-m", "venv", "--without-pip", venv.path, cwd=cwd, env=venv.env)
    pip = [sys.executable, "-m", "pip", "--python", venv.python]
    venv.run(*pip, "install", "-q", "--disable-pip-version-check", wheel)
    return venv


def test_the_sdist_and_the_wheel_are_built(dist):
    names = sorted(path.name for path in dist.iterdir())
    assert names == [
        f"wsserver-{wsserver.__version__}-py3-none-any.whl",
        f"wsserver-{wsserver.__version__}.tar.gz",
    ]


def test_the_installed_package_has_every_file_of_the_checkout(venv):
    site_packages = Path(
        venv.python_says("import wsserver; print(wsserver.__file__)")
    ).parent.parent
    # Imported from the virtualenv, not from a checkout.
    assert site_packages.is_relative_to(venv.path), site_packages
    missing = []
    for name in SHIPPED:
        source = ROOT / name
        files = [source] if source.is_file() else source.rglob("*")
        for path in files:
            if path.is_dir() or "__pycache__" in path.parts or path.suffix == ".pyc":
                continue
            relative = path.relative_to(ROOT)
            if not (site_packages / relative).is_file():
                missing.append(str(relative))
    assert not missing, f"not in the wheel: {missing}"
    for data in [
        "wsserver/py.typed",
        "wsserver/publisher/static/wsserver/wsserver.js",
        "wsserver/publisher/static/wsserver/admin.js",
        "wsserver/publisher/static/wsserver/admin.css",
        "wsserver/publisher/templates/admin/base_site.html",
        "wsserver/publisher/templates/wsserver/admin.html",
        "wsserver/publisher/locale/fr/LC_MESSAGES/djangojs.po",
        "wsserver/publisher/locale/fr/LC_MESSAGES/djangojs.mo",
    ]:
        assert (site_packages / data).is_file(), data
    # The sidecar's Django project imports from there too.
    for module in ["settings_auth", "authproject.readonly.routers"]:
        where = venv.python_says(
            f"import importlib.util; print(importlib.util.find_spec({module!r}).origin)"
        )
        assert Path(where).is_relative_to(venv.path), (module, where)


def test_help(venv):
    for command in [[venv.python, "-m", "wsserver"], [venv.path / "bin" / "wsserver"]]:
        output = venv.run(*command, "--help").stdout
        assert output.startswith("usage: python -m wsserver")
        assert "SECRET_KEY (required)" in output
        assert "DATABASE_URL" in output


def test_version(venv):
    output = venv.run(venv.python, "-m", "wsserver", "--version").stdout.strip()
    django = venv.python_says("import django; print(django.get_version())")
    python = venv.python_says("import platform; print(platform.python_version())")
    assert output == (
        f"wsserver {wsserver.__version__} (Django {django}, Python {python})"
    )
    # The metadata says the same: the version is declared once.
    metadata = venv.python_says(
        "import importlib.metadata as m, wsserver; "
        "print(m.version('wsserver'), wsserver.__version__)"
    )
    assert metadata == f"{wsserver.__version__} {wsserver.__version__}"


@pytest.fixture(scope="module")
def site(postgres_site) -> MainSite:
    return postgres_site


def test_check_against_the_sites_database(venv, site, redis_url):
    channel = site.env["WSSERVER_CHANNEL"]
    result = venv.run(
        venv.python,
        "-m",
        "wsserver",
        "check",
        "--token",
        site.token("alice"),
        DATABASE_URL=site.env["DATABASE_URL"],
        SECRET_KEY=SECRET_KEY,
        REDIS_URL=redis_users.shared.url_for("sidecar", redis_url, channel),
        WS_CHANNEL=channel,
    )
    assert "database: the user tables match" in result.stdout
    assert "token: valid for user" in result.stdout
    assert "receives events for: catalog.article" in result.stdout
    assert result.stdout.strip().endswith("OK")


SETTINGS = """\
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
SECRET_KEY = "packaging-test"
DEBUG = False
ALLOWED_HOSTS = ["testserver"]
INSTALLED_APPS = [
    "wsserver.publisher",  # before the admin: its admin/base_site.html wins
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
]
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
ROOT_URLCONF = "mysite.urls"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": BASE_DIR / "db.sqlite3",
    }
}
USE_I18N = True
STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "static"
WSSERVER_ADMIN = True
WSSERVER_URL = "ws://127.0.0.1:8888/"
"""

URLS = """\
from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("admin/", admin.site.urls),
    path("wsserver/", include("wsserver.publisher.urls")),
]
"""

MANAGE = """\
import os
import sys

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mysite.settings")
from django.core.management import execute_from_command_line

execute_from_command_line(sys.argv)
"""

# Run by manage.py shell: the publisher's templates and translations, as the
# installed package serves them.
SHELL = """\
from django.template.loader import get_template
from django.test import Client

for name in ["wsserver/admin.html", "admin/base_site.html"]:
    print("template", name, get_template(name).origin.name)
response = Client().get("/wsserver/jsi18n/", HTTP_ACCEPT_LANGUAGE="fr")
print("jsi18n", response.status_code, response.content.decode())
"""


@pytest.fixture(scope="module")
def main_site(venv, tmp_path_factory) -> Path:
    """A minimal main site with wsserver.publisher and the live admin."""
    root = tmp_path_factory.mktemp("mainsite")
    (root / "mysite").mkdir()
    (root / "mysite" / "__init__.py").write_text("")
    (root / "mysite" / "settings.py").write_text(SETTINGS)
    (root / "mysite" / "urls.py").write_text(URLS)
    (root / "manage.py").write_text(MANAGE)
    return root


def test_the_main_site_collects_the_static_files(venv, main_site):
    venv.run(
        venv.python, "manage.py", "check", "--fail-level", "WARNING", cwd=main_site
    )
    venv.run(venv.python, "manage.py", "collectstatic", "--noinput", cwd=main_site)
    static = ROOT / "wsserver" / "publisher" / "static" / "wsserver"
    for name in ["wsserver.js", "admin.js", "admin.css"]:
        collected = main_site / "static" / "wsserver" / name
        assert collected.read_bytes() == (static / name).read_bytes(), name


def test_the_main_site_finds_the_templates_and_translations(venv, main_site):
    output = venv.run(
        venv.python, "manage.py", "shell", "-c", SHELL, cwd=main_site
    ).stdout
    templates = [
        line.split() for line in output.splitlines() if line.startswith("template")
    ]
    assert len(templates) == 2
    for _, name, origin in templates:
        assert Path(origin).is_relative_to(venv.path), (name, origin)
    assert "jsi18n 200" in output
    assert "Rechargez la page pour le constater." in output


def test_the_readme_says_how_to_install_without_an_index():
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Install it beside your site", 1)[1].split("\n## ", 1)[0]
    for needed in ["python -m build", "git+", ".whl", "uv pip install", "uv add"]:
        assert needed in section, needed
