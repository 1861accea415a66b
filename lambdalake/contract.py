"""The event contract every layer shares: JSON Schemas per event type and one validation function.

Schemas live in ``lambdalake/schemas/<event_type>/<version>.json``; each type's schema refers to
the common envelope (``schemas/envelope/<version>.json``). An event of a type with no schema (a
custom event from a client's own tracking plan) is valid when its envelope is, unless strict mode
lists the allowed types.

Validation has two paths that share one schema and one set of format checks, so they agree:
a compiled validator (fastjsonschema) that accepts a valid event quickly, and, only for an
invalid one, jsonschema's ``iter_errors`` to list every reason rather than the first.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Collection, Iterable, Mapping
from datetime import datetime
from functools import cache
from importlib import resources
from typing import Any

import fastjsonschema
import jsonschema

ENVELOPE = "envelope"
SCHEMA_ID_PREFIX = "lambdalake/"
BUILT_IN_TYPES = (
    "page_view",
    "product_view",
    "search",
    "add_to_cart",
    "remove_from_cart",
    "checkout_started",
    "purchase",
    "identify",
)
COMMON_FIELDS = (
    "event_id",
    "event_type",
    "schema_version",
    "user_id",
    "anonymous_id",
    "session_id",
    "ts",
    "received_at",
    "properties",
    "context",
)

_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})$")


def is_uuid(value: object) -> bool:
    return not isinstance(value, str) or bool(_UUID.match(value))


def is_datetime(value: object) -> bool:
    """RFC 3339 date-time with an explicit offset and a real calendar date."""
    if not isinstance(value, str):
        return True
    if not _RFC3339.match(value):
        return False
    try:
        # fromisoformat takes at most microseconds: cut longer fractions before parsing.
        datetime.fromisoformat(re.sub(r"(\.\d{6})\d+", r"\1", value).replace("z", "Z"))
    except ValueError:
        return False
    return True


FORMATS: dict[str, Callable[[object], bool]] = {"uuid": is_uuid, "date-time": is_datetime}


def _format_checker() -> jsonschema.FormatChecker:
    checker = jsonschema.FormatChecker(formats=())
    for name, check in FORMATS.items():
        checker.checks(name)(check)
    return checker


# --- schema loading ----------------------------------------------------------------------------
def _schema_root() -> Any:
    return resources.files("lambdalake") / "schemas"


@cache
def schema_versions() -> dict[str, list[int]]:
    """Every event type with a schema, and its versions in ascending order."""
    versions: dict[str, list[int]] = {}
    for folder in _schema_root().iterdir():
        if not folder.is_dir() or folder.name.startswith(("_", ".")):
            continue
        found = sorted(int(f.name[:-5]) for f in folder.iterdir() if re.fullmatch(r"\d+\.json", f.name))
        if found:
            versions[folder.name] = found
    return versions


@cache
def raw_schema(name: str, version: int) -> dict[str, Any]:
    return json.loads((_schema_root() / name / f"{version}.json").read_text())


def _inline_refs(node: Any) -> Any:
    """Replace ``{"$ref": "lambdalake/<name>/<n>"}`` by that schema, so both validators see one document."""
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith(SCHEMA_ID_PREFIX):
            name, version = ref[len(SCHEMA_ID_PREFIX) :].split("/")
            target = {k: v for k, v in raw_schema(name, int(version)).items() if k not in ("$id", "$schema")}
            return _inline_refs(target)
        return {k: _inline_refs(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_inline_refs(v) for v in node]
    return node


@cache
def resolved_schema(name: str, version: int) -> dict[str, Any]:
    return _inline_refs(raw_schema(name, version))


def latest_version(name: str) -> int | None:
    found = schema_versions().get(name)
    return found[-1] if found else None


@cache
def _fast(name: str, version: int) -> Callable[[Any], Any]:
    return fastjsonschema.compile(resolved_schema(name, version), formats=FORMATS)


@cache
def _slow(name: str, version: int) -> jsonschema.protocols.Validator:
    schema = resolved_schema(name, version)
    return jsonschema.Draft202012Validator(schema, format_checker=_format_checker())


# --- validation --------------------------------------------------------------------------------
def _path(error: jsonschema.ValidationError) -> str:
    out = ""
    for part in error.absolute_path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "event"


def _reason(error: jsonschema.ValidationError) -> str:
    if error.validator == "anyOf" and not error.absolute_path:
        return "event: user_id or anonymous_id is required"
    if error.validator == "additionalProperties" and not error.absolute_path:
        extra = sorted(set(error.instance) - set(COMMON_FIELDS))
        return f"event: unknown field(s) {', '.join(extra)} (allowed: {', '.join(COMMON_FIELDS)})"
    if error.validator == "format":
        return f"{_path(error)}: {error.instance!r} is not a valid {error.validator_value}"
    return f"{_path(error)}: {error.message}"


class EventValidator:
    """Validates events against the contract; ``strict_types`` (if any) lists the only allowed types."""

    def __init__(self, strict_types: Collection[str] = ()) -> None:
        self.strict_types = frozenset(strict_types)

    def schema_for(self, event: Mapping[str, Any]) -> tuple[str, int, list[str]]:
        """The (schema name, version) an event is checked against, and reasons found on the way."""
        event_type = event.get("event_type")
        reasons: list[str] = []
        if isinstance(event_type, str) and self.strict_types and event_type not in self.strict_types:
            reasons.append(
                f"event_type: {event_type!r} is not allowed (strict mode accepts: "
                f"{', '.join(sorted(self.strict_types))})"
            )
        name = event_type if isinstance(event_type, str) and event_type in schema_versions() else ENVELOPE
        if name == ENVELOPE and event_type == ENVELOPE:
            reasons.append("event_type: 'envelope' is reserved")
        version = event.get("schema_version")
        versions = schema_versions()[name]
        if name != ENVELOPE and isinstance(version, int) and not isinstance(version, bool):
            if version not in versions:
                reasons.append(f"schema_version: {event_type} has no version {version} (known: {versions})")
                return name, versions[-1], reasons
            return name, version, reasons
        return name, versions[-1], reasons

    def validate(self, event: object) -> list[str]:
        """Every reason the event is invalid; an empty list means valid."""
        if not isinstance(event, dict):
            return [f"event: must be a JSON object, got {type(event).__name__}"]
        name, version, reasons = self.schema_for(event)
        try:
            _fast(name, version)(event)
        except fastjsonschema.JsonSchemaException:
            errors = sorted(_slow(name, version).iter_errors(event), key=lambda e: list(map(str, e.path)))
            # The envelope and a type schema can both say the same thing (e.g. properties: object).
            reasons.extend(dict.fromkeys(_reason(e) for e in errors))
            if not errors:  # both paths share schema and formats; this would be a bug worth seeing
                reasons.append("event: rejected by the compiled validator")
        return reasons

    def is_valid(self, event: object) -> bool:
        return not self.validate(event)


def validate_event(event: object, strict_types: Iterable[str] = ()) -> list[str]:
    """Every reason ``event`` breaks the contract (empty when it is valid)."""
    return _validator(frozenset(strict_types)).validate(event)


@cache
def _validator(strict_types: frozenset[str]) -> EventValidator:
    return EventValidator(strict_types)


def partition_key(event: Mapping[str, Any]) -> str:
    """The stream partition key: user_id, else anonymous_id, so one user's events stay in order."""
    key = event.get("user_id") or event.get("anonymous_id") or event.get("event_id")
    return str(key)
