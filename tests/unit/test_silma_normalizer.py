"""Compiled normalizer grammars are built once and published atomically; restarts load them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bridge.tts_server.engines.silma.normalizer import (
    DONE,
    cached_build,
    language_of,
)


class Grammar:
    """Stands in for NeMo's grammar classes: load the compiled file if present, else build it."""

    builds = 0

    def __init__(self, folder: Path) -> None:
        compiled = folder / "tiny.far"
        if compiled.is_file():
            self.rules = json.loads(compiled.read_text())
            return
        Grammar.builds += 1
        self.rules = {"$": "dollars"}
        compiled.write_text(json.dumps(self.rules))


@pytest.fixture(autouse=True)
def count_from_zero() -> None:
    Grammar.builds = 0


def test_a_restart_loads_the_cache_instead_of_building(tmp_path: Path) -> None:
    grammar, cached = cached_build(tmp_path, "v1-en", Grammar)
    assert (cached, Grammar.builds, grammar.rules) == (False, 1, {"$": "dollars"})
    again, cached = cached_build(tmp_path, "v1-en", Grammar)  # as a fresh process would
    assert (cached, Grammar.builds, again.rules) == (True, 1, grammar.rules)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v1-en"]  # no scratch left behind


def test_another_version_or_language_gets_its_own_folder(tmp_path: Path) -> None:
    cached_build(tmp_path, "v1-en", Grammar)
    _, cached = cached_build(tmp_path, "v2-en", Grammar)
    assert (cached, Grammar.builds) == (False, 2)


def test_an_interrupted_build_is_never_used(tmp_path: Path) -> None:
    def crash(folder: Path) -> Grammar:
        (folder / "tiny.far").write_text("{half a fi")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        cached_build(tmp_path, "v1-en", crash)
    assert list(tmp_path.iterdir()) == []
    # A folder published without its completion mark (say, a copy cut short) is rebuilt too.
    (tmp_path / "v1-en").mkdir()
    (tmp_path / "v1-en" / "tiny.far").write_text("{half a fi")
    grammar, cached = cached_build(tmp_path, "v1-en", Grammar)
    assert (cached, grammar.rules) == (False, {"$": "dollars"})
    assert (tmp_path / "v1-en" / DONE).is_file()


def test_a_real_compiled_grammar_round_trips_through_the_cache(tmp_path: Path) -> None:
    pynini = pytest.importorskip("pynini", reason="pynini comes with the [silma-text] extra")
    from pynini.lib import rewrite

    def build(folder: Path) -> Any:  # a pynini.Fst
        far = folder / "money.far"
        if far.is_file():
            return pynini.Far(str(far), mode="r")["money"]
        Grammar.builds += 1
        rule = pynini.string_map([("$5", "five dollars"), ("$2", "two dollars")])
        with pynini.Far(str(far), mode="w") as out:
            out["money"] = rule.optimize()
        return rule

    cached_build(tmp_path, "money", build)
    rule, cached = cached_build(tmp_path, "money", build)
    assert (cached, Grammar.builds) == (True, 1)
    assert rewrite.top_rewrite("$5", rule) == "five dollars"


def test_language_follows_the_script() -> None:
    assert (language_of("Hello 42"), language_of("مرحبا 42")) == ("en", "ar")
