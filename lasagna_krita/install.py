"""`lasagna krita install` / `uninstall`: the plug-in's files in Krita's resource folder, and its kritarc entry.

Install writes `pykrita/lasagna_krita/` (this package's modules), `pykrita/lasagna_krita.desktop` (what
Krita's plug-in manager scans for) and `enable_lasagna_krita=true` in the `[python]` group of kritarc.
Krita reads that group from its own settings file whatever its resource folder is (PythonPluginManager:
KSharedConfig, i.e. kritarc in the user's configuration folder), so `--resources DIR` moves the files and
not the entry; `--kritarc FILE` names another settings file (a test profile, a portable set-up).

Before writing anything it records in `pykrita/lasagna_krita/install.json` every folder it creates, every
file it writes and what the kritarc entry was, so that uninstall removes exactly that (and the bytecode
Krita's Python compiles from those modules) and puts the entry back; a run cut short leaves a manifest
that still covers what it wrote. Installing again updates the files and keeps the first install's record
of what was there before. Krita-free (the standard library only).
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional

from . import kritarc

PLUGIN = "lasagna_krita"
MANIFEST = "install.json"
GROUP, KEY = "python", f"enable_{PLUGIN}"
PACKAGE_DIR = Path(__file__).resolve().parent


class InstallError(RuntimeError):
    """Something install or uninstall must not do, or can't; the message is one line for a person."""


@dataclass(frozen=True)
class Locations:
    resources: Path  # Krita's resource folder
    kritarc: Path  # Krita's settings file


@dataclass(frozen=True)
class Action:
    verb: str  # created, copied, updated, unchanged, enabled, recorded; removed, disabled, restored, kept
    path: Path
    detail: str = ""

    def line(self) -> str:
        return f"{self.verb} {self.path}" + (f" ({self.detail})" if self.detail else "")

    def as_dict(self) -> Dict[str, str]:
        return {"action": self.verb, "path": str(self.path), "detail": self.detail}


def default_locations(platform: str = sys.platform, env: Optional[Mapping[str, str]] = None,
                      home: Optional[Path] = None) -> Locations:
    """Where Krita keeps a user's resources and settings (Qt's AppDataLocation and GenericConfigLocation for
    an application named krita): Linux $XDG_DATA_HOME/krita (~/.local/share/krita) and $XDG_CONFIG_HOME/kritarc
    (~/.config/kritarc); macOS ~/Library/Application Support/krita and ~/Library/Preferences/kritarc;
    Windows %APPDATA%\\krita and %LOCALAPPDATA%\\kritarc."""
    env = os.environ if env is None else env
    home = Path.home() if home is None else home
    if platform == "darwin":
        return Locations(home / "Library/Application Support/krita", home / "Library/Preferences/kritarc")
    if platform.startswith("win"):
        roaming = Path(env.get("APPDATA") or home / "AppData/Roaming")
        local = Path(env.get("LOCALAPPDATA") or home / "AppData/Local")
        return Locations(roaming / "krita", local / "kritarc")
    data = Path(env.get("XDG_DATA_HOME") or home / ".local/share")
    config = Path(env.get("XDG_CONFIG_HOME") or home / ".config")
    return Locations(data / "krita", config / "kritarc")


def plugin_files() -> Dict[str, bytes]:
    """What install writes under pykrita/, by path relative to it: the modules and the .desktop file."""
    files = {f"{PLUGIN}/{p.name}": p.read_bytes() for p in sorted(PACKAGE_DIR.glob("*.py"))}
    files[f"{PLUGIN}.desktop"] = (PACKAGE_DIR / f"{PLUGIN}.desktop").read_bytes()
    return files


def read_manifest(plugin_dir: Path) -> Optional[Dict[str, Any]]:
    path = plugin_dir / MANIFEST
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InstallError(f"{path} can't be read ({exc}); remove the plug-in folder by hand") from None


def installed_executable(plugin_dir: Path = PACKAGE_DIR) -> Optional[str]:
    """The lasagna executable that installed the plug-in in `plugin_dir`, when it was installed."""
    try:
        manifest = read_manifest(plugin_dir)
    except InstallError:
        return None
    return None if manifest is None else manifest.get("executable")


def install(locations: Locations, executable: Optional[str]) -> List[Action]:
    """Copy the plug-in into `locations.resources`, enable it in `locations.kritarc`; one Action per step."""
    pykrita = locations.resources / "pykrita"
    plugin_dir = pykrita / PLUGIN
    old = read_manifest(plugin_dir)
    if old is None and plugin_dir.exists():
        raise InstallError(f"{plugin_dir} exists but was not written by `lasagna krita install` (no {MANIFEST}); "
                           "move it away first")
    if old is not None and Path(old["kritarc"]["path"]) != locations.kritarc:
        raise InstallError(f"the plug-in in {locations.resources} was enabled in {old['kritarc']['path']}; "
                           "run `lasagna krita uninstall` first to enable it elsewhere")
    files = plugin_files()
    new_folders = _missing_folders(plugin_dir)
    created = old["created_folders"] if old else new_folders
    rc_record = old["kritarc"] if old else {
        "path": str(locations.kritarc), "created_file": not locations.kritarc.exists(),
        "created_folders": _missing_folders(locations.kritarc.parent), "change": None,
    }
    try:
        plugin_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InstallError(f"can't create {plugin_dir}: {exc.strerror or exc}") from None
    actions = [Action("created", Path(folder)) for folder in reversed(new_folders)]
    enabled = _enabled_text(locations.kritarc, rc_record)
    manifest = {"plugin": PLUGIN, "executable": executable, "created_folders": created,
                "files": sorted(files) + [f"{PLUGIN}/{MANIFEST}"], "kritarc": rc_record}
    _write(plugin_dir / MANIFEST, _json(manifest))
    actions.append(Action("recorded", plugin_dir / MANIFEST, "what uninstall removes"))
    for relative, data in files.items():
        target = pykrita / relative
        verb = "copied" if not target.exists() else "unchanged" if target.read_bytes() == data else "updated"
        if verb != "unchanged":
            _write(target, data)
        actions.append(Action(verb, target))
    for relative in sorted(set(old["files"]) - set(manifest["files"]) if old else ()):
        if _remove_file(pykrita / relative):
            actions.append(Action("removed", pykrita / relative, "no longer part of the plug-in"))
    entry = f"[{GROUP}] {KEY}=true"
    if enabled is None:
        actions.append(Action("unchanged", locations.kritarc, entry))
    else:
        _write(locations.kritarc, enabled.encode("utf-8"))
        actions.append(Action("enabled", locations.kritarc, entry))
    return actions


def uninstall(resources: Path) -> List[Action]:
    """Remove what install wrote into `resources` and take back its kritarc entry; nothing when not installed."""
    pykrita = resources / "pykrita"
    plugin_dir = pykrita / PLUGIN
    manifest = read_manifest(plugin_dir)
    if manifest is None:
        if plugin_dir.exists():
            raise InstallError(f"{plugin_dir} was not written by `lasagna krita install` (no {MANIFEST}); left alone")
        return []
    actions = [Action("removed", pykrita / relative) for relative in manifest["files"]
               if relative != f"{PLUGIN}/{MANIFEST}" and _remove_file(pykrita / relative)]
    actions += _remove_bytecode(plugin_dir, manifest["files"])
    actions += _disable(manifest["kritarc"])
    _remove_file(plugin_dir / MANIFEST)
    actions.append(Action("removed", plugin_dir / MANIFEST))
    actions += _remove_folders(manifest["created_folders"])
    return actions


# ------------------------------------------------------------------------------------------ folders and files


def _missing_folders(folder: Path) -> List[str]:
    """The folders from `folder` up that don't exist yet, deepest first (uninstall's order), as absolute paths."""
    missing = []
    while not folder.exists() and folder != folder.parent:
        missing.append(str(folder))
        folder = folder.parent
    return missing


def _remove_folders(folders: List[str]) -> List[Action]:
    actions = []
    for folder in folders:  # deepest first: a parent is empty once its children are gone
        path = Path(folder)
        if not path.is_dir():
            continue
        if any(path.iterdir()):
            actions.append(Action("kept", path, "not empty"))
            continue
        path.rmdir()
        actions.append(Action("removed", path))
    return actions


def _remove_bytecode(plugin_dir: Path, files: List[str]) -> List[Action]:
    """The __pycache__ that Krita's Python compiled from the plug-in's modules: made from what install wrote,
    so it goes too (and the folder, when nothing else is in it)."""
    cache = plugin_dir / "__pycache__"
    stems = {Path(f).stem for f in files if f.endswith(".py")}
    removed = [Action("removed", p) for p in sorted(cache.glob("*.pyc")) if p.name.split(".")[0] in stems and _remove_file(p)]
    if cache.is_dir() and not any(cache.iterdir()):
        cache.rmdir()
        removed.append(Action("removed", cache))
    return removed


def _remove_file(path: Path) -> bool:
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise InstallError(f"can't remove {path}: {exc.strerror or exc}") from None
    return True


def _write(path: Path, data: bytes) -> None:
    """Atomically, so that a cut-short run leaves the old file or the new one, never half of one."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary.write_bytes(data)
        if path.exists():
            os.chmod(temporary, path.stat().st_mode & 0o7777)
        os.replace(temporary, path)
    except OSError as exc:
        if temporary.exists():
            temporary.unlink()
        raise InstallError(f"can't write {path}: {exc.strerror or exc}") from None


def _json(data: Any) -> bytes:
    return (json.dumps(data, indent=2) + "\n").encode("utf-8")


# ------------------------------------------------------------------------------------------ the kritarc entry


def _enabled_text(path: Path, record: Dict[str, Any]) -> Optional[str]:
    """kritarc's new text with the plug-in enabled (None: it already is), the change put in `record` first:
    the manifest is written before kritarc, so an install cut short between the two is still undone. A
    reinstall keeps the first install's change, what was there before Lasagna."""
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    if kritarc.read_entry(text, GROUP, KEY) == "true" and record["change"] is not None:
        return None
    new, change = kritarc.set_entry(text, GROUP, KEY, "true")
    if record["change"] is None:
        record["change"] = asdict(change)
    return new


def _disable(record: Dict[str, Any]) -> List[Action]:
    path = Path(record["path"])
    if record["change"] is None or not path.exists():
        return []
    change = kritarc.Change(**record["change"])
    text = kritarc.undo(path.read_text(encoding="utf-8"), GROUP, KEY, change)
    if record["created_file"] and text == "":
        _remove_file(path)
        actions = [Action("removed", path)]
    else:
        _write(path, text.encode("utf-8"))
        actions = [Action("restored" if change.previous is not None else "disabled", path, f"[{GROUP}] {KEY}")]
    return actions + _remove_folders(record["created_folders"])
