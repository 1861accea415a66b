"""Segment tracking API messages mapped onto the lambdalake event contract.

The official Segment SDKs (and RudderStack's, which speak the same API) post messages like
``{"type": "track", "event": "Order Completed", "messageId": "...", "userId": "...",
"timestamp": "...", "properties": {...}, "context": {...}}``. Each becomes one contract event:

==========================  =====================================================================
Segment                     lambdalake
==========================  =====================================================================
``messageId``               ``event_id``; a non-UUID id becomes ``uuid5(MESSAGE_ID_NAMESPACE, id)``
                            (deterministic, so a resend dedupes) and the original is kept in
                            ``context.message_id``; a missing one gets a new uuid4
``userId`` / ``anonymousId`` ``user_id`` / ``anonymous_id`` (numbers become strings)
``timestamp``               ``ts``; else ``originalTimestamp``; else the collector's ``received_at``
``context``                 ``context`` (a ``/v1/batch``'s top-level ``context`` under each
                            message's own); ``userAgent`` -> ``user_agent``; the ``device`` object
                            -> ``device_info`` with its ``type`` as ``device``; ``integrations``
                            is kept in ``context.integrations``
track ``event``             ``event_type``: e-commerce spec names become built-in types (below),
                            any other name is kept as a custom event type
track ``properties``        ``properties`` (copied; the renames below are added)
page                        ``page_view``: ``url``/``path``/``referrer``/``title`` from properties,
                            else from ``context.page``; the page ``name`` as ``properties.name``
screen                      ``screen_view`` (a custom type); the screen ``name`` as ``properties.name``
identify                    ``identify`` with ``properties.traits`` = ``traits``
alias, group                rejected with a reason (no lambdalake equivalent yet)
==========================  =====================================================================

E-commerce spec (v2) names that match a built-in type:

- "Product Viewed" -> product_view
- "Product Added" -> add_to_cart
- "Product Removed" -> remove_from_cart
- "Checkout Started" -> checkout_started
- "Order Completed" -> purchase
- "Products Searched" -> search

For these, ``products[]`` moves to ``items[]`` (each
product's ``product_id``, falling back to the v1 spec's ``id``), ``amount`` is ``total`` (what the
customer paid), else ``revenue``, else ``value``; a product event's ``product_id`` falls back to
``id``. Required fields the spec leaves optional (a product's ``quantity``, say) are not invented:
such an event is rejected with the reason and kept in the DLQ. Transport fields (``sentAt``,
``writeKey``, ``receivedAt``, ``version``, ``channel``) are not part of the event.
"""

from __future__ import annotations

import uuid
from typing import Any

from lambdalake.contract import is_uuid

# Fixed forever: changing it would give resent non-UUID messageIds new event_ids.
MESSAGE_ID_NAMESPACE = uuid.UUID("5b0d3c1e-8f1a-5e0b-9a51-6c2d7f4e9a10")

SUPPORTED_TYPES = ("track", "page", "screen", "identify")
ECOMMERCE_EVENTS: dict[str, str] = {
    "Product Viewed": "product_view",
    "Product Added": "add_to_cart",
    "Product Removed": "remove_from_cart",
    "Checkout Started": "checkout_started",
    "Order Completed": "purchase",
    "Products Searched": "search",
}
SCREEN_VIEW = "screen_view"
PAGE_FIELDS = ("url", "path", "referrer", "title")
CONTEXT_RENAMES = {"userAgent": "user_agent"}


def message_event_id(message_id: object) -> tuple[str | None, str | None]:
    """(event_id, reason): a UUID is kept, any other string or number maps to a stable uuid5."""
    if message_id is None:
        return str(uuid.uuid4()), None
    if isinstance(message_id, bool) or not isinstance(message_id, str | int):
        return None, f"messageId: must be a string, got {type(message_id).__name__}"
    text = str(message_id)
    if not text:
        return None, "messageId: must not be empty"
    if isinstance(message_id, str) and is_uuid(text):
        return text, None
    return str(uuid.uuid5(MESSAGE_ID_NAMESPACE, text)), None


def _identity(value: object) -> object:
    # Segment's SDKs stringify numeric ids; the HTTP API accepts them, so do the same.
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value


def _context(message: dict[str, Any], batch_context: dict[str, Any] | None) -> Any:
    raw = message.get("context")
    if raw is not None and not isinstance(raw, dict):
        return raw  # the contract's validation names the wrong type
    context: dict[str, Any] = {**(batch_context or {}), **(raw or {})}
    for segment_name, ours in CONTEXT_RENAMES.items():
        if segment_name in context and ours not in context:
            context[ours] = context.pop(segment_name)
    device = context.get("device")
    if isinstance(device, dict):
        context["device_info"] = context.pop("device")
        if isinstance(device.get("type"), str):
            context["device"] = device["type"]
    integrations = message.get("integrations")
    if integrations:
        context["integrations"] = integrations
    return context


def _product_item(product: object) -> object:
    if not isinstance(product, dict):
        return product
    if "product_id" in product or "id" not in product:
        return product
    return {**product, "product_id": product["id"]}


def _ecommerce_properties(event_type: str, properties: dict[str, Any]) -> dict[str, Any]:
    props = dict(properties)
    is_product = event_type in ("product_view", "add_to_cart", "remove_from_cart")
    if is_product and "product_id" not in props and "id" in props:
        props["product_id"] = props["id"]
    if event_type in ("purchase", "checkout_started"):
        if "items" not in props and "products" in props:
            products = props.pop("products")
            props["items"] = [_product_item(p) for p in products] if isinstance(products, list) else products
        if "amount" not in props:
            for name in ("total", "revenue", "value"):
                if props.get(name) is not None:
                    props["amount"] = props[name]
                    break
        items = props.get("items")
        if event_type == "checkout_started" and "items_count" not in props and isinstance(items, list):
            props["items_count"] = len(items)
    return props


def _properties(message: dict[str, Any]) -> Any:
    props = message.get("properties")
    if props is None:
        return {}
    return dict(props) if isinstance(props, dict) else props


def map_message(
    message: object, kind: str | None, received_at: str, batch_context: dict[str, Any] | None = None
) -> tuple[dict[str, Any] | None, list[str]]:
    """One Segment message as a contract event (not yet validated), or the reasons it cannot be one.

    ``kind`` is the call type the route implies (``/v1/track`` -> "track"); ``None`` for a
    ``/v1/batch`` item, whose own ``type`` decides.
    """
    if not isinstance(message, dict):
        return None, [f"event: must be a JSON object, got {type(message).__name__}"]
    if kind is None:
        kind = message.get("type")
        if kind not in SUPPORTED_TYPES:
            supported = ", ".join(SUPPORTED_TYPES)
            if kind is None:
                return None, [f"type: a batch item needs a type (one of {supported})"]
            return None, [f"type: {kind!r} is not supported (supported: {supported})"]
    reasons: list[str] = []
    event_id, reason = message_event_id(message.get("messageId"))
    if reason:
        reasons.append(reason)
    context = _context(message, batch_context)
    original_id = message.get("messageId")
    if original_id is not None and event_id not in (None, original_id) and isinstance(context, dict):
        context["message_id"] = original_id

    properties: Any
    if kind == "track":
        name = message.get("event")
        if not isinstance(name, str) or not name:
            reasons.append("event: a track call needs an event name (a non-empty string)")
        event_type = ECOMMERCE_EVENTS.get(name, name) if isinstance(name, str) else name
        properties = _properties(message)
        if isinstance(properties, dict) and event_type in ECOMMERCE_EVENTS.values():
            properties = _ecommerce_properties(event_type, properties)
    elif kind == "page":
        event_type = "page_view"
        properties = _properties(message)
        if isinstance(properties, dict):
            page = context.get("page") if isinstance(context, dict) else None
            if isinstance(page, dict):
                for field in PAGE_FIELDS:
                    if field not in properties and field in page:
                        properties[field] = page[field]
            if message.get("name") is not None and "name" not in properties:
                properties["name"] = message["name"]
    elif kind == "screen":
        event_type = SCREEN_VIEW
        properties = _properties(message)
        if isinstance(properties, dict) and message.get("name") is not None and "name" not in properties:
            properties["name"] = message["name"]
    else:  # identify
        event_type = "identify"
        traits = message.get("traits")
        properties = {"traits": {} if traits is None else traits}

    if reasons:
        return None, reasons
    event: dict[str, Any] = {"event_id": event_id, "event_type": event_type}
    user_id, anonymous_id = _identity(message.get("userId")), _identity(message.get("anonymousId"))
    if user_id is not None:
        event["user_id"] = user_id
    if anonymous_id is not None:
        event["anonymous_id"] = anonymous_id
    event["ts"] = message.get("timestamp") or message.get("originalTimestamp") or received_at
    event["properties"] = properties
    event["context"] = context
    return event, []
