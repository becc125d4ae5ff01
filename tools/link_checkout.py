"""Make this checkout's `copyledger` importable and runnable in a venv before copyledger is
installed: `make run` serves first and installs copyledger itself in the background (D45).

Links <venv>/copyledger-checkout/copyledger to the checkout's copyledger/ and names that folder
in a .pth file (the checkout's root itself must not go on the path: its top-level folders
would import as `api`, `ledger`…), then writes the `copyledger` command unless it is there
(what an installer writes for the console script). `--remove` takes the .pth and the link
away once copyledger is installed. Run it with the venv's Python.
"""

from __future__ import annotations

import shutil
import sys
import sysconfig
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    pth = Path(sysconfig.get_path("purelib"), "copyledger-checkout.pth")
    folder = Path(sys.prefix, "copyledger-checkout")
    if sys.argv[1:] == ["--remove"]:
        pth.unlink(missing_ok=True)
        shutil.rmtree(folder, ignore_errors=True)
        return
    folder.mkdir(exist_ok=True)
    link = folder / "copyledger"
    link.unlink(missing_ok=True)
    link.symlink_to(ROOT / "copyledger", target_is_directory=True)
    pth.write_text(f"{folder}\n")
    command = Path(sys.prefix, "bin", "copyledger")
    if not command.exists():
        command.write_text(f"#!{sys.executable}\nfrom copyledger.cli.main import app\n\napp()\n")
        command.chmod(0o755)


if __name__ == "__main__":
    main()
