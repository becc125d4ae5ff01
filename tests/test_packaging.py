"""The installed package: one import name (`copyledger`), nothing generic in site-packages."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    # pip builds in the source tree (build/, *.egg-info): a copy keeps two runs of the suite
    # at once (CI's two passes) from building in the same folders
    src = tmp_path_factory.mktemp("source") / "copyledger"
    shutil.copytree(REPO, src, ignore=shutil.ignore_patterns(
        ".venv", ".git", "build", "*.egg-info", "*_cache", ".hypothesis", "__pycache__",
        "copyledger-*", "images"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                    "-w", str(out), str(src)],
                   check=True, capture_output=True, timeout=300)
    (whl,) = out.glob("copyledger-*.whl")
    return whl


def test_wheel_installs_one_top_level_name(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"copyledger"}
    # data files the code reads at run time travel with it
    for needed in ("copyledger/py.typed", "copyledger/ledger/py.typed",
                   "copyledger/ledger/migrations/env.py",
                   "copyledger/ledger/migrations/versions/0001_initial.py",
                   "copyledger/api/static/verify.js",
                   "copyledger/service/locale/zh_CN/LC_MESSAGES/copyledger.po"):
        assert needed in names, needed
    # real files, not links back into a source tree
    assert "copyledger/ledger/merkle.py" in names


def test_installed_copy_imports_only_as_copyledger(wheel: Path, tmp_path: Path) -> None:
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target",
                    str(target), str(wheel)], check=True, capture_output=True, timeout=300)
    assert sorted(p.name for p in target.iterdir() if not p.name.endswith(".dist-info")
                  and p.name != "bin") == ["copyledger"]
    code = (
        "import importlib.util, sys\n"
        "import copyledger, copyledger.ledger.merkle, copyledger.api.app, copyledger.cli.main\n"
        f"assert copyledger.ledger.merkle.__file__.startswith({str(target)!r})\n"
        "for name in ('api', 'cli', 'ledger', 'notary'):\n"
        "    assert importlib.util.find_spec(name) is None, name\n"
        "print(copyledger.__version__)\n"
    )
    # Run outside the repository, with the installed copy first on the path.
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                       text=True, env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"},
                       timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "0.1.0"


def _pins(lock: Path) -> dict[str, str]:
    """name -> the text of its entry (version and hashes) in a pip-compile lock."""
    entries: dict[str, str] = {}
    for block in re.split(r"\n(?=[A-Za-z0-9])", lock.read_text()):
        m = re.match(r"([A-Za-z0-9_.-]+)==\S+", block)
        if m:
            entries[re.sub(r"[-_.]+", "-", m.group(1)).lower()] = block
    return entries


def _names(requirements: list[str]) -> set[str]:
    """The normalised project names in requirement strings ("uvicorn[standard]>=0.29")."""
    return {re.sub(r"[-_.]+", "-", re.split(r"[\[<>=!~;\s]", r, maxsplit=1)[0]).lower()
            for r in requirements}


def test_the_locks_pin_every_dependency_with_hashes() -> None:
    """`make run` and `make test` install only what the locks list (--require-hashes): a
    dependency added to pyproject.toml without `make lock` would be missing at run time."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    run, dev = _pins(REPO / "requirements/run.txt"), _pins(REPO / "requirements/dev.txt")
    assert _names(project["dependencies"]) <= set(run)
    assert _names(project["dependencies"] + project["optional-dependencies"]["dev"]) <= set(dev)
    for name, entry in {**run, **dev}.items():
        assert "--hash=sha256:" in entry, name
    # the serving lock is the runtime part of the test lock, with the same pins
    assert {n: run[n].split()[0] for n in run} == {n: dev[n].split()[0] for n in run}


def _listed(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text().splitlines()
            if line.strip() and not line.startswith("#")]


def test_make_run_bootstrap_lock_and_later_list() -> None:
    """`make run` installs uv from its own hashed lock, then everything in the serving lock:
    the packages it leaves for the background step are the serving lock's own (D45, D58)."""
    uv = _pins(REPO / "requirements/uv.txt")
    assert set(uv) == {"uv"} and "--hash=sha256:" in uv["uv"]
    later = _listed(REPO / "requirements/run-later.txt")
    deferred = _listed(REPO / "requirements/run-deferred.txt")
    run = set(_pins(REPO / "requirements/run.txt"))
    assert later and _names(later) <= run
    assert deferred and _names(deferred) <= run and not _names(deferred) & _names(later)


def _import_names(distributions: set[str]) -> set[str]:
    """The top-level modules these (installed) distributions provide."""
    from importlib.metadata import packages_distributions

    return {module for module, dists in packages_distributions().items()
            if _names(dists) & distributions and not module.startswith("_")}


def test_make_run_links_only_copyledger_until_it_is_installed(tmp_path: Path) -> None:
    """tools/link_checkout.py (D45) makes `copyledger` importable in a bare venv, and its
    command runnable, without exposing the checkout's top-level folders; --remove undoes it."""
    venv = tmp_path / "v"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True,
                   timeout=120)
    python = venv / "bin" / "python"
    probe = ("import importlib.util as u; "
             "print(u.find_spec('copyledger') is not None, u.find_spec('api') is None)")

    def where() -> str:
        return subprocess.run([str(python), "-c", probe], cwd=tmp_path, check=True, timeout=60,
                              capture_output=True, text=True).stdout.strip()

    subprocess.run([str(python), str(REPO / "tools/link_checkout.py")], check=True, timeout=60)
    assert where() == "True True"
    assert (venv / "bin" / "copyledger").read_text().startswith(f"#!{venv}/bin/python")
    subprocess.run([str(python), str(REPO / "tools/link_checkout.py"), "--remove"], check=True,
                   timeout=60)
    assert where() == "False True"


def test_the_server_starts_without_the_libraries_only_some_answers_need() -> None:
    """What `serve` imports before its first answer (the CLI, then the app and the node that
    serves it) leaves out the libraries only a PDF, an upload or a claim check uses (D54), and
    every package `make run` installs after the server is up (D58): they load at first use,
    so a fresh `make run` neither waits for nor spends its first seconds on them."""
    later = _names(_listed(REPO / "requirements/run-deferred.txt")
                   + _listed(REPO / "requirements/run-later.txt"))
    heavy = _import_names(later) | {"fpdf", "fontTools", "qrcode", "PIL", "acoustid"}
    assert {"numpy", "scipy", "cv2", "faiss", "pywt", "imagehash", "datasketch",
            "pdqhash"} <= heavy
    code = ("import sys, copyledger.cli.main, copyledger.api.app, copyledger.service.node, "
            f"uvicorn; heavy = {sorted(heavy)!r}; "
            "print(sorted(set(heavy) & {m.split('.')[0] for m in sys.modules}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=REPO, timeout=120)
    assert out.stdout.strip() == "[]"


def test_make_run_serves_without_re_executing() -> None:
    """`serve` re-executes itself to set MALLOC_ARENA_MAX=2 (D42) unless it is set: `make run`
    sets it (an operator's own value still wins), so the CLI is not imported twice (D54)."""
    recipe = (REPO / "Makefile").read_text().split("\nrun:", 1)[1].split("\n\n", 1)[0]
    assert "MALLOC_ARENA_MAX=$${MALLOC_ARENA_MAX-2}" in recipe
    assert recipe.index("MALLOC_ARENA_MAX") < recipe.index("copyledger.cli serve")
