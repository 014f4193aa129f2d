"""The OpenAPI 3.1 document served at `GET /openapi.json` (hand-written, kept truthful:
the fields are those of docs/ingest.md, validated by engine/ingest/records.py)."""

from __future__ import annotations

from typing import Any

from engine.serve.api import API_TOKEN_ENV, MAX_BATCH

_TIME = {
    "type": "string",
    "description": "RFC 3339 / ISO 8601 time; without an offset it is shop-local time "
    "(docs/ingest.md, Times)",
}
_TEXT = {"type": "string"}
_AMOUNT = {
    "type": ["number", "string"],
    "description": 'a decimal >= 0 with at most 2 decimals (12.5 or "12.50")',
}
_BOOL = {
    "type": ["boolean", "string", "integer"],
    "description": "true/false, 1/0, yes/no (any case) or a JSON boolean",
}

EVENT = {
    "type": "object",
    "description": "One event in the JSONL ingest schema. Any other key is stored in "
    "`properties`. An unknown user id creates a bare user.",
    "properties": {
        "user": {"type": "string", "maxLength": 128, "description": "the user's id"},
        "user_id": {"type": "string", "description": "alias of `user`"},
        "type": {
            "type": "string",
            "description": "visit, signup, purchase, refund, coupon_redeemed, ad_click, "
            "email_open, email_click, unsubscribe or any custom name",
        },
        "at": _TIME,
        "occurred_at": {**_TIME, "description": "alias of `at`"},
        "time": {**_TIME, "description": "alias of `at`"},
        "id": {
            "type": "string",
            "description": "your unique id of the event: posting it again stores nothing "
            "(without one, a hash of the event's content is used)",
        },
        "event_id": {"type": "string", "description": "alias of `id`"},
        "amount": {
            **_AMOUNT,
            "description": "required for purchase and refund; " + _AMOUNT["description"],
        },
        "currency": {"type": "string", "description": "ISO 4217; none means shop.currency"},
        "order_id": _TEXT,
        "coupon_code": _TEXT,
        "utm_source": _TEXT,
        "utm_medium": _TEXT,
        "utm_campaign": _TEXT,
        "utm_content": _TEXT,
        "utm_term": _TEXT,
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
        "id": {"type": "string", "maxLength": 128, "description": "the shop's id of the user"},
        "email": _TEXT,
        "phone": _TEXT,
        "name": _TEXT,
        "country": {"type": "string", "description": "ISO 3166 alpha-2"},
        "timezone": {"type": "string", "description": "IANA name"},
        "locale": {"type": "string", "description": "zh-CN, en..."},
        "member_tier": _TEXT,
        "member_since": _TIME,
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 64}},
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
