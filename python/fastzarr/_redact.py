"""URLs as fastzarr shows them: credentials in a URL (user info, any query string: S3 presigned
``X-Amz-Signature``, Azure SAS ``sig=``, tokens) never reach an error, a repr, a log line or a
cache manifest. The same rule as the Rust core's ``redact_url``, which shows store URLs."""

from __future__ import annotations

import hashlib
import re
from typing import Any

__all__ = ["redact_url", "redact_within", "url_digest"]


def redact_url(url: str) -> str:
    """``url`` with its user info and query blanked out (``***``); a plain path is returned as is.

    >>> redact_url("https://user:pw@host/data.zarr?sig=abc")
    'https://***@host/data.zarr?***'
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    rest, question, _ = rest.partition("?")
    rest, _, _ = rest.partition("#")  # a fragment may carry tokens too (OAuth implicit flows)
    authority, slash, path = rest.partition("/")
    if "@" in authority:
        authority = "***@" + authority.rpartition("@")[2]
    return f"{scheme}://{authority}{slash}{path}{'?***' if question else ''}"


_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s,'\"]+")


def redact_within(value: Any) -> Any:
    """``value`` (JSON-like: dicts, lists, strings) with every URL in it redacted, also URLs
    inside free text (``"s3://a?sig=x, s3://b"``)."""
    if isinstance(value, str):
        return _URL.sub(lambda m: redact_url(m.group()), value) if "://" in value else value
    if isinstance(value, dict):
        return {k: redact_within(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact_within(v) for v in value]
    return value


def url_digest(url: str) -> str:
    """A hash of the whole URL: tells two URLs apart that differ only in what is redacted."""
    return hashlib.sha256(url.encode()).hexdigest()
