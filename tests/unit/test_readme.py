"""README's settings table stays true: every setting's environment variable is documented."""

import dataclasses
from pathlib import Path
from typing import get_type_hints

from bridge.settings import Settings

README = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")


def env_names(cls: type = Settings, prefix: str = "BRIDGE_") -> list[str]:
    names = []
    hints = get_type_hints(cls)
    for field in dataclasses.fields(cls):
        kind = hints[field.name]
        name = prefix + field.name.upper()
        if isinstance(kind, type) and dataclasses.is_dataclass(kind):
            names += env_names(kind, name + "_")
        else:
            names.append(name)  # a table's keys are documented under its prefix
    return names


def test_every_setting_is_in_readme():
    missing = [name for name in env_names() if name not in README]
    assert missing == []


def test_quick_start_is_make_run_and_make_test():
    quick_start = README.split("## Quick start", 1)[1].split("##", 1)[0]
    assert "make run" in quick_start and "make test" in quick_start
