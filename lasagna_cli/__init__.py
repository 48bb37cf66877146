"""Lasagna's command line: argument parsing, progress and printing only; the work is in lasagna_core."""
