"""`lasagna krita install` / `uninstall`: Lasagna's Krita plug-in into (and out of) Krita's resource folder.

The file work is `lasagna_krita.install` (Krita-free, the standard library only); here are the options,
the lines printed and the exit codes. Nothing heavy is imported.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from collections.abc import Callable
from typing import Any, Optional

import typer

from .console import guarded, print_json, say

krita_app = typer.Typer(help="Lasagna inside Krita: install or remove the plug-in (a docker that adds the layers to the open document).",
                        no_args_is_help=True)

Json = typer.Option(False, "--json", help="Print the actions as one JSON object on stdout.")


@krita_app.command("install")
@guarded
def install(
    resources: Optional[Path] = typer.Option(None, "--resources", help="Krita's resource folder (default: the user's; ~/.local/share/krita on Linux)."),
    kritarc: Optional[Path] = typer.Option(None, "--kritarc", help="Krita's settings file that enables the plug-in (default: the user's; ~/.config/kritarc on Linux). Krita reads it whatever the resource folder."),
    json_output: bool = Json,
) -> None:
    """Copy the plug-in into Krita's resource folder, write its .desktop file and enable it (restart Krita, then Settings > Dockers > Lasagna)."""
    from lasagna_krita.install import Locations, default_locations
    from lasagna_krita.install import install as install_plugin

    default = default_locations()
    locations = Locations(resources or default.resources, kritarc or default.kritarc)
    _report(lambda: install_plugin(locations, _this_lasagna()), locations.resources, json_output)


@krita_app.command("uninstall")
@guarded
def uninstall(
    resources: Optional[Path] = typer.Option(None, "--resources", help="The resource folder it was installed into (default: the user's)."),
    json_output: bool = Json,
) -> None:
    """Remove exactly what `lasagna krita install` wrote, and take back its kritarc entry; nothing to do is not an error."""
    from lasagna_krita.install import default_locations
    from lasagna_krita.install import uninstall as uninstall_plugin

    folder = resources or default_locations().resources
    _report(lambda: uninstall_plugin(folder), folder, json_output)


def _report(work: Callable[[], list[Any]], resources: Path, json_output: bool) -> None:
    from lasagna_core.errors import OutputError
    from lasagna_krita.install import InstallError

    try:
        actions = work()
    except InstallError as exc:
        raise OutputError(str(exc)) from None
    if json_output:
        print_json({"resources": str(resources), "actions": [a.as_dict() for a in actions]})
        return
    for action in actions:
        say(action.line())
    if not actions:
        say(f"nothing to do: the plug-in is not installed in {resources}")


def _this_lasagna() -> Optional[str]:
    """The `lasagna` executable of this installation, for a Krita started without it on PATH."""
    beside = Path(sys.executable).with_name("lasagna")
    return str(beside) if beside.is_file() else shutil.which("lasagna")
