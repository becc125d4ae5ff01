"""Make this checkout importable and `copyledger` runnable in a venv before copyledger is
installed: `make run` serves first and installs copyledger itself in the background (D45).

Writes a .pth file with the checkout's path into the venv's site-packages and, unless it is
there already, the `copyledger` command (what an installer writes for the console script).
Run it with the venv's Python: `.venv/bin/python tools/link_checkout.py`.
"""

from __future__ import annotations

import sys
import sysconfig
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    Path(sysconfig.get_path("purelib"), "copyledger-run.pth").write_text(f"{ROOT}\n")
    command = Path(sys.prefix, "bin", "copyledger")
    if not command.exists():
        command.write_text(f"#!{sys.executable}\nfrom copyledger.cli.main import app\n\napp()\n")
        command.chmod(0o755)


if __name__ == "__main__":
    main()
