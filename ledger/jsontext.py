"""JSON text written by orjson (a C encoder, a well-kept library) where it writes exactly
what the standard `json` module wrote, else by `json` as before.

Each function here names the `json.dumps` call it stands for and gives the same text for
every value that call accepts (tests/test_json_text.py holds them to it). orjson is 5-10x
faster, and a command's write makes several JSON texts: its fingerprint, its stored
result, each event's state (`ledger.store.application.FastTranscoder`).

Where orjson would write another text, the value goes to `json`:
- a float (orjson and `repr` spell some differently: `1e16` against `1e+16`);
- a type orjson writes natively but `json` did not (a UUID, an enum, a dataclass, a
  subclass of a built-in type): `only` lets through exact types named by the caller;
- what orjson refuses: a key that is not a string, an integer over 64 bits, a lone
  surrogate, nesting deeper than 254.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection
from typing import Any

import orjson

# Exact types whose JSON orjson and `json` spell alike.
PLAIN: frozenset[type] = frozenset({str, int, bool, type(None)})


def only(value: Any, leaves: Collection[type]) -> bool:
    """Is `value` made of dicts, lists and tuples whose leaves (values, not keys) are of
    exactly these types? Walked with a stack: a deep value cannot overflow it."""
    stack = [value]
    pop, extend = stack.pop, stack.extend
    while stack:
        item = pop()
        kind = type(item)
        if kind is dict:
            extend(item.values())
        elif kind is list or kind is tuple:
            extend(item)
        elif kind not in leaves:
            return False
    return True


def compact(value: Any, *, default: Callable[[Any], Any] | None = None, option: int = 0) -> str:
    """`json.dumps(value, default=default, separators=(",", ":"))` as a JSON value: the
    same value, non-ASCII characters written as UTF-8 rather than `\\uXXXX` escapes.
    `option`: orjson's (`OPT_PASSTHROUGH_*` sends those types to `default`, as `json`)."""
    try:
        return orjson.dumps(value, default=default, option=option).decode()
    except orjson.JSONEncodeError:
        return json.dumps(value, default=default, separators=(",", ":"))


def canonical(value: Any) -> str:
    """`json.dumps(value, sort_keys=True, separators=(",", ":"))`, the same text to the
    byte (it is hashed, and stored hashes must still match): orjson's where its text is
    ASCII (non-ASCII and DEL are escaped by `json`, not by orjson) and holds no float."""
    if only(value, PLAIN):
        try:
            text = orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
        except orjson.JSONEncodeError:
            pass
        else:
            if text.isascii() and b"\x7f" not in text:
                return text.decode()
    return json.dumps(value, sort_keys=True, separators=(",", ":"))
