"""Write-key authentication.

A key is accepted from ``Authorization: Bearer <key>``, from HTTP Basic with the key as the user
name (what Segment's and RudderStack's SDKs send), or from the ``writeKey`` query parameter:
``navigator.sendBeacon`` cannot set headers, so the browser tracker's last flush on page hide has
no other way to carry it. On the Segment routes, a ``writeKey`` field of the body is accepted too
(the collector checks it after parsing; see ``app``). Write keys only allow appending events, so
one in a URL is no worse than one in a page's JavaScript, where browser keys always are.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Collection

QUERY_PARAMS = ("writeKey", "write_key")


def key_from_header(authorization: str | None) -> str | None:
    """The write key in an Authorization header, or None if there is none or it is malformed."""
    if not authorization:
        return None
    scheme, _, credentials = authorization.strip().partition(" ")
    scheme, credentials = scheme.lower(), credentials.strip()
    if scheme == "bearer":
        return credentials or None
    if scheme == "basic":
        try:
            decoded = base64.b64decode(credentials, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return None
        return decoded.partition(":")[0] or None
    return None


class WriteKeys:
    """The configured write keys; comparison is constant-time so timing reveals no key prefix."""

    def __init__(self, keys: Collection[str]) -> None:
        self._keys = [key.encode() for key in keys if key]

    def allows(self, key: str | None) -> bool:
        if not key:
            return False
        candidate = key.encode(errors="surrogateescape")
        found = False
        for known in self._keys:
            found |= hmac.compare_digest(candidate, known)
        return found
