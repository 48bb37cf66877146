"""Lasagna's Krita plug-in: a "Lasagna" docker that adds Lasagna's layers to the open document, and
`run_on_document(document, template, prompt, **options)` for other Krita scripts.

`lasagna krita install` copies this package into Krita's resource folder (pykrita/) and enables it. Krita's
Python needs no torch: the plug-in runs the `lasagna` executable as a subprocess (`command`) and reads its
`--progress jsonl` stream (`progress`). The modules `command`, `progress`, `blend_modes`, `kritarc` and
`install` import without Krita (the CLI and the tests use them); `document_io`, `job` and `docker` need
Krita's `krita` module and PyQt5, and are imported only when Krita runs this package.
"""

try:
    import krita
except ImportError:  # outside Krita: only the Krita-free modules are used
    krita = None

if krita is not None:
    from .docker import register
    from .job import LasagnaRunError, run_on_document

    register(krita.Krita.instance())

    __all__ = ["LasagnaRunError", "run_on_document"]
