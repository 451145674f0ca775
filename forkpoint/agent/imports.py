"""The import hook for the user's own modules: those under the script's folder or a ``--watch``
path are compiled by forkpoint (first-call markers, entry and line sites), like pytest
rewrites test modules, so resume can diff and swap their functions too. Installed packages,
the virtual environment and forkpoint itself are never touched, and nothing is written to
``__pycache__``.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import os
import site
import sys
import types
from collections.abc import Callable, Sequence

__all__ = ["install"]

Compile = Callable[[str, str, str], types.CodeType]  # (module name, path, source) -> code


class _Loader(importlib.machinery.SourceFileLoader):
    def __init__(self, fullname: str, path: str, compile_module: Compile) -> None:
        super().__init__(fullname, path)
        self._compile = compile_module

    def get_code(self, fullname: str) -> types.CodeType:
        path = self.get_filename(fullname)
        source = importlib.util.decode_source(self.get_data(path))
        return self._compile(fullname, path, source)


class _Finder(importlib.abc.MetaPathFinder):
    def __init__(self, roots: Sequence[str], compile_module: Compile) -> None:
        self.roots = [os.path.join(os.path.realpath(r), "") for r in roots]
        here = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))
        prefixes = {sys.prefix, sys.base_prefix, sys.exec_prefix, *site.getsitepackages(), here}
        self.excluded = [os.path.join(os.path.realpath(p), "") for p in prefixes]
        self.compile_module = compile_module
        self._places: dict[str, bool] = {}  # a folder on the search path -> watched?

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: types.ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        # Search only the places under the roots: every other import is left to the normal
        # finders untouched, so installed packages cost no second lookup.
        places = [p for p in (sys.path if path is None else path) if self._watched(p)]
        if not places:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, places)
        if spec is None or spec.origin is None or not spec.origin.endswith(".py"):
            return None
        real = os.path.realpath(spec.origin)
        if not _under(real, self.roots) or _under(real, self.excluded):
            return None
        spec.loader = _Loader(fullname, spec.origin, self.compile_module)
        return spec

    def _watched(self, place: str) -> bool:
        """A sys.path entry or package folder whose modules may be the user's. Remembered by
        absolute path: every import asks it of every search path entry, and a realpath of each
        was a tenth of a test module's run."""
        key = place if os.path.isabs(place) else os.path.join(os.getcwd(), place)
        watched = self._places.get(key)
        if watched is None:
            real = os.path.join(os.path.realpath(key), "")
            watched = self._places[key] = _under(real, self.roots) and not _under(real, self.excluded)
        return watched


def _under(path: str, folders: list[str]) -> bool:
    return any(path.startswith(f) for f in folders)


def install(roots: Sequence[str], compile_module: Compile) -> None:
    """Put the hook first on ``sys.meta_path`` for modules under ``roots``."""
    sys.meta_path.insert(0, _Finder(roots, compile_module))
