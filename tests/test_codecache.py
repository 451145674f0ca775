"""The cache of rewritten code: a second run loads what the first compiled, an edit or other
sites compile anew, and nothing another user could have written, or that was damaged, is loaded."""

from __future__ import annotations

import hashlib
import marshal
import os
import stat
import sys
from pathlib import Path

import pytest
from terminal import command

from forkpoint.instrument.rewrite import Sites, compile_script

FORKPOINT = str(Path(sys.executable).with_name("forkpoint"))


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache" / "forkpoint" / "code"


def _result(code: object) -> object:
    ns: dict[str, object] = {}
    exec(code, ns)  # noqa: S102 - the test's own program
    return ns["x"]


def test_an_entry_is_private_and_loaded_the_second_time(cache: Path) -> None:
    """The second compile reads the entry the first wrote: an entry replaced in between (with a
    valid digest) is what comes back, and the file is not written again."""
    compile_script("x = 6 * 7\n", "/p/prog.py", marked=False)
    (entry,) = cache.iterdir()
    assert stat.S_IMODE(cache.stat().st_mode) == 0o700 and stat.S_IMODE(entry.stat().st_mode) == 0o600
    _plant(cache, "x = 6 * 7\n", "/p/prog.py", "x = 'from the cache'\n")
    written = entry.stat().st_mtime_ns
    assert _result(compile_script("x = 6 * 7\n", "/p/prog.py", marked=False)) == "from the cache"
    assert entry.stat().st_mtime_ns == written


def test_other_source_path_or_sites_compile_anew(cache: Path) -> None:
    compile_script("x = 1\n", "/p/prog.py")
    assert _result(compile_script("x = 2\n", "/p/prog.py")) == 2
    compile_script("x = 2\n", "/p/other.py")
    compile_script("x = 2\n", "/p/prog.py", sites=Sites(lines=frozenset({1})))
    assert len(list(cache.iterdir())) == 4


def _plant(cache: Path, source: str, path: str, planted: str) -> Path:
    """Make the entry for ``source`` hold the code of ``planted``, with a valid digest."""
    compile_script(source, path, marked=False)
    (entry,) = cache.iterdir()
    payload = marshal.dumps(compile(planted, path, "exec"))
    digest = hashlib.blake2b(payload, digest_size=32).digest()
    entry.write_bytes(digest + payload)
    return entry


def test_a_damaged_entry_is_compiled_again(cache: Path) -> None:
    compile_script("x = 'good'\n", "/p/prog.py", marked=False)
    (entry,) = cache.iterdir()
    data = bytearray(entry.read_bytes())
    data[-3] ^= 0xFF
    entry.write_bytes(bytes(data))
    assert _result(compile_script("x = 'good'\n", "/p/prog.py", marked=False)) == "good"


def test_an_entry_others_could_write_is_not_loaded(cache: Path) -> None:
    entry = _plant(cache, "x = 'good'\n", "/p/prog.py", "x = 'planted'\n")
    assert _result(compile_script("x = 'good'\n", "/p/prog.py", marked=False)) == "planted"  # the plant works
    os.chmod(entry, 0o666)
    assert _result(compile_script("x = 'good'\n", "/p/prog.py", marked=False)) == "good"
    _plant(cache, "x = 'good'\n", "/p/prog.py", "x = 'planted'\n")
    os.chmod(cache, 0o777)
    assert _result(compile_script("x = 'good'\n", "/p/prog.py", marked=False)) == "good"


def test_runs_from_the_cache_print_what_python_prints(tmp_path: Path, isolated: str) -> None:
    """Through the whole tool: the second run loads the first run's code; an edit in the same
    second (same size, same mtime) is still seen, since the key is the source itself."""
    script = tmp_path / "prog.py"
    for body in ("def f(n):\n    return n * 2\nprint(f(21))\n",) * 2 + (
        "def f(n):\n    return n * 3\nprint(f(21))\n",
    ):
        script.write_text(body)
        python = command(tmp_path, isolated, sys.executable, str(script))
        forkpoint = command(tmp_path, isolated, FORKPOINT, "run", str(script), "--on-error", "exit")
        assert forkpoint.returncode == 0 and forkpoint.stdout == python.stdout, forkpoint.stderr
    assert len(list((tmp_path / "cache" / "forkpoint" / "code").iterdir())) == 2
