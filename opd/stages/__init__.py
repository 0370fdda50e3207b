"""Stage entry points: one function per workflow rule, called by the thin scripts/ files.

Each function takes plain paths and config dicts, does the stage's I/O and calls the library.
They can be run outside Snakemake too, e.g. ``opd.stages.world.make_problems(...)``.
"""
