"""The service's OpenAPI shapes: a command per DOMAIN.md command, and the results.

The endpoints do not let FastAPI validate command bodies: the core parses them
(`Ledger.send`), so a bad command gets DOMAIN.md's `validation_error` body listing every
bad field. These models only describe the bodies in `/openapi.json`.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, create_model
from pydantic.json_schema import models_json_schema

from ledger.commands.schemas import PAYLOADS, Actor

MAX_BATCH = 500


class ErrorDetail(BaseModel):
    """A refusal: a DOMAIN.md error code, one line saying why, and what it concerns."""

    code: str = Field(examples=["session_overlap"])
    message: str
    details: Any = None


class Refused(BaseModel):
    """A refused command (nothing was written), or the service's own error."""

    ok: Literal[False]
    command_id: str | None
    error: ErrorDetail


class Accepted(BaseModel):
    """An accepted command; `replayed` when its command_id was seen before."""

    ok: Literal[True]
    command_id: str
    aggregate_id: str
    version: int
    events: list[str]
    replayed: bool
    position: int | None = Field(
        description="Store position of the command's last event: pass it as ?after= to a "
                    "read to see this write.")


class Health(BaseModel):
    """`/healthz`: the process answers."""

    status: Literal["up"]


class ReadModelLag(BaseModel):
    """How far one read model is behind the store's head."""

    name: str
    position: int = Field(description="The last store position the read model applied.")
    lag: int = Field(description="Events stored after it: the head minus the position.")


class Readiness(BaseModel):
    """`/readyz`: `ready` (200) while every read model is within `max_lag` events of the
    head; else `behind` (503), naming the `lagging` ones."""

    status: Literal["ready", "behind"]
    head: int = Field(description="The store's last position.")
    max_lag: int
    lagging: list[str]
    read_models: list[ReadModelLag]


def _command_model(name: str, payload: type[BaseModel]) -> type[BaseModel]:
    title = "".join(part.title() for part in name.split("_")) + "Command"
    tag: Any = Literal[name]
    model: type[BaseModel] = create_model(
        title,
        command=(tag, ...),
        command_id=(str, Field(max_length=128, examples=["cmd-0001"])),
        actor=(Actor | None, Field(None, description="Ignored: the token's actor is used.")),
        expected_version=(int | None, Field(None, ge=0)),
        payload=(payload, ...),
    )
    return model


COMMAND_MODELS = [_command_model(name, payload) for name, payload in PAYLOADS.items()]


def command_schemas() -> tuple[dict[str, Any], dict[str, Any]]:
    """(the schema of one command body, the component schemas it refers to)."""
    refs, top = models_json_schema([(m, "validation") for m in COMMAND_MODELS],
                                   ref_template="#/components/schemas/{model}")
    one_of = [refs[(m, "validation")] for m in COMMAND_MODELS]
    mapping = {name: ref["$ref"] for name, ref in zip(PAYLOADS, one_of, strict=True)}
    schema = {"oneOf": one_of, "discriminator": {"propertyName": "command", "mapping": mapping}}
    return schema, top.get("$defs", {})


def add_command_bodies(openapi: dict[str, Any], single: str, batch: str) -> dict[str, Any]:
    """Describe the request bodies of the two command endpoints in an OpenAPI document."""
    schema, defs = command_schemas()
    openapi.setdefault("components", {}).setdefault("schemas", {}).update(defs)
    bodies = {single: schema,
              batch: {"type": "array", "items": schema, "maxItems": MAX_BATCH}}
    for path, body in bodies.items():
        openapi["paths"][path]["post"]["requestBody"] = {
            "required": True, "content": {"application/json": {"schema": body}}}
    return openapi
