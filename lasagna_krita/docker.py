"""The "Lasagna" docker: the fields of one run, Run and Cancel, a progress bar fed by `--progress jsonl`.

Run starts `lasagna` with QProcess, so Krita's event loop goes on while it works (the progress bar moves,
the canvas stays usable); Cancel sends it SIGTERM, which Lasagna handles like Ctrl-C (exit 143, nothing
written). An error is shown as the CLI's one line. The fields are kept in Krita's settings between
sessions. Needs Krita.
"""

from __future__ import annotations

import json
from typing import Any, List, Optional

from krita import DockWidget, DockWidgetFactory, DockWidgetFactoryBase, Krita
from PyQt5.QtCore import QProcess
from PyQt5.QtWidgets import (QCheckBox, QComboBox, QFormLayout, QHBoxLayout, QLabel, QLineEdit, QProgressBar,
                             QPushButton, QSpinBox, QVBoxLayout, QWidget)

from .command import EditOptions, LasagnaNotFound, find_lasagna, templates_command
from .document_io import UnsupportedDocument
from .install import installed_executable
from .job import SETTINGS_GROUP, TERMINATED, Job, LasagnaRunError, configured_executable
from .progress import LineReader, describe

DOCKER_ID = "lasagna_docker"
FALLBACK_TEMPLATES = ("shade", "shade-divide", "colorize", "colorize-multiply")


class LayerChoice(QComboBox):
    """A layer of the active document, or none; the list is read again each time it opens."""

    def __init__(self) -> None:
        super().__init__()
        self.addItem("(none)", "")

    def showPopup(self) -> None:
        self.refresh()
        super().showPopup()

    def refresh(self) -> None:
        chosen = self.currentData()
        self.clear()
        self.addItem("(none)", "")
        document = Krita.instance().activeDocument()
        for path, node in _layers(document.rootNode()) if document else []:
            self.addItem(path, node.uniqueId().toString())
        self.setCurrentIndex(max(self.findData(chosen), 0))

    def node(self, document: Any) -> Optional[Any]:
        """The chosen layer of `document`, found by its unique id (names may repeat); None for none."""
        wanted = self.currentData()
        if not wanted:
            return None
        return next((n for _, n in _layers(document.rootNode()) if n.uniqueId().toString() == wanted), None)


def _layers(parent: Any, prefix: str = "") -> List[Any]:
    """(Group/Name, node) for every layer under `parent`, top to bottom as the Layers docker shows them."""
    found = []
    for node in reversed(parent.childNodes()):
        if node.type().endswith("mask"):
            continue
        path = prefix + node.name()
        found.append((path, node))
        found += _layers(node, path + "/")
    return found


class LasagnaDocker(DockWidget):
    def __init__(self) -> None:
        super().__init__()
        self.setWindowTitle("Lasagna")
        self.process: Optional[QProcess] = None
        self.job: Optional[Job] = None
        self.reader = LineReader()
        self.cancelled = False

        self.template = QComboBox()
        self.template.setEditable(True)  # a .toml file's path may be typed
        self.prompt = QLineEdit()
        self.prompt.setPlaceholderText("light from the left")
        self.steps = QSpinBox()
        self.steps.setRange(0, 100000)
        self.steps.setSpecialValueText("template's")
        self.seed = QSpinBox()
        self.seed.setRange(0, 2**31 - 1)
        self.use_layer = QCheckBox("Use the active layer as the base")
        self.hints = LayerChoice()
        self.model = QLineEdit()
        self.model.setPlaceholderText("template's default")
        self.executable = QLineEdit()
        self.executable.setPlaceholderText("lasagna on PATH")
        self.run_button = QPushButton("Run")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.bar = QProgressBar()
        self.bar.setRange(0, 1)
        self.bar.setValue(0)
        self.status = QLabel("")
        self.status.setWordWrap(True)

        form = QFormLayout()
        form.addRow("Template", self.template)
        form.addRow("Prompt", self.prompt)
        form.addRow("Steps", self.steps)
        form.addRow("Seed", self.seed)
        form.addRow("", self.use_layer)
        form.addRow("Hints layer", self.hints)
        form.addRow("Model", self.model)
        form.addRow("lasagna", self.executable)
        buttons = QHBoxLayout()
        buttons.addWidget(self.run_button)
        buttons.addWidget(self.cancel_button)
        column = QVBoxLayout()
        column.addLayout(form)
        column.addLayout(buttons)
        column.addWidget(self.bar)
        column.addWidget(self.status)
        column.addStretch(1)
        body = QWidget()
        body.setLayout(column)
        self.setWidget(body)

        self.run_button.clicked.connect(self.run)
        self.cancel_button.clicked.connect(self.cancel)
        self._restore()
        self.load_templates()

    def canvasChanged(self, canvas: Any) -> None:
        self.hints.refresh()

    # -------------------------------------------------------------------------------------------- settings

    def _restore(self) -> None:
        def read(key: str, default: str) -> str:
            return Krita.instance().readSetting(SETTINGS_GROUP, key, default)

        self.template.setEditText(read("template", "shade"))
        self.prompt.setText(read("prompt", ""))
        self.steps.setValue(int(read("steps", "0") or 0))
        self.seed.setValue(int(read("seed", "0") or 0))
        self.model.setText(read("model", ""))
        self.executable.setText(configured_executable())

    def _save(self) -> None:
        for key, value in (("template", self.template.currentText()), ("prompt", self.prompt.text()),
                           ("steps", str(self.steps.value())), ("seed", str(self.seed.value())),
                           ("model", self.model.text()), ("executable", self.executable.text())):
            Krita.instance().writeSetting(SETTINGS_GROUP, key, value)

    def options(self) -> EditOptions:
        return EditOptions(template=self.template.currentText().strip() or "shade", prompt=self.prompt.text(),
                           steps=self.steps.value() or None, seed=self.seed.value(), model=self.model.text().strip() or None)

    # -------------------------------------------------------------------------------------------- templates

    def load_templates(self) -> None:
        """Fill the template menu from `lasagna templates --json`, without waiting for it."""
        try:
            program = find_lasagna(self.executable.text().strip(), installed_executable())
        except LasagnaNotFound as exc:
            self._templates(list(FALLBACK_TEMPLATES))
            self.status.setText(str(exc))
            return
        lister = QProcess(self)
        argv = templates_command(program)

        def listed(code: int, _status: Any) -> None:
            try:
                names = [t["name"] for t in json.loads(bytes(lister.readAllStandardOutput()).decode("utf-8"))]
            except (ValueError, KeyError, TypeError):
                names = list(FALLBACK_TEMPLATES)
            self._templates(names)

        lister.finished.connect(listed)
        lister.start(argv[0], argv[1:])

    def _templates(self, names: List[str]) -> None:
        chosen = self.template.currentText()
        self.template.clear()
        self.template.addItems(names)
        self.template.setEditText(chosen)

    # -------------------------------------------------------------------------------------------- a run

    def run(self) -> None:
        self.start(Krita.instance().activeDocument())

    def start(self, document: Optional[Any]) -> None:
        """Run on `document` (Run: the active one) with the fields' values, in the background."""
        if document is None:
            self.status.setText("open a document first")
            return
        self._save()
        base = document.activeNode() if self.use_layer.isChecked() else None
        try:
            self.job = Job.prepare(document, self.options(), base_layer=base, hints_layer=self.hints.node(document),
                                   executable=self.executable.text().strip() or None)
        except (LasagnaNotFound, UnsupportedDocument, OSError) as exc:
            self.status.setText(f"error: {exc}")
            return
        self.reader, self.cancelled = LineReader(), False
        self.process = QProcess(self)
        self.process.setStandardOutputFile(QProcess.nullDevice())
        self.process.readyReadStandardError.connect(self._read)
        self.process.finished.connect(self._finished)
        self.process.errorOccurred.connect(self._error)
        self.bar.setRange(0, 0)  # busy until the first step
        self.status.setText("starting lasagna...")
        self._running(True)
        self.process.start(self.job.argv[0], self.job.argv[1:])

    def cancel(self) -> None:
        if self.process is not None and self.process.state() != QProcess.NotRunning:
            self.cancelled = True
            self.status.setText("cancelling...")
            self.process.terminate()  # SIGTERM

    def _read(self) -> None:
        assert self.process is not None
        for event in self.reader.feed(bytes(self.process.readAllStandardError())):
            if event.kind == "progress" and event.total:
                self.bar.setRange(0, event.total)
                self.bar.setValue(event.step)
                self.status.setText(describe(event))

    def _finished(self, exit_code: int, _status: Any) -> None:
        assert self.process is not None and self.job is not None
        self._read()
        self.reader.close()
        job, self.job = self.job, None
        try:
            nodes = job.finish(self.reader, exit_code)
        except LasagnaRunError as exc:
            cancelled = self.cancelled and exc.exit_code == TERMINATED
            self.status.setText("cancelled" if cancelled else f"error: {exc}")
        except OSError as exc:
            self.status.setText(f"error: {exc}")
        else:
            self.status.setText(f"added {', '.join(n.name() for n in nodes)} in \"{nodes[0].parentNode().name()}\"")
        self.bar.setRange(0, 1)
        self.bar.setValue(1 if self.status.text().startswith("added") else 0)
        self._running(False)

    def _error(self, error: Any) -> None:
        if error == QProcess.FailedToStart and self.job is not None:
            self.status.setText(f"error: can't run {self.job.argv[0]}")
            self.job.cleanup()
            self.job = None
            self.bar.setRange(0, 1)
            self._running(False)

    def _running(self, running: bool) -> None:
        self.run_button.setEnabled(not running)
        self.cancel_button.setEnabled(running)


def register(krita: Any) -> None:
    krita.addDockWidgetFactory(DockWidgetFactory(DOCKER_ID, DockWidgetFactoryBase.DockRight, LasagnaDocker))
