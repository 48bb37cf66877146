"""The writing room: results and pictures on disk, atomically (`atomic`), in the format their name asks for
(`psd`, `images`), named, checked and paired with their sidecar in one place (`outputs`)."""

from .atomic import remove_stale_temporaries
from .outputs import (
    RESULT_SUFFIX,
    SIDECAR_SUFFIX,
    DocumentFormat,
    DocumentTarget,
    ImageTarget,
    default_output,
    discard_incomplete,
    document_output,
    image_output,
    preview_folder,
    result_complete,
    result_file,
    save_png,
    save_psd,
    sidecar_for,
    write_document,
    write_image,
)

__all__ = [
    "RESULT_SUFFIX", "SIDECAR_SUFFIX", "DocumentFormat", "DocumentTarget", "ImageTarget", "default_output",
    "discard_incomplete", "document_output", "image_output", "preview_folder", "remove_stale_temporaries",
    "result_complete", "result_file", "save_png", "save_psd", "sidecar_for", "write_document", "write_image",
]
