"""``forkpoint run -m pytest``: a failing test stops the run as an uncaught error stops a script,
and a resume after the fix runs that test again with the new code, then the rest of the session.

pytest catches every test's exception and reports it, so nothing reaches forkpoint's runner on
its own. This plugin (loaded only when the program is pytest and the run stops on errors; with
``--on-error exit`` pytest runs exactly as under python) does three things:

* before each test's setup, a checkpoint with the test function as its entry: a resume there
  runs the fixtures and the test anew, so a fix in either counts. Light, like a site between
  definitions: quick tests share one checkpoint, and a resume runs a few of them again;
* the test modules and conftest files, which pytest compiles itself (assert rewriting), are
  made known to the runner and the controller, so their functions are diffed and swapped
  like those of the user's other modules, recompiled with pytest's rewrite and forkpoint's;
* ``pytest_exception_interact``, where ``--pdb`` enters pdb: the head stops with pytest's own
  report of the failure, in post-mortem, as at an uncaught error.

What it cannot see: which test-module functions earlier tests called (pytest compiled them
without first-call markers), and results pytest cached before the checkpoint (a module- or
session-scoped fixture keeps the value the old code made).
"""

from __future__ import annotations

import importlib.util
import os
import types
from typing import Any

import pytest
from _pytest.assertion.rewrite import rewrite_asserts

from forkpoint.agent import head, pytest_env, runner
from forkpoint.instrument.rewrite import Sites, compile_module

__all__: list[str] = []

pytest_env.plugins_read()  # pytest has read PYTEST_PLUGINS: its own subprocesses never see ours
_known: set[str] = set()  # paths of the modules already made known


def pytest_configure(config: pytest.Config) -> None:
    config.pluginmanager.register(_Plugin(config), "forkpoint")


class _Plugin:
    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self._flavor = f"pytest-{pytest.__version__}-{config.getini('enable_assertion_pass_hook')}"

    def pytest_plugin_registered(self, plugin: object) -> None:
        if isinstance(plugin, types.ModuleType) and plugin.__name__.endswith("conftest"):
            self._make_known(plugin)

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_protocol(self, item: pytest.Item) -> None:
        function = getattr(item, "function", None)
        module = getattr(item, "module", None)
        if not isinstance(function, types.FunctionType) or not isinstance(module, types.ModuleType):
            return  # a doctest or another plugin's item: no function to resume at
        self._make_known(module)
        if module.__name__ == function.__module__:
            runner.checkpoint_before(f"{module.__name__}:{function.__qualname__}")

    def pytest_exception_interact(self, node: Any, call: pytest.CallInfo[Any], report: Any) -> None:
        if call.excinfo is None:
            return
        capture = node.config.pluginmanager.getplugin("capturemanager")
        if capture is not None:  # what the test printed, as --pdb shows it
            capture.suspend_global_capture(in_=True)
            out, err = capture.read_global_capture()
            os.write(1, out.encode(errors="replace"))
            os.write(2, err.encode(errors="replace"))
        start = str(getattr(node, "path", "")) or None
        text = report.longreprtext + "\n"
        for title, content in getattr(report, "sections", []):  # the test's captured output
            text += f"{f' {title} ':-^70}\n{content}"
        head.stop_at_failure(call.excinfo.value, text, start)

    def _make_known(self, module: types.ModuleType) -> None:
        path = getattr(module, "__file__", None)
        if not path or not path.endswith(".py") or path in _known or not _is_users(path):
            return
        _known.add(path)
        try:
            with open(path, "rb") as fp:
                source = importlib.util.decode_source(fp.read())
        except OSError:
            return
        runner.known_module(path, module.__name__, source, self._compile)

    def _compile(self, source: str, path: str, sites: Sites | None = None) -> types.CodeType:
        """A new version of a test module, as pytest compiles it and with forkpoint's sites."""

        def rewrite(tree: Any) -> None:
            rewrite_asserts(tree, source.encode(), path, self.config)

        return compile_module(source, path, sites=sites, also=(self._flavor, rewrite))


def _is_users(path: str) -> bool:
    """Under the folder pytest runs in, as the runner's import hook decides for -m."""
    return os.path.realpath(path).startswith(os.path.join(os.path.realpath(os.getcwd()), ""))
