"""Open our PSDs in a real GIMP (2.10, headless, Script-Fu) and read back what it made of them.

Tests import this to check, with an application we did not write, that the layers, blend modes,
opacities and the composite of the documents we save are what we meant:

    gimp_available() -> bool                       # and gimp_unavailable_reason() for pytest.skip
    gimp_flatten(psd, out_png)                     # GIMP's composite, alpha kept, as a PNG
    gimp_flatten([(psd, png), ...])                # same, many documents for one GIMP start-up
    gimp_layer_modes(psd) -> [(name, mode, opacity, visible), ...]
    gimp_open_many([psd, ...], out_dir) -> [GimpDocument]   # both, plus blend spaces etc., one start-up
    read_png(path) -> float32 [H, W, C] in [0, 1]  # 8- or 16-bit PNG (PIL truncates 16-bit RGBA)

A GIMP start-up costs 2.5-5 s on the first call of a process (fresh profile: GIMP queries its
plug-ins) and ~1 s after, plus ~0.3 s per document, so batch documents into one call where you can.
GIMP runs with a throw-away HOME/profile (never the user's), no fonts and no data, no display, in its
own process group under a timeout; a failure raises GimpError (a RuntimeError) carrying GIMP's own
output. See docs/GIMP.md for what the importer keeps and where its maths differs from Photoshop's.
"""

from __future__ import annotations

import atexit
import os
import re
import shutil
import signal
import struct
import subprocess
import tempfile
import threading
import time
import zlib
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Sequence, Union

import numpy as np

__all__ = [
    "GimpDocument",
    "GimpError",
    "GimpLayer",
    "gimp_available",
    "gimp_command",
    "gimp_flatten",
    "gimp_layer_modes",
    "gimp_open_many",
    "gimp_unavailable_reason",
    "gimp_version",
    "read_png",
]

DEFAULT_TIMEOUT_S = 120.0

# GIMP 2.10's GimpLayerMode, named as Script-Fu's LAYER-MODE-* constants (lower case, prefix
# dropped), which is also GIMP's own enum nick. Names are resolved inside GIMP from those
# constants, so a renumbering would show up as a wrong name, not a silent mismatch.
GIMP_LAYER_MODES = (
    "normal-legacy", "dissolve", "behind-legacy", "multiply-legacy", "screen-legacy",
    "overlay-legacy", "difference-legacy", "addition-legacy", "subtract-legacy",
    "darken-only-legacy", "lighten-only-legacy", "hsv-hue-legacy", "hsv-saturation-legacy",
    "hsl-color-legacy", "hsv-value-legacy", "divide-legacy", "dodge-legacy", "burn-legacy",
    "hardlight-legacy", "softlight-legacy", "grain-extract-legacy", "grain-merge-legacy",
    "color-erase-legacy", "overlay", "lch-hue", "lch-chroma", "lch-color", "lch-lightness",
    "normal", "behind", "multiply", "screen", "difference", "addition", "subtract",
    "darken-only", "lighten-only", "hsv-hue", "hsv-saturation", "hsl-color", "hsv-value",
    "divide", "dodge", "burn", "hardlight", "softlight", "grain-extract", "grain-merge",
    "vivid-light", "pin-light", "linear-light", "hard-mix", "exclusion", "linear-burn",
    "luma-darken-only", "luma-lighten-only", "luminance", "color-erase", "erase", "merge",
    "split", "pass-through",
)  # fmt: skip
GIMP_COLOR_SPACES = ("auto", "rgb-linear", "rgb-perceptual")  # LAYER-COLOR-SPACE-*
GIMP_COMPOSITE_MODES = ("auto", "union", "clip-to-backdrop", "clip-to-layer", "intersection")
GIMP_PRECISIONS = {  # PRECISION-* values
    100: "u8-linear", 150: "u8-gamma", 200: "u16-linear", 250: "u16-gamma",
    300: "u32-linear", 350: "u32-gamma", 500: "half-linear", 550: "half-gamma",
    600: "float-linear", 650: "float-gamma", 700: "double-linear", 750: "double-gamma",
}  # fmt: skip


class GimpError(RuntimeError):
    """GIMP is missing, failed, timed out, or did not write what it was asked to."""


@dataclass
class GimpLayer:
    name: str
    path: tuple[str, ...]  # group names from the top level down to this layer, itself included
    mode: str  # GIMP_LAYER_MODES name, e.g. "multiply"
    opacity: float  # 0..1 (GIMP reports 0..100)
    visible: bool
    blend_space: str  # GIMP_COLOR_SPACES name
    composite_space: str
    composite_mode: str  # GIMP_COMPOSITE_MODES name
    is_group: bool
    has_mask: bool
    offset: tuple[int, int]  # (x, y) in image coordinates
    size: tuple[int, int]  # (width, height)


@dataclass
class GimpDocument:
    psd: Path
    width: int
    height: int
    precision: str  # GIMP_PRECISIONS name: "u8-gamma" for an 8-bit PSD
    layers: list[GimpLayer] = field(default_factory=list)  # bottom to top, groups before children
    png: Path | None = None  # GIMP's composite, when asked for


# ----------------------------------------------------------------------------- finding GIMP


def _candidates() -> list[str]:
    env = os.environ.get("LASAGNA_GIMP")
    if env:
        return [env]
    return ["gimp-console-2.10", "gimp-console", "gimp-2.10", "gimp"]


@lru_cache(maxsize=None)
def gimp_command() -> str | None:
    """Absolute path of the GIMP executable to run (LASAGNA_GIMP overrides), or None."""
    for name in _candidates():
        found = shutil.which(name)
        if found:
            return found
    return None


@lru_cache(maxsize=None)
def gimp_version() -> str | None:
    exe = gimp_command()
    if exe is None:
        return None
    try:
        proc = subprocess.run(
            [exe, "--version"], capture_output=True, text=True, timeout=30, env=_clean_env(None)
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    m = re.search(r"version\s+(\d+\.\d+(?:\.\d+)?)", proc.stdout + proc.stderr)
    return m.group(1) if m else None


def gimp_unavailable_reason() -> str | None:
    """None if gimp_flatten & co. can run here, else why not (for pytest.skip)."""
    exe = gimp_command()
    if exe is None:
        return "GIMP not installed (apt-get install gimp); looked for " + ", ".join(_candidates())
    version = gimp_version()
    if version is None:
        return f"{exe} --version did not report a version"
    if not version.startswith("2.10"):
        # GIMP 3's Script-Fu passes files as GFile and exports via file-png-export: other calls.
        return f"{exe} is GIMP {version}; this harness speaks GIMP 2.10's Script-Fu"
    return None


def gimp_available() -> bool:
    return gimp_unavailable_reason() is None


# ----------------------------------------------------------------------------- running GIMP


def _clean_env(home: Path | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GIMP", "GEGL", "BABL", "XDG_"))}
    env.pop("DISPLAY", None)  # gimp-console needs none; never talk to the user's X server
    env.pop("WAYLAND_DISPLAY", None)
    env["LC_ALL"] = "C.UTF-8"  # English messages, UTF-8 file names
    env["LANGUAGE"] = "C"
    if home is not None:
        env["HOME"] = str(home)
        env["GIMP2_DIRECTORY"] = str(home / "gimp-profile")
        env["XDG_CONFIG_HOME"] = str(home / "config")
        env["XDG_CACHE_HOME"] = str(home / "cache")
        env["XDG_DATA_HOME"] = str(home / "data")
        env["XDG_RUNTIME_DIR"] = str(home / "runtime")
        (home / "runtime").mkdir(mode=0o700, exist_ok=True)
        env["TMPDIR"] = str(home / "tmp")
        (home / "tmp").mkdir(exist_ok=True)
    return env


def _scm_string(s: str | os.PathLike) -> str:
    return '"' + str(s).replace("\\", "\\\\").replace('"', '\\"') + '"'


def _scm_names(prefix: str, names: Sequence[str]) -> str:
    """An alist value -> name built from GIMP's own constants; ones it lacks are left out."""
    pairs = " ".join(
        f"(if (defined? '{prefix}{n.upper()}) (list (cons {prefix}{n.upper()} \"{n}\")) '())"
        for n in names
    )
    return f"(append {pairs})"


# Script-Fu (TinyScheme) run as ONE -b command: definitions do not survive between -b commands.
# Names go out as Unicode code points so that no quoting or encoding can garble them.
_SCM_LIB = r"""
(define lz-modes %(modes)s)
(define lz-spaces %(spaces)s)
(define lz-composites %(composites)s)
(define (lz-name table v) (let ((hit (assv v table))) (if hit (cdr hit) (number->string v))))
(define (lz-codes s) (let loop ((cs (string->list s)) (acc ""))
  (if (null? cs) acc
      (loop (cdr cs) (string-append acc (if (string=? acc "") "" ",")
                                    (number->string (char->integer (car cs))))))))
(define (lz-join xs) (if (null? (cdr xs)) (car xs) (string-append (car xs) "\t" (lz-join (cdr xs)))))
(define (lz-bool v) (if (= v 0) "0" "1"))
(define (lz-items result) (vector->list (car (last-pair result))))
(define (lz-layer port item depth)
  (let ((group (car (gimp-item-is-group item))))
    (display (lz-join (list "L" (number->string depth) (lz-codes (car (gimp-item-get-name item)))
      (lz-name lz-modes (car (gimp-layer-get-mode item)))
      (number->string (car (gimp-layer-get-opacity item)))
      (lz-bool (car (gimp-item-get-visible item)))
      (lz-name lz-spaces (car (gimp-layer-get-blend-space item)))
      (lz-name lz-spaces (car (gimp-layer-get-composite-space item)))
      (lz-name lz-composites (car (gimp-layer-get-composite-mode item)))
      (lz-bool group)
      (if (= (car (gimp-layer-get-mask item)) -1) "0" "1")
      (number->string (car (gimp-drawable-offsets item)))
      (number->string (cadr (gimp-drawable-offsets item)))
      (number->string (car (gimp-drawable-width item)))
      (number->string (car (gimp-drawable-height item))))) port)
    (newline port)
    (if (= group 1)
        (for-each (lambda (c) (lz-layer port c (+ depth 1)))
                  (reverse (lz-items (gimp-item-get-children item)))))))
(define (lz-open psd report png)
  (let* ((img (car (file-psd-load RUN-NONINTERACTIVE psd psd)))
         (port (open-output-file report)))
    (display (lz-join (list "I" (number->string (car (gimp-image-width img)))
                                (number->string (car (gimp-image-height img)))
                                (number->string (car (gimp-image-get-precision img))))) port)
    (newline port)
    (for-each (lambda (l) (lz-layer port l 0)) (reverse (lz-items (gimp-image-get-layers img))))
    (if (> (string-length png) 0)
        (let ((flat (car (gimp-layer-new-from-visible img img "lasagna-flat"))))
          (gimp-image-insert-layer img flat 0 0)
          (file-png-save2 RUN-NONINTERACTIVE img flat png png 0 6 0 0 0 0 0 0 0)))
    (display "END" port)
    (newline port)
    (close-output-port port)
    (gimp-image-delete img)))
"""


def _script(jobs: Sequence[tuple[Path, Path, Path | None]]) -> str:
    lib = _SCM_LIB % {
        "modes": _scm_names("LAYER-MODE-", GIMP_LAYER_MODES),
        "spaces": _scm_names("LAYER-COLOR-SPACE-", GIMP_COLOR_SPACES),
        "composites": _scm_names("LAYER-COMPOSITE-", GIMP_COMPOSITE_MODES),
    }
    calls = "\n".join(
        f"(lz-open {_scm_string(psd)} {_scm_string(report)} {_scm_string(png or '')})"
        for psd, report, png in jobs
    )
    return f"(begin {lib}\n{calls})"


_profile_lock = threading.Lock()
_profile: Path | None = None


def _drop_profile() -> None:
    global _profile
    if _profile is not None:
        shutil.rmtree(_profile, ignore_errors=True)
        _profile = None


def _home() -> Path:
    """A throw-away HOME + GIMP profile for this process, kept between calls.

    GIMP's first start on a fresh profile queries all ~120 plug-ins to write pluginrc (3-5 s);
    later starts read it (~1 s). The profile is never the user's, so an unwritable or missing HOME
    does not matter, and it is deleted at exit (or after any failed run, in case it is damaged).
    """
    global _profile
    if _profile is None or not _profile.is_dir():
        _profile = Path(tempfile.mkdtemp(prefix="lasagna-gimp-home-"))
    return _profile


atexit.register(_drop_profile)


def _run_gimp(script: str, timeout: float, workdir: Path) -> tuple[str, float]:
    """Run one batch; return (GIMP's combined output, seconds). Raises GimpError."""
    reason = gimp_unavailable_reason()
    if reason:
        raise GimpError(reason)
    cmd = [
        gimp_command(),
        "-i",  # no interface
        "-n",  # new instance (never hand the batch to a running GIMP)
        "-d",  # no brushes/patterns/gradients/...
        "-f",  # no fonts: skips the fontconfig scan of a fresh cache
        "-c",  # messages to the console, not to a dialog
        "--no-shm",
        "--stack-trace-mode=never",  # a crashing plug-in must not wait for an answer
        "--pdb-compat-mode=off",
        "--batch-interpreter=plug-in-script-fu-eval",
        "-b",
        script,
        "-b",
        "(gimp-quit 0)",
    ]
    with _profile_lock:
        home = _home()
        start = time.monotonic()
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=_clean_env(home),
            cwd=workdir,
            start_new_session=True,  # so a timeout kills the plug-in processes too
        )
        try:
            out, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, _ = proc.communicate()
            _drop_profile()
            raise GimpError(
                f"GIMP did not finish within {timeout:g} s; its output:\n"
                + out.decode("utf-8", "replace")
            ) from None
        finally:
            try:  # plug-ins left behind by a GIMP that crashed
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        elapsed = time.monotonic() - start
        text = out.decode("utf-8", "replace")
        if proc.returncode != 0 or "execution error" in text:
            if proc.returncode != 0:  # a crash may have left the profile half-written
                _drop_profile()
            raise GimpError(f"GIMP failed (exit {proc.returncode}):\n{text}\n--- command: {cmd[:-4]}")
    return text, elapsed


def _parse_report(psd: Path, report: Path, png: Path | None, gimp_output: str) -> GimpDocument:
    try:
        lines = report.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise GimpError(f"GIMP wrote no report for {psd}; its output:\n{gimp_output}") from None
    if not lines or lines[-1] != "END" or not lines[0].startswith("I\t"):
        raise GimpError(f"GIMP stopped part-way through {psd}; its output:\n{gimp_output}")
    _, w, h, prec = lines[0].split("\t")
    doc = GimpDocument(psd, int(w), int(h), GIMP_PRECISIONS.get(int(prec), prec), png=png)
    parents: list[str] = []
    for line in lines[1:-1]:
        f = line.split("\t")
        depth = int(f[1])
        name = "".join(chr(int(c)) for c in f[2].split(",") if c)
        del parents[depth:]
        layer = GimpLayer(
            name=name,
            path=(*parents, name),
            mode=f[3],
            opacity=float(f[4]) / 100.0,
            visible=f[5] == "1",
            blend_space=f[6],
            composite_space=f[7],
            composite_mode=f[8],
            is_group=f[9] == "1",
            has_mask=f[10] == "1",
            offset=(int(f[11]), int(f[12])),
            size=(int(f[13]), int(f[14])),
        )
        doc.layers.append(layer)
        if layer.is_group:
            parents.append(name)
    if png is not None and not png.is_file():
        raise GimpError(f"GIMP wrote no PNG for {psd}; its output:\n{gimp_output}")
    return doc


last_run_seconds: float | None = None  # wall time of the latest GIMP batch, for the curious


def gimp_open_many(
    psds: Sequence[Union[str, os.PathLike]],
    out_dir: Union[str, os.PathLike, None] = None,
    *,
    pngs: Sequence[Union[str, os.PathLike]] | None = None,
    timeout: float = DEFAULT_TIMEOUT_S,
) -> list[GimpDocument]:
    """Open every PSD in ONE GIMP run: report its layers and, if asked, save its composite.

    The composite is GIMP's projection (Layer > New from Visible): what GIMP shows, canvas-sized,
    alpha kept, saved as an RGBA PNG at the image's precision (16-bit PNG for a 16-bit PSD).
    PNGs go to `pngs[i]` if given, else `out_dir/<psd stem>.png` if out_dir is given, else none.
    """
    global last_run_seconds
    psd_paths = [Path(p).resolve() for p in psds]
    for p in psd_paths:
        if not p.is_file():
            raise FileNotFoundError(p)
    if pngs is not None:
        if len(pngs) != len(psd_paths):
            raise ValueError("pngs must be as long as psds")
        png_paths: list[Path | None] = [Path(p).resolve() for p in pngs]
    elif out_dir is not None:
        png_paths = [Path(out_dir).resolve() / f"{p.stem}.png" for p in psd_paths]
    else:
        png_paths = [None] * len(psd_paths)
    if len({p for p in png_paths if p is not None}) != sum(p is not None for p in png_paths):
        raise ValueError("two documents would write the same PNG")
    for png in png_paths:
        if png is not None:
            png.parent.mkdir(parents=True, exist_ok=True)
            png.unlink(missing_ok=True)  # so a stale file cannot pass for GIMP's output
    if not psd_paths:
        return []
    with tempfile.TemporaryDirectory(prefix="lasagna-gimp-run-") as tmp:
        work = Path(tmp)
        reports = [work / f"report-{i}.txt" for i in range(len(psd_paths))]
        script = _script(list(zip(psd_paths, reports, png_paths)))
        try:
            output, last_run_seconds = _run_gimp(script, timeout, work)
        except GimpError as e:
            for psd, report in zip(psd_paths, reports):
                if not (report.is_file() and report.read_text(encoding="utf-8").endswith("END\n")):
                    raise GimpError(f"{e}\n--- while GIMP was on {psd}") from None
            raise
        return [
            _parse_report(psd, rep, png, output)
            for psd, rep, png in zip(psd_paths, reports, png_paths)
        ]


PathPair = tuple[Union[str, os.PathLike], Union[str, os.PathLike]]


def gimp_flatten(
    psd: Union[str, os.PathLike, Sequence[PathPair]],
    out_png: Union[str, os.PathLike, None] = None,
    *,
    timeout: float = DEFAULT_TIMEOUT_S,
) -> None:
    """Save GIMP's composite of `psd` (alpha kept) to `out_png`.

    Or pass a list of (psd, png) pairs as `psd` to do them all in one GIMP start-up.
    """
    if isinstance(psd, (str, os.PathLike)):
        if out_png is None:
            raise TypeError("gimp_flatten(psd, out_png) needs out_png")
        pairs: list[PathPair] = [(psd, out_png)]
    else:
        if out_png is not None:
            raise TypeError("give either (psd, out_png) or a list of pairs, not both")
        pairs = list(psd)
    gimp_open_many([a for a, _ in pairs], pngs=[b for _, b in pairs], timeout=timeout)


def gimp_layer_modes(
    psd: Union[str, os.PathLike], *, timeout: float = DEFAULT_TIMEOUT_S
) -> list[tuple[str, str, float, bool]]:
    """(name, GIMP mode name, opacity 0..1, visible) per layer, bottom to top like psd-tools.

    Groups come before their children (psd-tools' descendants() order); a group's mode is
    "pass-through" when it passes through.
    """
    (doc,) = gimp_open_many([psd], timeout=timeout)
    return [(l.name, l.mode, l.opacity, l.visible) for l in doc.layers]


# ----------------------------------------------------------------------------- reading PNGs


def read_png(path: Union[str, os.PathLike]) -> np.ndarray:
    """Decode a non-interlaced 8/16-bit gray/GA/RGB/RGBA PNG to float32 [H, W, C] in [0, 1].

    PIL cannot: it truncates 16-bit RGB(A) to 8 bits. Small and slow-ish; made for test images.
    """
    data = Path(path).read_bytes()
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError(f"{path}: not a PNG")
    pos, idat, ihdr = 8, [], None
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            ihdr = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat.append(body)
        elif kind == b"IEND":
            break
    if ihdr is None:
        raise ValueError(f"{path}: no IHDR")
    width, height, depth, ctype, _, _, interlace = ihdr
    channels = {0: 1, 2: 3, 4: 2, 6: 4}.get(ctype)
    if channels is None or depth not in (8, 16) or interlace:
        raise ValueError(f"{path}: unsupported PNG (colour type {ctype}, depth {depth}, interlace {interlace})")
    bpp = channels * depth // 8
    stride = width * bpp
    raw = np.frombuffer(zlib.decompress(b"".join(idat)), np.uint8).reshape(height, stride + 1)
    out = np.zeros((height, stride), np.int32)
    prev = np.zeros(stride, np.int32)
    for y in range(height):
        ftype, line = raw[y, 0], raw[y, 1:].astype(np.int32)
        if ftype == 0:
            cur = line
        elif ftype == 2:
            cur = (line + prev) & 0xFF
        elif ftype in (1, 3, 4):
            cur = line.copy()
            for x in range(0, stride, bpp):
                left = cur[x - bpp : x] if x else np.zeros(bpp, np.int32)
                up = prev[x : x + bpp]
                if ftype == 1:
                    pred = left
                elif ftype == 3:
                    pred = (left + up) >> 1
                else:
                    ul = prev[x - bpp : x] if x else np.zeros(bpp, np.int32)
                    p = left + up - ul
                    pa, pb, pc = np.abs(p - left), np.abs(p - up), np.abs(p - ul)
                    pred = np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, up, ul))
                cur[x : x + bpp] = (cur[x : x + bpp] + pred) & 0xFF
        else:
            raise ValueError(f"{path}: bad filter type {ftype} in row {y}")
        out[y] = cur
        prev = cur
    if depth == 16:
        b = out.reshape(height, width * channels, 2)
        values = (b[..., 0] << 8 | b[..., 1]).astype(np.float32) / 65535.0
    else:
        values = out.astype(np.float32) / 255.0
    return values.reshape(height, width, channels)
