"""Where robustbench_lite keeps its files by default (a light module: the CLI reads it before torch loads)."""

from __future__ import annotations

import os
from pathlib import Path


def default_cache_dir() -> Path:
    """Where trained weights (and the plugin catalogue) are cached: $RBL_CACHE_DIR, else ~/.cache/robustbench_lite."""
    return Path(os.environ.get("RBL_CACHE_DIR", Path.home() / ".cache" / "robustbench_lite"))
