"""Run a script inside a real Krita, headless: `kritarunner -s MODULE ARGS...` on Qt's offscreen platform.

kritarunner imports MODULE (found on PYTHONPATH, here the repository and tests/) and calls its `__main__`
with the arguments as a list; it exits 0 whatever the script does, so scripts report through a file.
Krita runs with its own throw-away configuration (kritarunnerrc, never the user's) and a resource folder
kept between runs in the system's temporary folder: the first start copies about 90 MB of Krita's bundled
resources there (about 20 s), later ones take about 1.5 s.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

from tests.conftest import REPO

TIMEOUT_S = 600.0


def kritarunner_unavailable_reason() -> str | None:
    return None if shutil.which("kritarunner") else "kritarunner is not installed (apt-get install krita)"


def run_kritarunner(module: str, args: list[str], home: Path, timeout: float = TIMEOUT_S) -> subprocess.CompletedProcess:
    """kritarunner's run of `module` (its output kept for failure messages), killed with its group at `timeout`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("XDG_", "KRITA", "QT_", "PYTHON", "VIRTUAL_ENV"))}
    env.pop("DISPLAY", None)
    env.pop("WAYLAND_DISPLAY", None)
    runtime = home / "runtime"
    runtime.mkdir(mode=0o700, parents=True, exist_ok=True)
    env.update({
        "QT_QPA_PLATFORM": "offscreen", "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests")]),
        "XDG_CONFIG_HOME": str(home / "config"), "XDG_RUNTIME_DIR": str(runtime), "XDG_CACHE_HOME": str(home / "cache"),
        "XDG_DATA_HOME": str(Path(tempfile.gettempdir()) / f"lasagna-kritarunner-data-{os.getuid()}"),
        "PYTHONDONTWRITEBYTECODE": "1",  # no __pycache__ inside the checkout from Krita's Python
        # Krita's embedded Python takes the first python3 on PATH as its prefix: a virtualenv's has no PyQt5.
        "PATH": os.pathsep.join(p for p in env["PATH"].split(os.pathsep) if not (Path(p).parent / "pyvenv.cfg").exists()),
    })
    process = subprocess.Popen(["kritarunner", "-s", module, *args], env=env, cwd=home, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        raise AssertionError(f"kritarunner ran past {timeout:.0f} s:\n{output[-4000:]}") from None
    return subprocess.CompletedProcess(process.args, process.returncode, output, "")
