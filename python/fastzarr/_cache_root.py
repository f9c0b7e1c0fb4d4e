"""Where the on-disk cache lives, without importing the cache itself (and xarray with it): the
command line shows the default in its help and must not pay for xarray to do so."""

from __future__ import annotations

import os
import sys
from pathlib import Path

__all__ = ["default_root", "resolve_root"]


def default_root() -> Path:
    """``$FASTZARR_CACHE_DIR``, else the platform's user cache directory + ``fastzarr``."""
    env = os.environ.get("FASTZARR_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches" / "fastzarr"
    if sys.platform.startswith("win"):
        return Path(os.environ.get("LOCALAPPDATA", Path.home())) / "fastzarr" / "Cache"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "fastzarr"


def resolve_root(root: str | os.PathLike[str] | None) -> Path:
    """The absolute cache directory ``root`` names (the default one for None)."""
    return Path(root).expanduser().absolute() if root is not None else default_root().absolute()
