"""The money pattern published in the service's /openapi.json accepts exactly the strings the
parser accepts (DOMAIN.md, Values), including the spellings Python's `re` gets wrong:
other scripts' digits, fullwidth digits, a trailing newline, signs, exponents, spaces."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter, ValidationError

from ledger import FixedClock
from ledger.commands.types import Money
from tests.support.helpers import NOW
from tests.support.service import in_process

MONEY_FIELDS = ("gmv", "refunds")


def money_patterns(openapi: dict[str, Any]) -> set[str]:
    """The pattern of every money field of every command body in the document."""
    found: set[str] = set()
    for schema in openapi["components"]["schemas"].values():
        for name, field in schema.get("properties", {}).items():
            if name in MONEY_FIELDS:
                found.add(field["pattern"])
    return found


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The money pattern as `ledger serve` publishes it in /openapi.json."""
    url = f"sqlite:///{Path(tmp_path_factory.mktemp('schema')) / 'ledger.db'}"
    with in_process(url, FixedClock(NOW)) as api:
        response = api.client.get("/openapi.json")
    assert response.status_code == 200
    patterns = money_patterns(response.json())
    assert len(patterns) == 1, patterns  # gmv and refunds alike
    return patterns.pop()


def ecma_search(pattern: str) -> re.Pattern[str]:
    """`pattern` as a JSON Schema validator runs it (ECMA-262, unanchored search): `\\d` is
    ASCII only and `$` (no m flag) is the very end of the string, which in Python is `\\Z`."""
    if re.search(r"\(\?<|\\[pP]|\[[^]]*\$", pattern):  # features where the two differ
        raise ValueError(f"translate {pattern!r} by hand")
    return re.compile(re.sub(r"(?<!\\)\$", r"\\Z", pattern), re.ASCII)


PARSER: TypeAdapter[Any] = TypeAdapter(Money)


def parser_accepts(text: str) -> bool:
    try:
        PARSER.validate_python(text)
    except ValidationError:
        return False
    return True


FULLWIDTH = "\uff11\uff12\uff13.\uff15\uff10"  # "123.50" in fullwidth digits
# ASCII, Arabic-Indic, fullwidth, Bengali, Devanagari, Thai, superscript, mathematical bold
DIGITS = "".join(chr(c) for start in (0x30, 0x660, 0xFF10, 0x9E6, 0x966, 0xE50, 0x1D7CE)
                 for c in range(start, start + 10)) + "\u00b2\u00b3\u00b9"
# Separators (the Arabic one too), signs, exponents, white space, NUL
ODD = ".,+-eE _\n\r\t\v\f\x00\u00a0\u2009\u066b"
NASTY = ["", " ", "\n", "100\n", "\n100", "100\r\n", "-0", "+0", "-1", "+1", "1e3", "1E+3",
         "١٢٣", FULLWIDTH, "0x10", "NaN", "Infinity", "1_000", "12,50", ".5", "5.",
         "1.", "1." + "0" * 7, "1" * 18, "1" * 19, "1" * 18 + ".123456", "0" * 19, "\u066b5"]

money_like = st.one_of(
    st.from_regex(r"\A[0-9]{1,18}(\.[0-9]{1,6})?\Z"),  # what is accepted
    st.text(alphabet=DIGITS + ODD, max_size=28),
    st.builds(lambda head, odd, tail: head + odd + tail,
              st.from_regex(r"\A[0-9]{0,19}\Z"), st.sampled_from([*ODD, *DIGITS, ""]),
              st.from_regex(r"\A(\.[0-9]{0,7})?\Z")),
    st.sampled_from(NASTY),
    st.text(max_size=12),
)


@settings(max_examples=1_000, derandomize=True, database=None, deadline=None)
@given(text=money_like)
@example(text="100\n")
@example(text="١٢٣")
@example(text=FULLWIDTH)
@example(text="-0")
def test_the_published_money_pattern_and_the_parser_accept_the_same_strings(
    published: str, text: str
) -> None:
    schema_accepts = ecma_search(published).search(text) is not None
    assert parser_accepts(text) == schema_accepts, (published, text)


def test_the_published_money_pattern_is_anchored_and_ascii_only(published: str) -> None:
    assert published.startswith("^")
    assert published.endswith("$")
    assert "\\d" not in published  # ECMA's \d is ASCII, but a Python tool's is not
