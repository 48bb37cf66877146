"""The `lasagna` command line the plug-in runs, and where the `lasagna` executable is. Krita-free.

The plug-in never imports Lasagna: Krita's Python has no torch, so the edit runs as a subprocess of the
`lasagna` executable, which reports through `--progress jsonl`.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional


class LasagnaNotFound(RuntimeError):
    """No `lasagna` executable: the message says where it was looked for and how to set it."""


@dataclass(frozen=True)
class EditOptions:
    """What the docker's fields (or a script's keyword arguments) ask of one run."""

    template: str = "shade"
    prompt: str = ""
    steps: Optional[int] = None  # None: the template's
    seed: int = 0
    model: Optional[str] = None  # None: the template's


def edit_command(template: str) -> str:
    """`shade` or `colorize`: the two commands differ only in their default template, so this only makes the
    command line read as what it does."""
    return "colorize" if Path(template).stem.startswith("colorize") else "shade"


def build_command(executable: str, options: EditOptions, base: Path, output: Path,
                  hints: Optional[Path] = None) -> List[str]:
    """The argv of one edit: `base` (a picture of the document or of one layer) -> `output` (a PSD)."""
    argv = [executable, edit_command(options.template), str(base), "--template", options.template,
            "--output", str(output), "--seed", str(options.seed), "--progress", "jsonl"]
    if options.prompt.strip():
        argv += ["--prompt", options.prompt]
    if options.steps is not None:
        argv += ["--steps", str(options.steps)]
    if options.model:
        argv += ["--model", options.model]
    if hints is not None:
        argv += ["--hints", str(hints)]
    return argv


def templates_command(executable: str) -> List[str]:
    """The argv that lists the templates for the docker's menu."""
    return [executable, "templates", "--json"]


def find_lasagna(setting: Optional[str], installed_by: Optional[str]) -> str:
    """The executable to run: the user's setting when given, else `lasagna` on PATH, else the one that ran
    `lasagna krita install` (Krita started from a desktop menu often has no virtualenv on its PATH)."""
    if setting:
        path = shutil.which(setting) or (setting if Path(setting).is_file() else None)
        if path is None:
            raise LasagnaNotFound(f"the lasagna executable set in the Lasagna docker, {setting}, does not exist")
        return path
    found = shutil.which("lasagna")
    if found:
        return found
    if installed_by and Path(installed_by).is_file():
        return installed_by
    raise LasagnaNotFound("no lasagna executable on PATH: set its path in the Lasagna docker "
                          "(e.g. /path/to/venv/bin/lasagna)")
