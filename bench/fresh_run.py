"""Seconds from `make run` in a fresh clone to the first answer of /healthz (issue 14, D45).

Clones this repository's HEAD into a temporary folder, runs `make run` there with empty caches
(pip with no cache and, unless --machine-pip-config, no configuration: a fresh machine has
none; uv and XDG caches in new empty folders), polls /healthz every 0.1 s and records when it
first answers 200, with the CPU seconds `make run` had used by then (what a loaded machine
stretches, an idle one does not), and when each step of `make run` ended: the first sight of
what the step leaves behind (PHASES), with the session's CPU seconds then. Then it waits for
the background install (`run-finish` in .venv/setup.log), stops the server and prints JSON.
Debian packages already installed are not reinstalled, so their time is not in these numbers
(D45 has them measured apart).

With --certificate, once the background install is done and before the server stops, it
registers the Chinese work of the tests (`tests.helpers.zh_work_body`) with a creator key made
by the clone's own command line, fetches its zh-CN PDF certificate and records its size, the
fonts `pdffonts` finds in it and which installed file the CJK font came from (D56).

Usage: python bench/fresh_run.py [--runs 3] [--port 8790] [--finish-timeout 900] [--certificate]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PHASES = (("uv installed", ".venv-uv/bin/uv"), ("venv made", ".venv/bin/python"),
          ("serving lock installed", ".venv/lib/python{v}/site-packages/copyledger-checkout.pth"))
"""`make run`'s foreground steps, each seen ended by the file it leaves (pip installs uv; uv
makes the venv; uv installs the serving lock, then tools/link_checkout.py writes the .pth)."""
sys.path.insert(0, str(REPO))

from tests.helpers import zh_work_body  # noqa: E402


def fresh_env(caches: Path, machine_pip_config: bool) -> dict[str, str]:
    """The environment of a machine that has installed nothing yet."""
    env = dict(os.environ)
    if not machine_pip_config:
        env = {k: v for k, v in env.items() if not k.startswith("PIP_")}
        env["PIP_CONFIG_FILE"] = os.devnull
    env.update(PIP_NO_CACHE_DIR="1", UV_CACHE_DIR=str(caches / "uv"),
               XDG_CACHE_HOME=str(caches / "xdg"))
    env.pop("VIRTUAL_ENV", None)
    return env


def healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as r:
            return bool(r.status == 200)
    except OSError:
        return False


def _stat(pid: int) -> list[str]:
    text = Path(f"/proc/{pid}/stat").read_text()
    return text[text.rindex(")") + 2:].split()  # fields from the 3rd (state) on


def session_cpu(sid: int) -> float:
    """CPU seconds (user + system) spent so far by a session: its live processes and every
    child they reaped. The detached background install is another session: not counted."""
    ticks = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            f = _stat(int(entry.name))
        except (OSError, ValueError):
            continue
        if int(f[3]) == sid:  # field 6, session id
            ticks += sum(int(x) for x in f[11:15])  # utime stime cutime cstime
    return ticks / os.sysconf("SC_CLK_TCK")


def stop_under(folder: Path) -> None:
    """End the process groups of anything still running in `folder` (the background install
    when --finish-timeout ran out)."""
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and Path(entry, "cwd").resolve().is_relative_to(folder):
                os.killpg(int(_stat(int(entry.name))[2]), signal.SIGTERM)
        except (OSError, ValueError):
            continue


def zh_certificate(clone: Path, data: Path, port: int, out: Path) -> dict[str, object]:
    """Register the Chinese work on the fresh server, save its zh-CN PDF certificate to `out`
    and say how big it is, what fonts it embeds and which file the CJK font was read from."""
    made = subprocess.run([str(clone / ".venv/bin/python"), "-m", "copyledger.cli", "keys",
                           "create", "--role", "creator", "--account", "zhang", "--data-dir",
                           str(data), "--json"], cwd=clone, capture_output=True, text=True,
                          check=True)
    key = json.loads(made.stdout)["key"]
    base = f"http://127.0.0.1:{port}"
    post = urllib.request.Request(f"{base}/v1/works", data=json.dumps(zh_work_body()).encode(),
                                  headers={"Authorization": f"Bearer {key}",
                                           "Content-Type": "application/json"})
    with urllib.request.urlopen(post, timeout=60) as r:
        seq = json.loads(r.read())["seq"]
    get = urllib.request.Request(f"{base}/v1/entries/{seq}/certificate?format=pdf",
                                 headers={"Accept-Language": "zh-CN"})
    with urllib.request.urlopen(get, timeout=120) as r:
        pdf = r.read()
    out.write_bytes(pdf)
    fonts = subprocess.run(["pdffonts", str(out)], capture_output=True, text=True).stdout
    where = subprocess.run([str(clone / ".venv/bin/python"), "-c", "from copyledger.service "
                            "import certificate; print(certificate.CJK_FONT)"], cwd=clone,
                           capture_output=True, text=True).stdout.strip()
    package = subprocess.run(["dpkg", "-S", where], capture_output=True, text=True).stdout
    return {"pdf_bytes": len(pdf), "pdffonts": fonts.splitlines()[2:], "cjk_font_file": where,
            "cjk_font_package": package.strip(), "saved_to": str(out)}


def one_run(port: int, finish_timeout: float, machine_pip_config: bool,
            rev: str = "HEAD", certificate: Path | None = None) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="copyledger-fresh-") as tmp:
        clone, caches = Path(tmp) / "clone", Path(tmp) / "caches"
        subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
        subprocess.run(["git", "-C", str(clone), "checkout", "-q",
                        subprocess.run(["git", "-C", str(REPO), "rev-parse", rev], check=True,
                                       capture_output=True, text=True).stdout.strip()],
                       check=True)
        background = "run-finish" in (clone / "Makefile").read_text()
        env = fresh_env(caches, machine_pip_config)
        log = (Path(tmp) / "make-run.log").open("w")
        started = time.monotonic()
        proc = subprocess.Popen(["make", "run", f"PORT={port}", f"DATA_DIR={tmp}/data"],
                                cwd=clone, env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        serving = cpu = None
        version = f"{sys.version_info.major}.{sys.version_info.minor}"
        pending = [(name, clone / path.format(v=version)) for name, path in PHASES]
        phases: dict[str, dict[str, float]] = {}
        try:
            while time.monotonic() - started < finish_timeout and proc.poll() is None:
                while pending and pending[0][1].exists():
                    phases[pending.pop(0)[0]] = {
                        "seconds": round(time.monotonic() - started, 2),
                        "cpu_seconds": round(session_cpu(proc.pid), 2)}
                if healthy(port):
                    serving = time.monotonic() - started
                    cpu = session_cpu(proc.pid)
                    break
                time.sleep(0.1)
            setup_log = clone / ".venv" / "setup.log"
            finished = None
            while background and time.monotonic() - started < finish_timeout:
                if setup_log.exists() and "run-finish:" in setup_log.read_text():
                    finished = time.monotonic() - started
                    break
                time.sleep(0.5)
            after = setup_log.read_text().strip().splitlines()[-1:] if setup_log.exists() else []
            cert = (zh_certificate(clone, Path(tmp) / "data", port, certificate)
                    if certificate is not None and serving is not None else None)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=30)
            log.close()
            stop_under(clone)
        return {"seconds_to_healthz": None if serving is None else round(serving, 2),
                "cpu_seconds_to_healthz": None if cpu is None else round(cpu, 2),
                "load_average_at_healthz": [round(x, 1) for x in os.getloadavg()],
                "phases": phases,
                "seconds_to_finished_install": None if finished is None else round(finished, 2),
                "finish": after[0] if after else None,
                "zh_certificate": cert,
                "make_run_log_tail": (Path(tmp) / "make-run.log").read_text()[-400:]
                if serving is None else None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--port", type=int, default=8790)
    ap.add_argument("--finish-timeout", type=float, default=900)
    ap.add_argument("--rev", default="HEAD", help="the commit to measure (HEAD)")
    ap.add_argument("--machine-pip-config", action="store_true",
                    help="keep this machine's pip configuration (its extra indexes)")
    ap.add_argument("--certificate", type=Path, metavar="PDF",
                    help="after the install, save the zh-CN certificate of a Chinese work here")
    args = ap.parse_args()
    if shutil.which("make") is None:
        sys.exit("make is missing")
    runs = [one_run(args.port, args.finish_timeout, args.machine_pip_config, args.rev,
                    args.certificate) for _ in range(args.runs)]
    load = os.getloadavg()
    print(json.dumps({"runs": runs, "load_average_at_end": [round(x, 2) for x in load],
                      "cores": os.cpu_count()}, indent=2))


if __name__ == "__main__":
    main()
