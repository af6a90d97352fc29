"""Turning anything an agent hands us into JSON, without ever raising.

What will not encode becomes a placeholder naming its type (``<unserializable Foo>``),
so one odd object costs one field, never the event. ``canonical_json`` (sorted keys,
compact, no NaN) is the form that is stored and hashed.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as _dt
import enum
import json
import math
import uuid
from collections.abc import Mapping
from decimal import Decimal
from pathlib import PurePath
from typing import Any

__all__ = ["MAX_DEPTH", "canonical_json", "clean_str", "safe_text", "to_jsonable"]

MAX_DEPTH = 32

_SCALARS = (str, int, bool, type(None))


def _type_name(obj: object) -> str:
    return type(obj).__qualname__


def clean_str(text: str) -> str:
    """``text`` with lone surrogates replaced by U+FFFD, so it encodes as UTF-8.

    Why: a lone surrogate (from a broken decode or a sliced emoji) makes sqlite3 and
    every UTF-8 writer raise; valid text passes through untouched and fast."""
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        # utf-16 with surrogatepass re-pairs split pairs, and replaces the lone ones.
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def _float(value: float) -> float | str:
    if math.isfinite(value):
        return value
    if math.isnan(value):
        return "NaN"
    return "Infinity" if value > 0 else "-Infinity"


def _key(key: Any) -> str:
    if isinstance(key, str):
        return clean_str(key)
    if isinstance(key, (int, float, bool)) or key is None:
        return json.dumps(_float(key) if isinstance(key, float) else key)
    converted = to_jsonable(key)
    return converted if isinstance(converted, str) else json.dumps(converted, sort_keys=True)


def to_jsonable(obj: Any, _depth: int = 0, _path: frozenset[int] = frozenset()) -> Any:
    """``obj`` as plain JSON values (dict, list, str, int, float, bool, None).

    Never raises. Datetimes become ISO 8601, bytes UTF-8 text or ``base64:…``, sets
    sorted lists, dataclasses and pydantic models their fields, NaN and infinities
    strings; cycles, excessive depth and anything else unknown become placeholders."""
    try:
        return _convert(obj, _depth, _path)
    except Exception:  # a __repr__, property or model_dump that raises
        return f"<unserializable {_type_name(obj)}>"


def _convert(obj: Any, depth: int, path: frozenset[int]) -> Any:
    if isinstance(obj, str):
        return clean_str(obj)
    if obj is None or isinstance(obj, (bool, int)):
        if isinstance(obj, enum.Enum):
            return to_jsonable(obj.value, depth + 1, path)
        return obj
    if isinstance(obj, float):
        return _float(obj)
    if depth >= MAX_DEPTH:
        return f"<too deep {_type_name(obj)}>"
    if isinstance(obj, enum.Enum):
        return to_jsonable(obj.value, depth + 1, path)
    if isinstance(obj, (_dt.datetime, _dt.date, _dt.time)):
        return obj.isoformat()
    if isinstance(obj, _dt.timedelta):
        return obj.total_seconds()
    if isinstance(obj, (uuid.UUID, Decimal, PurePath)):
        return str(obj)
    if isinstance(obj, (bytes, bytearray, memoryview)):
        raw = bytes(obj)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return "base64:" + base64.b64encode(raw).decode("ascii")
    marker = id(obj)
    if marker in path:
        return f"<cycle {_type_name(obj)}>"
    inner = path | {marker}
    if isinstance(obj, Mapping):
        return {_key(k): to_jsonable(v, depth + 1, inner) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v, depth + 1, inner) for v in obj]
    if isinstance(obj, (set, frozenset)):
        items = [to_jsonable(v, depth + 1, inner) for v in obj]
        return sorted(items, key=lambda v: json.dumps(v, sort_keys=True, default=str))
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {
            f.name: to_jsonable(getattr(obj, f.name, None), depth + 1, inner)
            for f in dataclasses.fields(obj)
        }
    dump = getattr(obj, "model_dump", None)  # pydantic v2, duck-typed: no import
    if callable(dump) and not isinstance(obj, type):
        return to_jsonable(dump(mode="json"), depth + 1, inner)
    legacy = getattr(obj, "dict", None)  # pydantic v1
    if callable(legacy) and hasattr(obj, "__fields__") and not isinstance(obj, type):
        return to_jsonable(legacy(), depth + 1, inner)
    return f"<unserializable {_type_name(obj)}>"


# One encoder, built once: json.dumps with non-default options builds a new one per call.
_STRICT_ENCODER = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
)


def _c_encoder() -> Any:
    """json's C encoder with the strict encoder's options, called directly: the
    pure-Python ``encode``/``iterencode`` around it make a new one on every call.
    No circular-reference markers (a shared dict would race between threads): a
    cycle ends in RecursionError, which takes the slow path like any odd value."""
    make = getattr(json.encoder, "c_make_encoder", None)
    quote = getattr(json.encoder, "c_encode_basestring", None)
    if make is None or quote is None:  # an interpreter without the _json accelerator
        return None
    enc = _STRICT_ENCODER
    return make(
        None, enc.default, quote, None, enc.key_separator, enc.item_separator, True, False, False
    )


_C_ENCODE = _c_encoder()


def _encode(obj: Any) -> str:
    if isinstance(obj, str):  # the C encoder encodes containers and numbers only
        return _STRICT_ENCODER.encode(obj)
    if _C_ENCODE is None:
        return _STRICT_ENCODER.encode(obj)
    return "".join(_C_ENCODE(obj, 0))


def canonical_json(obj: Any) -> str:
    """Compact JSON with sorted keys: the stored and hashed form. Never raises."""
    try:
        # Fast path: the writer's own payloads are plain values already.
        out = _encode(obj)
        if out.isascii():
            return out
        out.encode("utf-8")  # a lone surrogate somewhere: take the slow path
        return out
    except (TypeError, ValueError, RecursionError):  # UnicodeEncodeError is a ValueError
        pass
    try:
        return json.dumps(
            to_jsonable(obj), sort_keys=True, separators=(",", ":"), ensure_ascii=False
        )
    except Exception:  # keys that still clash in sorting, e.g.; should not happen
        return json.dumps(f"<unserializable {_type_name(obj)}>")


def safe_text(value: Any) -> str:
    """``value`` as text for a persisted field: strings as they are (cleaned), other
    values as their canonical JSON."""
    if isinstance(value, str):
        return clean_str(value)
    if value is None:
        return ""
    return canonical_json(value)
