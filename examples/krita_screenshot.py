"""Screenshot of the Lasagna docker in a real Krita, for the README: `python examples/krita_screenshot.py OUT.png`.

Needs `krita` and `xvfb-run` (apt-get install krita xvfb). Krita runs under Xvfb with a throw-away profile
(never the user's): `lasagna krita install` puts the plug-in there, and a second, throw-away plug-in written
here (`lasagna_screenshot`) drives the window once it is up: it shows the Lasagna docker, fills its fields,
presses Run on the still life, waits for the layers, grabs the main window (QWidget.grab) into OUT.png and
quits. The picture is what Krita itself drew; nothing is composed afterwards.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LASAGNA = Path(sys.executable).with_name("lasagna")

DRIVER = '''
import os
from krita import Extension, Krita
from PyQt5.QtCore import QTimer
from PyQt5.QtWidgets import QDockWidget

OUT, STEPS = os.environ["LASAGNA_SCREENSHOT"], int(os.environ.get("LASAGNA_SCREENSHOT_STEPS", "60"))


class Screenshot(Extension):
    def setup(self):
        Krita.instance().notifier().windowCreated.connect(lambda: QTimer.singleShot(4000, self.fill))

    def createActions(self, window):
        pass

    def window(self):
        return Krita.instance().activeWindow().qwindow()

    def fill(self):
        window = self.window()
        window.resize(1500, 950)
        self.docker = next(d for d in window.findChildren(QDockWidget) if d.windowTitle() == "Lasagna")
        self.docker.show()
        self.docker.raise_()
        self.docker.template.setEditText("shade")
        self.docker.prompt.setText("light from the left")
        self.docker.steps.setValue(STEPS)
        self.docker.run()
        QTimer.singleShot(500, self.wait)

    def wait(self):
        if not self.docker.run_button.isEnabled():
            QTimer.singleShot(500, self.wait)
            return
        QTimer.singleShot(1500, self.grab)

    def grab(self):
        self.window().grab().save(OUT)
        for document in Krita.instance().documents():
            document.setModified(False)
        Krita.instance().action("file_quit").trigger()


Krita.instance().addExtension(Screenshot(Krita.instance()))
'''


def without_virtualenvs(path: str) -> str:
    """PATH without virtualenvs' bin folders: Krita's embedded Python takes the first `python3` on PATH as its
    prefix, and a virtualenv's has no PyQt5 (the plug-in finds `lasagna` through its install manifest)."""
    return os.pathsep.join(p for p in path.split(os.pathsep) if not (Path(p).parent / "pyvenv.cfg").exists())


def main(out: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="lasagna-krita-shot-") as folder:
        profile = Path(folder)
        env = {**os.environ, "HOME": str(profile / "home"), "XDG_DATA_HOME": str(profile / "data"),
               "XDG_CONFIG_HOME": str(profile / "config"), "XDG_CACHE_HOME": str(profile / "cache"),
               "XDG_RUNTIME_DIR": str(profile / "runtime"), "LASAGNA_SCREENSHOT": str(out.resolve()),
               "OMP_NUM_THREADS": "1", "PATH": without_virtualenvs(os.environ["PATH"])}
        (profile / "runtime").mkdir(mode=0o700)
        subprocess.run([str(LASAGNA), "krita", "install"], env=env, check=True)
        pykrita = profile / "data" / "krita" / "pykrita"
        (pykrita / "lasagna_screenshot").mkdir()
        (pykrita / "lasagna_screenshot" / "__init__.py").write_text(textwrap.dedent(DRIVER))
        (pykrita / "lasagna_screenshot.desktop").write_text(
            "[Desktop Entry]\nType=Service\nServiceTypes=Krita/PythonPlugin\nX-KDE-Library=lasagna_screenshot\n"
            "X-Python-2-Compatible=false\nName=Lasagna screenshot\n")
        with (profile / "config" / "kritarc").open("a") as rc:
            rc.write("enable_lasagna_screenshot=true\n")  # the [python] group install wrote is the last one
        (profile / "config" / "kritadisplayrc").write_text("[General]\nOpenGLRenderer=none\n")  # Xvfb has no GPU
        out.unlink(missing_ok=True)
        krita = subprocess.Popen(["xvfb-run", "-a", "-s", "-screen 0 1600x1000x24", "krita", "--nosplash",
                                  str(REPO / "examples" / "still-life.psd")], env=env, start_new_session=True)
        try:
            krita.wait(timeout=600)
        except subprocess.TimeoutExpired:
            os.killpg(krita.pid, signal.SIGTERM)  # xvfb-run, Xvfb and Krita
            krita.wait()
        if not out.exists():
            raise SystemExit("Krita quit without writing the screenshot")
        print(f"wrote {out}")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else REPO / "docs" / "images" / "krita-docker.png"))
