"""The upstream model classes (silma-tts's DiT/CFM, vocos's backbone and head), and nothing more.

silma-tts 1.0.5 and vocos 0.1.0 import torchaudio, librosa, encodec and huggingface_hub at module
level, yet the classes we use never call them: we compute mel spectrograms ourselves and load
every file from a local path. PyPI's torchaudio is a CUDA build that fails to load beside the
CPU torch, and none of these may download anything here. So while the upstream modules are
imported, those names resolve to inert placeholders (any use raises), and the placeholders are
dropped from `sys.modules` afterwards: a later `import torchaudio` elsewhere gets the real thing.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import threading
import types
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, NoReturn

from bridge.errors import ConfigError

INSTALL_HINT = (
    "pip install -e '.[silma]' && pip install --no-deps silma-tts==1.0.5 vocos==0.1.0"
)
ABSENT = ("torchaudio", "librosa", "encodec", "huggingface_hub")
_lock = threading.Lock()


class _Absent(types.ModuleType):
    """Stands in for a module (or any attribute of it) that the engine must never use."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.__path__: list[str] = []  # a package: `from torchaudio.functional import x` works

    def __getattr__(self, name: str) -> _Absent:
        if name.startswith("__"):
            raise AttributeError(name)
        return _Absent(f"{self.__name__}.{name}")

    def __call__(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise RuntimeError(f"{self.__name__} is not loaded by the SILMA engine (unused on purpose)")


class _AbsentFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def __init__(self, roots: Sequence[str]) -> None:
        self.roots = frozenset(roots)

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: types.ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname.partition(".")[0] not in self.roots:
            return None
        return importlib.util.spec_from_loader(fullname, self, is_package=True)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        return _Absent(spec.name)

    def exec_module(self, module: types.ModuleType) -> None:
        pass


@contextmanager
def _placeholders(roots: Sequence[str]) -> Iterator[None]:
    finder = _AbsentFinder(roots)
    sys.meta_path.insert(0, finder)
    try:
        yield
    finally:
        sys.meta_path.remove(finder)
        for name, module in list(sys.modules.items()):
            if isinstance(module, _Absent):
                del sys.modules[name]


@dataclasses.dataclass(frozen=True)
class Upstream:
    torch: types.ModuleType
    CFM: type[Any]
    DiT: type[Any]
    vocos_backbones: types.ModuleType  # vocos.models: class_path "vocos.models.VocosBackbone"
    vocos_heads: types.ModuleType  # vocos.heads: class_path "vocos.heads.ISTFTHead"
    package_config: str  # silma-tts's own config.yaml (the released model's architecture)


@functools.cache
def load_upstream() -> Upstream:
    """Import the model classes once; ConfigError with the install command when missing."""
    with _lock:
        try:
            torch = importlib.import_module("torch")
        except ImportError as exc:
            raise ConfigError(f"engine 'silma' needs torch: {INSTALL_HINT}") from exc
        try:
            with _placeholders(ABSENT):
                model = importlib.import_module("silma_tts.model")
                vocos_models = importlib.import_module("vocos.models")
                vocos_heads = importlib.import_module("vocos.heads")
        except ImportError as exc:
            hint = f"engine 'silma' needs silma-tts and vocos ({exc}): {INSTALL_HINT}"
            raise ConfigError(hint) from exc
        from importlib.resources import files

        config = files("silma_tts").joinpath("config.yaml").read_text(encoding="utf-8")
    return Upstream(torch, model.CFM, model.DiT, vocos_models, vocos_heads, config)
