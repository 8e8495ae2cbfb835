"""The fixed choices of the command line's options, in a module that imports nothing heavy.

The modules that act on these choices (and import torch or pandas to do so) take them from here, so
that ``rbl --help`` can declare its options without importing them.
"""

from __future__ import annotations

PLUGIN_KINDS = ("attacks", "defenses", "models", "datasets")
DEVICES = ("auto", "cpu", "cuda")
EXECUTORS = ("local", "ray")  # how the jobs of a run are spread (see runner._EXECUTORS)
LR_SCHEDULES = ("none", "cosine", "step")
PRECISIONS = ("fp32", "bf16")
PROGRESS_MODES = ("auto", "rich", "plain", "none")
LEADERBOARD_FORMATS = ("md", "csv", "json")  # the files of a leaderboard
SITE_FORMATS = ("html", "robustbench", "long-csv")  # what `rbl leaderboard --format` also renders
WORST_CASE = "worst-case"  # the attack label of the per-point worst case over every attack
