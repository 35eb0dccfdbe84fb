"""Every numeric option of every command, found by walking the parser: a value the option's own
type refuses (nan, inf, a negative count, a zero batch, words) is one ``error:`` line naming
the option, exit 2, before the command runs. The option list is read from the parser, so a
new option is covered without editing this file."""

from __future__ import annotations

import argparse

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smoacs_flows.cli import build_parser
from tests.chaos._cli import assert_clean, call

pytestmark = pytest.mark.chaos

VALUES = st.one_of(
    st.sampled_from(["nan", "inf", "-inf", "-1", "0", "-0.5", "1e309", "x", "", "1.5", "2"]),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(min_value=-(10**6), max_value=10**6).map(str),
    st.text(max_size=6),
)


def _commands() -> list[tuple[list[str], argparse.ArgumentParser]]:
    """(command words, parser) of every leaf command."""
    out = []

    def walk(words: list[str], parser: argparse.ArgumentParser) -> None:
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs:
            out.append((words, parser))
            return
        for sub in subs:
            for name, child in sub.choices.items():
                walk([*words, name], child)

    walk([], build_parser())
    return out


def _numeric_options() -> list[tuple[list[str], str, object, list[str]]]:
    """(command, option, its type, placeholder positionals) for options with a bounded type."""
    cases = []
    for words, parser in _commands():
        positionals = [
            "x" for a in parser._actions if not a.option_strings and a.nargs not in ("?", "*")
        ]
        for a in parser._actions:
            typ = getattr(a, "type", None)
            if a.option_strings and getattr(typ, "__module__", "") == "smoacs_flows.cli_types":
                cases.append((words, a.option_strings[-1], typ, positionals))
    return cases


CASES_FOUND = _numeric_options()


def test_the_walk_finds_the_options() -> None:
    found = {(" ".join(w), o) for w, o, _, _ in CASES_FOUND}
    for expected in [
        ("screen", "--fmax"),
        ("predict", "--batch-size"),
        ("run", "--timeout"),
        ("query", "--limit"),
        ("train", "--val-frac"),
        ("dft run", "--ecut"),
    ]:
        assert expected in found, expected
    assert len(found) >= 40


@pytest.mark.parametrize(
    ("words", "option", "typ", "positionals"),
    CASES_FOUND,
    ids=[f"{' '.join(w)} {o}" for w, o, _, _ in CASES_FOUND],
)
@settings(
    max_examples=6,
    derandomize=True,
    deadline=None,
)
@given(value=VALUES)
def test_refused_values_are_one_error_line(words, option, typ, positionals, value) -> None:
    try:
        typ(value)
    except argparse.ArgumentTypeError:
        pass
    else:
        return  # a value the option takes: running the command is the other tests' job
    o = call([*words, *positionals, f"{option}={value}"], limit=20)
    assert o.code == 2, o
    assert_clean(o, (option,))
