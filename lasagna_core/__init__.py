"""Lasagna's engine: documents, blend modes, templates and score distillation, without any CLI."""

__version__ = "0.1.0"
