"""PII masking applied by the collector before anything is written (stream and DLQ alike).

- ``context.ip``: IPv4 truncated to its /24, IPv6 to its /48 (an IPv4-mapped IPv6 address counts as
  IPv4). A comma-separated list (an X-Forwarded-For value) is masked address by address. A value
  that is not an IP address is removed rather than stored unmasked.
- Named fields of ``properties``, ``properties.traits``, ``traits`` and ``context.traits`` (the last
  two are where Segment messages carry them, for DLQ payloads): replaced by
  ``HMAC-SHA256(key, value)`` in hex, so the same value still joins and counts distinct, but cannot
  be read back without the key. Strings are hashed as UTF-8, other JSON values as their compact
  JSON text; ``null`` stays ``null``.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from collections.abc import Collection
from typing import Any

import orjson

IPV4_PREFIX = 24
IPV6_PREFIX = 48
_V4_MASK = (2**32 - 1) ^ (2 ** (32 - IPV4_PREFIX) - 1)
_V6_MASK = (2**128 - 1) ^ (2 ** (128 - IPV6_PREFIX) - 1)


def truncate_ip(value: str) -> str | None:
    """The address's network prefix (/24 or /48), or None when it is not an IP address."""
    parts = []
    for part in value.split(","):
        try:
            address = ipaddress.ip_address(part.strip())
        except ValueError:
            return None
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        if isinstance(address, ipaddress.IPv4Address):
            parts.append(str(ipaddress.IPv4Address(int(address) & _V4_MASK)))
        else:
            parts.append(str(ipaddress.IPv6Address(int(address) & _V6_MASK)))
    return ", ".join(parts)


class PiiMasker:
    """Masks IPs and hashes named fields; ``active`` is False when settings ask for neither."""

    def __init__(self, mask_ip: bool, hash_fields: Collection[str], hash_key: str | None) -> None:
        if hash_fields and not hash_key:
            raise ValueError("hashing PII fields needs a key")
        self.mask_ip = mask_ip
        self.hash_fields = frozenset(hash_fields)
        self._key = (hash_key or "").encode()
        self.active = mask_ip or bool(self.hash_fields)

    def hash_value(self, value: object) -> str:
        data = value.encode() if isinstance(value, str) else orjson.dumps(value)
        return hmac.new(self._key, data, hashlib.sha256).hexdigest()

    def _hash_fields(self, fields: Any) -> Any:
        if not isinstance(fields, dict) or not self.hash_fields.intersection(fields):
            return fields
        out = dict(fields)
        for name in self.hash_fields.intersection(fields):
            if out[name] is not None:
                out[name] = self.hash_value(out[name])
        return out

    def _mask_context(self, context: object) -> object:
        if not isinstance(context, dict):
            return context
        out = context
        if self.mask_ip and "ip" in context and isinstance(context["ip"], str):
            out = dict(context)
            masked = truncate_ip(context["ip"])
            if masked is None:
                del out["ip"]
            else:
                out["ip"] = masked
        if self.hash_fields and "traits" in out:
            traits = self._hash_fields(out["traits"])
            if traits is not out["traits"]:
                out = out if out is not context else dict(context)
                out["traits"] = traits
        return out

    def mask(self, document: dict[str, Any]) -> dict[str, Any]:
        """A masked copy of an event or a Segment message; containers that need no change are shared."""
        if not self.active:
            return document
        out = document
        changes: dict[str, object] = {}
        if "context" in document:
            context = self._mask_context(document["context"])
            if context is not document["context"]:
                changes["context"] = context
        if self.hash_fields:
            props = document.get("properties")
            if isinstance(props, dict):
                new_props = self._hash_fields(props)
                traits = props.get("traits")
                new_traits = self._hash_fields(traits)
                if new_traits is not traits:
                    new_props = {**new_props, "traits": new_traits}
                if new_props is not props:
                    changes["properties"] = new_props
            if "traits" in document:
                traits = self._hash_fields(document["traits"])
                if traits is not document["traits"]:
                    changes["traits"] = traits
        if changes:
            out = {**document, **changes}
        return out
