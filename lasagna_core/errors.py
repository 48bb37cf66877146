"""Errors a user can cause. The CLI turns each into one stderr line and an exit code."""

import re


class LasagnaError(Exception):
    """Base of every error that is the user's input, not a bug; its message is written for a person."""

    exit_code: int = 1


class DocumentError(LasagnaError):
    """A file that can't be read as an image or document: missing, corrupt, truncated, not an image."""


class UnsupportedDocumentError(DocumentError):
    """A readable document in a form Lasagna refuses (colour mode, bit depth, ...)."""


class ImageTooLargeError(DocumentError):
    """A document above the pixel limit; refused before its pixels are decoded."""


class OutputError(LasagnaError):
    """An output that can't or mustn't be written (would overwrite the input, folder missing, ...)."""


class UsageError(LasagnaError):
    """Options that contradict each other or name something that doesn't exist (a layer, a template)."""

    exit_code = 2


class ModelError(LasagnaError):
    """A model that can't be loaded: path missing, files missing, not cached while offline, pickle-only."""


class DistillationError(LasagnaError):
    """The optimisation could not produce a usable layer (it kept diverging to NaN/Inf)."""


def reason(exc: BaseException, *, with_type: bool = False, limit: int = 200) -> str:
    """The first line of an exception's message, for a one-line error. The type's name stands in for an empty
    message, or goes in front of it with `with_type` (for failures that are a library's, not the user's).
    A long line is shortened to about `limit` characters by whole sentences (see `shorten`)."""
    lines = str(exc).strip().splitlines()
    text = shorten(lines[0], limit) if lines else ""
    if with_type or not text:
        return f"{type(exc).__name__}: {text}".rstrip(": ")
    return text


def shorten(text: str, limit: int) -> str:
    """`text` cut to about `limit` characters without breaking a sentence or a word: every sentence that begins
    within the limit is kept whole, since a library's hint ("... set 'HF_HUB_OFFLINE=0' ...") is often the
    last one; a later sentence longer than `limit` is left out. Only a first sentence longer than `limit` is
    cut, after its last word that fits, with '...' (mid-word only for a "word" longer than the limit)."""
    kept: list[str] = []
    length = 0
    for sentence in re.split(r"(?<=[.!?;])\s+", text.strip()):
        if kept and (length >= limit or len(sentence) > limit):
            break
        if len(sentence) > limit:
            cut = sentence.rfind(" ", 0, limit + 1)
            kept.append(sentence[: cut if cut > 0 else limit].rstrip(" ,;:") + "...")
            break
        kept.append(sentence)
        length += len(sentence) + 1
    return " ".join(kept)
