"""A NUL character (U+0000) is refused the same whether a command comes as a dict or as
JSON text, however the text spells it. Text without `\\u0000` and without a raw NUL skips
the walk over every string (`parse.may_hold_nul`); these tests hold the two paths equal."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.commands.parse import may_hold_nul
from ledger.commands.results import admit
from tests.support.helpers import World, create_campaign, register

NUL_MESSAGE = "must not contain the NUL character (U+0000)"


def spellings(command: dict[str, Any]) -> dict[str, str | bytes]:
    """The same command as the texts a client may send."""
    return {
        "ascii str": json.dumps(command),
        "utf-8 str": json.dumps(command, ensure_ascii=False),
        "utf-8 bytes": json.dumps(command, ensure_ascii=False).encode(),
        "utf-8 bytes with a BOM": b"\xef\xbb\xbf" + json.dumps(command).encode(),
        "utf-16 bytes": json.dumps(command, ensure_ascii=False).encode("utf-16"),
        "utf-32 bytes": json.dumps(command).encode("utf-32"),
    }


WITH_NUL = {
    "in a payload value": register(main_category="fash\x00ion"),
    "in an unknown payload key": register(**{"not\x00here": 1}),
    "in the actor's id": register(actor={"id": "seller\x00-1", "role": "seller"}),
    "in the command id": {**register(), "command_id": "cmd-\x00"},
    "alone in a list": register(sessions=["\x00"]),
}


@pytest.mark.parametrize("command", WITH_NUL.values(), ids=WITH_NUL.keys())
def test_a_nul_anywhere_is_refused_alike_from_a_dict_and_from_every_spelling_of_its_text(
    command: dict[str, Any]
) -> None:
    from_dict = admit(command)
    assert isinstance(from_dict, dict), from_dict
    assert from_dict["error"]["code"] == "validation_error", from_dict
    for name, text in spellings(command).items():
        assert may_hold_nul(text), name
        assert admit(text) == from_dict, name


def test_an_escaped_backslash_before_u0000_is_no_nul_and_is_accepted() -> None:
    command = register(main_category="fash\\u0000ion")  # a backslash, then "u0000"
    text = json.dumps(command)
    assert "\\\\u0000" in text
    admitted = admit(text)
    assert not isinstance(admitted, dict), admitted
    assert admitted == admit(command)


def test_a_raw_nul_inside_a_string_of_the_text_is_invalid_json() -> None:
    text = json.dumps(register(main_category="fashion")).replace("fashion", "fash\x00ion")
    for sent in (text, text.encode()):
        refused = admit(sent)
        assert isinstance(refused, dict)
        assert refused["error"]["code"] == "invalid_json"


text_values = st.text(alphabet=st.sampled_from(["a", "é", "\x00", "\\", "u", "0", '"', "🎉"]),
                      max_size=6)


@settings(max_examples=300, deadline=None)
@given(category=text_values, key=text_values, actor_id=text_values, note=text_values,
       spelling=st.sampled_from(sorted(spellings({}))))
def test_any_command_gets_from_its_text_what_it_gets_from_its_dict(
    category: str, key: str, actor_id: str, note: str, spelling: str
) -> None:
    command = register(main_category=category, actor={"id": actor_id, "role": "seller"},
                       **{key or "k": note})
    assert admit(spellings(command)[spelling]) == admit(command)


def test_text_commands_with_a_nul_are_refused_in_a_group_and_the_others_run(
    world: World
) -> None:
    world.accept(create_campaign())
    bad = json.dumps(register(main_category="fash\x00ion"))
    good = json.dumps(register())
    assert "\\u0000" in bad
    results = world.ledger.send_group([bad, good])
    assert results[0]["error"]["code"] == "validation_error"
    assert results[0]["error"]["details"] == [
        {"field": "payload.main_category", "message": NUL_MESSAGE}]
    assert results[1]["ok"] is True, results[1]
