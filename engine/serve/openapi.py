"""The OpenAPI 3.1 document served at `GET /openapi.json` (hand-written, kept truthful:
the fields are those of docs/ingest.md, validated by engine/ingest/records.py)."""

from __future__ import annotations

from typing import Any

from engine.ingest.records import TAG_LENGTH
from engine.ingest.values import MAX_AMOUNT
from engine.serve.api import API_TOKEN_ENV, MAX_BATCH
from engine.store.people import Event, User

# The validator's limits are the tables' column lengths: the document says the same.
_EVENT_LENGTH = {c.name: c.type.length for c in Event.__table__.c if getattr(c.type, "length", 0)}
_USER_LENGTH = {c.name: c.type.length for c in User.__table__.c if getattr(c.type, "length", 0)}

_TIME = {
    "type": "string",
    # An annotation (JSON Schema 2020-12 does not assert formats): RFC 3339 is the
    # form to send; the validator also reads any ISO 8601 time Python parses.
    "format": "date-time",
    "description": "RFC 3339 / ISO 8601 time; without an offset it is shop-local time "
    "(docs/ingest.md, Times)",
}


def _text(max_length: int, description: str | None = None) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string", "maxLength": max_length}
    return {**schema, "description": description} if description else schema


def _id(max_length: int, description: str) -> dict[str, Any]:
    # JSON numbers are read as their digits (order numbers, numeric user ids).
    return {"type": ["string", "integer"], "maxLength": max_length, "description": description}


_AMOUNT = {
    "type": ["number", "string"],
    "minimum": 0,
    "maximum": float(MAX_AMOUNT),
    "description": 'a decimal >= 0 with at most 2 decimals (12.5 or "12.50")',
}
_BOOL = {
    "type": ["boolean", "string", "integer"],
    "description": "true/false, 1/0, yes/no (any case) or a JSON boolean",
}

EVENT = {
    "type": "object",
    "description": "One event in the JSONL ingest schema. Any other key is stored in "
    "`properties`. An unknown user id creates a bare user. A blank string is the same "
    "as a missing key.",
    "properties": {
        "user": _id(_EVENT_LENGTH["user_id"], "the user's id"),
        "user_id": _id(_EVENT_LENGTH["user_id"], "alias of `user`"),
        "type": _text(
            _EVENT_LENGTH["type"],
            "visit, signup, purchase, refund, coupon_redeemed, ad_click, "
            "email_open, email_click, unsubscribe or any custom name",
        ),
        "at": _TIME,
        "occurred_at": {**_TIME, "description": "alias of `at`"},
        "time": {**_TIME, "description": "alias of `at`"},
        "id": _id(
            _EVENT_LENGTH["source_id"],
            "your unique id of the event: posting it again stores nothing "
            "(without one, a hash of the event's content is used)",
        ),
        "event_id": _id(_EVENT_LENGTH["source_id"], "alias of `id`"),
        "amount": {
            **_AMOUNT,
            "description": "required for purchase and refund; " + _AMOUNT["description"],
        },
        "currency": {
            "type": "string",
            "minLength": 3,
            "maxLength": 3,
            "description": "ISO 4217; none means shop.currency; another one needs a rate "
            "in nudge.toml",
        },
        "order_id": _id(_EVENT_LENGTH["order_id"], "the shop's order number"),
        "coupon_code": _id(_EVENT_LENGTH["coupon_code"], "redeems this coupon (a purchase)"),
        **{
            name: _text(_EVENT_LENGTH[name])
            for name in ("utm_source", "utm_medium", "utm_campaign", "utm_content", "utm_term")
        },
        "properties": {"type": "object", "description": "free properties"},
    },
    "allOf": [
        {"anyOf": [{"required": ["user"]}, {"required": ["user_id"]}]},
        {"required": ["type"]},
        {"anyOf": [{"required": ["at"]}, {"required": ["occurred_at"]}, {"required": ["time"]}]},
    ],
    "additionalProperties": True,
}

USER = {
    "type": "object",
    "description": "One user in the JSONL ingest schema (an upsert: fields not given keep "
    "their stored value). Any other key is stored in `attributes`.",
    "properties": {
        "id": _id(_USER_LENGTH["id"], "the shop's id of the user"),
        "email": _text(_USER_LENGTH["email"]),
        "phone": _text(_USER_LENGTH["phone"]),
        "name": _text(_USER_LENGTH["name"]),
        "country": {"type": "string", "maxLength": 8, "description": "ISO 3166 alpha-2"},
        "timezone": {"type": "string", "maxLength": 64, "description": "IANA name"},
        "locale": {"type": "string", "maxLength": 16, "description": "zh-CN, en..."},
        "member_tier": _text(_USER_LENGTH["member_tier"]),
        "member_since": _TIME,
        "tags": {
            "type": ["array", "string"],
            "items": {"type": "string", "maxLength": TAG_LENGTH},
            "description": "replaces the user's tags: a list, or one ';'-separated string",
        },
        "attributes": {"type": "object"},
        "email_opt_in": _BOOL,
        "sms_opt_in": _BOOL,
        "ads_opt_in": _BOOL,
        "unsubscribed_at": _TIME,
    },
    "required": ["id"],
    "additionalProperties": True,
}

RESULT = {
    "type": "object",
    "properties": {
        "index": {"type": "integer", "description": "position of the item in the request"},
        "status": {"type": "string", "enum": ["stored", "duplicate", "rejected"]},
        "reason": {
            "type": ["string", "null"],
            "description": "why it was rejected (the ingest validator's message), or "
            "`already stored` for a duplicate; null when stored",
        },
    },
    "required": ["index", "status", "reason"],
}

RESPONSE = {
    "type": "object",
    "properties": {
        "stored": {"type": "integer"},
        "duplicate": {"type": "integer"},
        "rejected": {"type": "integer"},
        "results": {"type": "array", "items": {"$ref": "#/components/schemas/Result"}},
    },
    "required": ["stored", "duplicate", "rejected", "results"],
}

ERROR = {
    "type": "object",
    "properties": {"error": {"type": "string"}},
    "required": ["error"],
}


def _error(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


def _post(summary: str, item: str) -> dict[str, Any]:
    ref = {"$ref": f"#/components/schemas/{item}"}
    return {
        "summary": summary,
        "security": [{"bearer": []}],
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {
                        "oneOf": [ref, {"type": "array", "items": ref, "maxItems": MAX_BATCH}]
                    }
                }
            },
        },
        "responses": {
            "200": {
                "description": "One result per item, in order; the good items are stored "
                "in one transaction",
                "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/Response"}}
                },
            },
            "400": _error("The body is not JSON, or not an object or an array"),
            "401": {
                **_error("Missing or wrong bearer token"),
                "headers": {"WWW-Authenticate": {"schema": {"type": "string"}}},
            },
            "413": {
                "description": f"More than {MAX_BATCH} items (JSON error), or a body over "
                "the size limit (2 MiB; an HTML page)",
                "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/Error"}},
                    "text/html": {"schema": {"type": "string"}},
                },
            },
            "429": {
                **_error("Rate limit per client IP exceeded"),
                "headers": {"Retry-After": {"schema": {"type": "integer"}}},
            },
            "503": _error(f"API disabled: {API_TOKEN_ENV} is not set"),
        },
    }


OPENAPI: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "Nudge event API",
        "version": "1",
        "description": "Send users and events to Nudge as `nudge ingest` would read them "
        "from JSONL files (docs/ingest.md, docs/serve.md).",
    },
    "paths": {
        "/v1/events": {"post": _post("Store events", "Event")},
        "/v1/users": {"post": _post("Create or update users", "User")},
        "/healthz": {
            "get": {
                "summary": "Health check",
                "responses": {
                    "200": {
                        "description": "The database can be read",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    },
                    "503": {
                        "description": "The database cannot be read",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    },
                },
            }
        },
    },
    "components": {
        "schemas": {
            "Event": EVENT,
            "User": USER,
            "Result": RESULT,
            "Response": RESPONSE,
            "Error": ERROR,
        },
        "securitySchemes": {
            "bearer": {
                "type": "http",
                "scheme": "bearer",
                "description": f"The value of {API_TOKEN_ENV}",
            }
        },
    },
}
