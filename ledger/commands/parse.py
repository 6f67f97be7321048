"""From a JSON document to a validated Command, listing every bad field at once."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, NoReturn

from pydantic import ValidationError

from ledger.commands.schemas import PAYLOADS, Actor, Envelope, Model
from ledger.errors import InvalidJson, ValidationFailed
from ledger.jsontext import canonical

MAX_COMMAND_BYTES = 1_000_000


@dataclass(frozen=True)
class Command:
    """A parsed command: its name, id, actor, expected version and typed payload."""
    name: str
    command_id: str
    actor: Actor
    expected_version: int | None
    payload: Model

    def fingerprint(self) -> str:
        """Identifies the command's content, to tell a retry from a reused command_id."""
        body = {
            "command": self.name,
            "actor": self.actor.model_dump(),
            "expected_version": self.expected_version,
            "payload": self.payload.model_dump(mode="json"),
        }
        return hashlib.sha256(canonical(body).encode()).hexdigest()


def _reject_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not valid JSON")


def load_json(text: str | bytes) -> Any:
    """Parse JSON strictly: no NaN/Infinity, numbers with a fraction stay Decimal."""
    if len(text) > MAX_COMMAND_BYTES:
        raise InvalidJson(f"command is larger than {MAX_COMMAND_BYTES} bytes")
    try:
        return json.loads(text, parse_float=Decimal, parse_constant=_reject_constant)
    except (ValueError, RecursionError, UnicodeDecodeError) as e:
        raise InvalidJson(f"not valid JSON: {str(e)[:200]}") from None


def command_id_of(data: Any) -> str | None:
    """The command id of a command's JSON if it has one (cut to 128 characters)."""
    if isinstance(data, dict) and isinstance(data.get("command_id"), str):
        command_id: str = data["command_id"]
        return command_id[:128]
    return None


def _details(error: ValidationError, prefix: str) -> list[dict[str, str]]:
    found = []
    for item in error.errors(include_url=False):
        path = ".".join(str(part) for part in item["loc"])
        field = f"{prefix}.{path}" if prefix and path else (prefix or path)
        message = str(item["msg"]).removeprefix("Value error, ")
        found.append({"field": field, "message": message})
    return found


# A path inside the command, as (parent's _Where, key); spelled out only when reported.
_Where = tuple[Any, ...] | None


def _nul_characters(value: Any, path: str = "") -> list[dict[str, str]]:
    """Fields holding U+0000, anywhere in the command: PostgreSQL text cannot store it, so
    an event carrying one would stop the read models there. Walked with a stack, not by
    recursion, and each field's path is spelled out only when it is reported, so a deeply
    nested value (a dict built in process) can neither overflow nor slow it."""
    message = "must not contain the NUL character (U+0000)"

    def spelled(where: _Where) -> str:
        parts: list[str] = []
        while where is not None:
            where, key = where
            parts.append(str(key))
        spelt = path
        for part in reversed(parts):
            spelt = f"{spelt}.{part}" if spelt else part
        return spelt

    found: list[dict[str, str]] = []
    stack: list[tuple[Any, _Where]] = [(value, None)]
    while stack:
        item, where = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                found.append({"field": spelled(where), "message": message})
            continue
        children: list[tuple[Any, _Where]] = []
        if isinstance(item, dict):
            for key, child in item.items():
                if isinstance(key, str) and "\x00" in key:
                    found.append({"field": spelled((where, key)), "message": message})
                children.append((child, (where, key)))
        elif isinstance(item, list):
            children = [(child, (where, index)) for index, child in enumerate(item)]
        stack.extend(reversed(children))
    return found


def may_hold_nul(text: str | bytes) -> bool:
    """Can this JSON text decode to a string (or key) holding U+0000? JSON spells that
    character only as the escape `\\u0000` (hex digits have no case) or raw, and strict
    parsing refuses a raw one inside a string; so without either, `_nul_characters` has
    nothing to find. Bytes in UTF-16 or UTF-32 hold NUL bytes in their ASCII characters,
    which every JSON text has: for them it says yes, and the walk runs."""
    if isinstance(text, bytes):
        return b"\x00" in text or b"\\u0000" in text
    return "\x00" in text or "\\u0000" in text


JSON_TYPES = {list: "an array", str: "a string", int: "a number", float: "a number",
              bool: "a boolean", type(None): "null"}


def not_an_object(data: Any) -> ValidationFailed:
    """The whole document is not an object: say what it is (an array most often: several
    commands go one per line, JSON Lines)."""
    what = JSON_TYPES.get(type(data), type(data).__name__)
    hint = "; send one command per line (JSON Lines)" if isinstance(data, list) else ""
    message = f"a command is a JSON object, not {what}{hint}"
    return ValidationFailed(message, [{"field": "", "message": message}])


def parse_command(data: Any, *, nul_free: bool = False) -> Command:
    """A command from its JSON; ValidationFailed naming every bad field. `nul_free`: parsed
    from a text that cannot hold U+0000 (`may_hold_nul`), so its strings need no walk."""
    if not isinstance(data, dict):
        raise not_an_object(data)
    details: list[dict[str, str]] = []
    envelope: Envelope | None = None
    try:
        envelope = Envelope.model_validate(data)
    except ValidationError as e:
        details += _details(e, "")
    name = data.get("command")
    schema = PAYLOADS.get(name) if isinstance(name, str) else None
    if schema is None and not any(d["field"] == "command" for d in details):
        details.append({
            "field": "command",
            "message": f"unknown command {str(name)[:60]!r}; one of: {', '.join(PAYLOADS)}",
        })
    payload: Model | None = None
    if schema is not None and isinstance(data.get("payload"), dict):
        try:
            payload = schema.model_validate(data["payload"])
        except ValidationError as e:
            details += _details(e, "payload")
    if not nul_free:
        details += [d for d in _nul_characters(data) if d["field"] not in
                    {seen["field"] for seen in details}]
    if details or envelope is None or payload is None:
        fields = ", ".join(d["field"] or "(command)" for d in details[:5])
        raise ValidationFailed(f"invalid command: {fields}", details)
    return Command(
        name=envelope.command,
        command_id=envelope.command_id,
        actor=envelope.actor,
        expected_version=envelope.expected_version,
        payload=payload,
    )
