"""What a store's URL says about where the store is."""

from __future__ import annotations


def is_remote(url: str) -> bool:
    """Whether ``url`` names a store read over the network: one with a scheme other than
    ``file``. Local paths and ``file://`` URLs are read from disk."""
    return "://" in url and not url.startswith("file://")
