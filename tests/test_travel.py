"""A session as one file, and its move to another machine (issue: sessions that travel).

Another machine is simulated by another mount namespace whose session store and runtime dirs
are fresh (empty tmpfs mounts), while the forkpoint that saved the session still runs and
holds the PIDs its processes had. Each test runs under the leak check.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pexpect
import pytest
import xxhash
from conftest import processes_with, wait_until
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from terminal import Terminal, command, env_for

from forkpoint.controller import Controller, SaveScope
from forkpoint.errors import ForkpointError
from forkpoint.persist import archive, needs, store, unpack

pytestmark = [pytest.mark.criu, pytest.mark.pty]
FORKPOINT = str(Path(sys.executable).with_name("forkpoint"))


def _members(file: Path) -> list[tarfile.TarInfo]:
    with tarfile.open(file, "r:*") if not _zstd(file) else _zstd_tar(file) as tar:
        return tar.getmembers()


def _zstd(file: Path) -> bool:
    return file.read_bytes()[:4] == b"\x28\xb5\x2f\xfd"


def _zstd_tar(file: Path) -> tarfile.TarFile:
    import zstandard

    with open(file, "rb") as f:
        data = zstandard.ZstdDecompressor().stream_reader(f, read_across_frames=True).read()
    return tarfile.open(fileobj=io.BytesIO(data), mode="r:")


def _session(tmp_path: Path) -> Path:
    """A shell session of three inputs, saved with its branch and exported."""
    with Controller() as c:
        c.execute("import numpy as np; a = np.arange(3_000_000) % 251; n = 1")
        c.execute("n += 1; b = bytes(range(256)) * 4096")
        c.execute("n += 1")
        saved = c.save("trip")
    assert len(saved.kept) >= 3
    file = tmp_path / "trip.forkpoint"
    done = archive.export("trip", str(file))
    assert done.file == str(file) and done.size == file.stat().st_size
    return file


def test_an_exported_session_is_one_tar_that_imports_and_restores_under_another_name(
    tmp_path: Path, isolated: str
) -> None:
    file = _session(tmp_path)
    assert file.stat().st_mode & 0o777 == 0o600
    members = _members(file)
    assert [m.name for m in members[:2]] == ["manifest.json", "meta.json"]
    assert all(m.isfile() or (m.issym() and m.linkname.startswith("../")) for m in members)
    with _zstd_tar(file) if _zstd(file) else tarfile.open(file) as tar:
        manifest = json.load(tar.extractfile("manifest.json"))  # type: ignore[arg-type]
    assert manifest["session"] == "trip" and manifest["python"] == sys.version.split()[0]
    assert manifest["criu"] and manifest["checkpoints"] >= 3
    interpreter = os.path.realpath(sys.executable)
    assert interpreter in manifest["needs"]["interpreter"], manifest["needs"].keys()
    assert any("numpy" in path for path in manifest["needs"]["mapped"])  # its libraries, with hashes
    assert all(len(digest) == 32 for size, digest in manifest["needs"]["mapped"].values())

    again = Terminal(["export", "trip", str(tmp_path / "again.forkpoint")], env_for(tmp_path, isolated))
    try:
        again.child.expect(pexpect.EOF)
        screen = again.text()
    finally:
        again.close()
    raw = "".join(again.transcript)
    assert "\r\x1b[Kexporting trip: " in raw, raw  # its progress, on a terminal, rewritten in place
    assert 'exported "trip" to ' in screen, screen
    assert (tmp_path / "again.forkpoint").read_bytes() == file.read_bytes()  # the same bytes each time
    said = command(tmp_path, isolated, FORKPOINT, "import", str(file))
    assert said.returncode == 2 and "a session named 'trip' is already in the store" in said.stderr
    done = command(tmp_path, isolated, FORKPOINT, "import", str(file), "copy")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith('imported "copy" (') and "forkpoint restore copy" in done.stdout
    assert (store.sessions_dir() / "copy").stat().st_mode & 0o777 == 0o700
    piped = command(tmp_path, isolated, "sh", "-c", f"{FORKPOINT} export trip - | {FORKPOINT} import - piped")
    assert piped.returncode == 0 and 'imported "piped" (' in piped.stdout, piped.stderr
    assert 'exported "trip" to standard output: ' in piped.stderr, piped.stderr  # not into the pipe
    assert store.load("piped")[0].images == store.load("trip")[0].images
    assert command(tmp_path, isolated, FORKPOINT, "rm", "trip").returncode == 0
    t = Terminal(["restore", "copy"], env_for(tmp_path, isolated), cwd=str(tmp_path))
    try:
        t.wait_prompt()
        assert (
            t.run("n, int(a.sum()), len(b)").strip()
            == f"(3, {sum(i % 251 for i in range(3_000_000))}, 1048576)"
        )
        listed = t.run(":checkpoints")
        row = next(line for line in listed.splitlines() if line.split()[0].lstrip("*") == "1")
        assert "on disk" in row, listed  # its branch came with it
        assert t.run(":rewind 1").strip().startswith("rewound to [1]")
        assert t.run("n").strip() == "1"
        t.finish(":quit")
    finally:
        t.close()


def _tamper(file: Path, out: Path, change) -> Path:  # type: ignore[no-untyped-def]
    """A copy of the archive ``file`` (uncompressed), its members passed through ``change``."""
    with _zstd_tar(file) if _zstd(file) else tarfile.open(file) as tar, tarfile.open(out, "w") as new:
        for member in tar.getmembers():
            data = tar.extractfile(member).read() if member.isfile() else b""  # type: ignore[union-attr]
            for m, d in change(member, data):
                new.addfile(m, io.BytesIO(d) if m.isfile() else None)
    return out


def _with_data(member: tarfile.TarInfo, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    member.size = len(data)
    return member, data


def test_import_refuses_what_is_not_a_whole_session_and_leaves_the_store_as_it_was(
    tmp_path: Path, isolated: str
) -> None:
    file = _session(tmp_path)
    store.remove("trip")

    def flip(m: tarfile.TarInfo, d: bytes):  # type: ignore[no-untyped-def]
        if "/pages-" in m.name and len(d) > 100:
            d = d[:50] + bytes([d[50] ^ 1]) + d[51:]
        yield m, d

    def escape(m: tarfile.TarInfo, d: bytes):  # type: ignore[no-untyped-def]
        yield m, d
        if m.name == "meta.json":
            evil = tarfile.TarInfo("images/../../../../tmp/evil")
            yield _with_data(evil, b"x")

    def link_out(m: tarfile.TarInfo, d: bytes):  # type: ignore[no-untyped-def]
        if m.issym():
            m.linkname = "/etc"
        yield m, d

    def device(m: tarfile.TarInfo, d: bytes):  # type: ignore[no-untyped-def]
        yield m, d
        if m.name == "meta.json":
            dev = tarfile.TarInfo("images/1/core-9.img")
            dev.type, dev.devmajor, dev.devminor = tarfile.CHRTYPE, 1, 3
            yield dev, b""

    def drop(m: tarfile.TarInfo, d: bytes):  # type: ignore[no-untyped-def]
        if not m.name.endswith("/inventory.img"):
            yield m, d

    with _zstd_tar(file) if _zstd(file) else tarfile.open(file) as tar:
        theirs = json.load(tar.extractfile("meta.json"))  # type: ignore[arg-type]
    theirs["uid"] = os.getuid() + 1
    their_meta = json.dumps(theirs).encode()

    def other_user(m: tarfile.TarInfo, d: bytes):  # type: ignore[no-untyped-def]
        """A whole archive of another user's session: its manifest has its meta.json's hash."""
        if m.name == "manifest.json":
            manifest = json.loads(d)
            manifest["meta"] = xxhash.xxh3_128_hexdigest(their_meta)
            m, d = _with_data(m, json.dumps(manifest).encode())
        if m.name == "meta.json":
            m, d = _with_data(m, their_meta)
        yield m, d

    def edited_meta(m: tarfile.TarInfo, d: bytes):  # type: ignore[no-untyped-def]
        if m.name == "meta.json":
            m, d = _with_data(m, d.replace(b'"checkpoints": ', b'"checkpoints":  '))
        yield m, d

    def no_manifest(m: tarfile.TarInfo, d: bytes):  # type: ignore[no-untyped-def]
        if m.name != "manifest.json":
            yield m, d

    cases = {
        "flipped": (flip, r"is damaged: images/\d+/pages-\d+\.img is not what was saved"),
        "escape": (escape, r"it holds 'images/\.\./\.\./\.\./\.\./tmp/evil', a file no session has"),
        "link": (link_out, r"is damaged: images/\d+/parent is a link meta\.json does not list"),
        "device": (device, r"it holds 'images/1/core-9\.img', a special file no session has"),
        "dropped": (drop, r"is cut short: images/\d+/inventory\.img is missing"),
        "uid": (other_user, rf"was saved by uid {os.getuid() + 1}, and its processes run as that user"),
        "meta": (edited_meta, r"is damaged: its meta\.json is not what was saved"),
        "manifest": (no_manifest, r"is not a forkpoint session archive \(it does not begin with manifest"),
    }
    for case, (change, said) in cases.items():
        bad = _tamper(file, tmp_path / f"{case}.tar", change)
        with pytest.raises(ForkpointError, match=said):
            unpack.import_(str(bad), "trip")
        assert store.list_sessions() == [] and not list(store.sessions_dir().iterdir()), case
    assert not os.path.exists("/tmp/evil")
    cut = tmp_path / "cut.forkpoint"
    cut.write_bytes(file.read_bytes()[: file.stat().st_size // 2])
    said = command(tmp_path, isolated, FORKPOINT, "import", str(cut), "trip")
    assert said.returncode == 2 and said.stderr.count("\n") <= 2, said.stderr
    assert "is cut short" in said.stderr or "is damaged" in said.stderr, said.stderr
    assert not list(store.sessions_dir().iterdir())
    (tmp_path / "text").write_text("hello\n")
    said = command(tmp_path, isolated, FORKPOINT, "import", str(tmp_path / "text"))
    assert said.returncode == 2 and "is not a forkpoint session archive" in said.stderr, said.stderr
    with (
        store.one_writer("trip"),
        pytest.raises(ForkpointError, match="is being saved or imported by another"),
    ):
        unpack.import_(str(file))  # one save or import of a name at a time: the second would replace it
    assert unpack.import_(str(file)).name == "trip"  # the untouched file still imports


@pytest.mark.parametrize("compressed", [True, False], ids=["zstd", "plain"])
def test_a_damaged_archive_imports_whole_or_is_refused_in_one_sentence(
    tmp_path: Path, isolated: str, compressed: bool
) -> None:
    """Any byte flipped, any cut: the import gives a session whose every image is what was
    saved, or refuses with a ForkpointError (never another exception) and leaves no session
    and no partial one behind."""
    with Controller() as c:
        c.execute("import numpy as np; a = np.arange(300_000) % 7; n = 1")
        c.execute("n += 1")
        c.save("fuzzed")
    file = tmp_path / "fuzzed.forkpoint"
    archive.export("fuzzed", str(file))
    if compressed != _zstd(file):  # this session's pages compress: the plain case is a tar of it
        with (
            _zstd_tar(file) as tar,
            tarfile.open(tmp_path / "plain.tar", "w", format=tarfile.PAX_FORMAT) as new,
        ):
            for member in tar.getmembers():
                new.addfile(member, tar.extractfile(member) if member.isfile() else None)
        file = tmp_path / "plain.tar"
    store.remove("fuzzed")
    data = file.read_bytes()
    bad = tmp_path / "bad"

    @settings(max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(at=st.integers(0, len(data) - 1), flip=st.integers(1, 255), cut=st.booleans())
    def damaged(at: int, flip: int, cut: bool) -> None:
        bad.write_bytes(data[:at] if cut else data[:at] + bytes([data[at] ^ flip]) + data[at + 1 :])
        try:
            unpack.import_(str(bad), "fuzzed")
        except ForkpointError as exc:
            assert exc.message.startswith(f"{bad} ") and exc.message.endswith("."), exc.message
        else:
            session, folder = store.load("fuzzed")
            store.check_images("fuzzed", folder / "images", session.images)
            store.remove("fuzzed")
        assert not list(store.sessions_dir().iterdir())

    damaged()


def test_restore_names_what_this_machine_lacks_before_criu_runs(tmp_path: Path, isolated: str) -> None:
    """A later CRIU's session, a library of the same size but other content, and a data file
    of another size: each is named in one sentence; put back, the session restores."""
    library = tmp_path / "libmine.so"
    shutil.copy(_libz(), library)
    data = tmp_path / "data.txt"
    data.write_text("0123456789")
    log = tmp_path / "run.log"
    with Controller() as c:
        c.execute(f"import ctypes; lib = ctypes.CDLL({str(library)!r}); f = open({str(data)!r}); f.read(3)")
        c.execute(f"log = open({str(log)!r}, 'a'); log.write('saved\\n'); log.flush()")
        c.save("needy")
    meta_file = store.sessions_dir() / "needy" / "meta.json"
    meta = json.loads(meta_file.read_text())
    meta_file.write_text(json.dumps({**meta, "criu": "99.1"}))  # as if dumped by a later CRIU
    said = command(tmp_path, isolated, FORKPOINT, "restore", "needy")
    assert said.returncode == 2 and said.stderr.startswith(
        "forkpoint: session 'needy' was saved with CRIU 99.1, and this machine has the older "
        f"{meta['criu']}, which is not made to read a later CRIU's images."
    ), said.stderr
    meta_file.write_text(json.dumps(meta))
    original = library.read_bytes()
    library.write_bytes(original[:-1] + bytes([original[-1] ^ 0xFF]))  # same size, other content
    said = command(tmp_path, isolated, FORKPOINT, "restore", "needy")
    assert said.returncode == 2, said
    assert said.stderr.splitlines()[0] == (
        f"forkpoint: session 'needy' cannot be restored on this machine: a library it had mapped, {library}, "
        "has the same size here but other content."
    ), said.stderr
    library.write_bytes(original)
    data.write_text("0123")
    said = command(tmp_path, isolated, FORKPOINT, "restore", "needy")
    assert said.returncode == 2 and (
        f"a file it had open, {data}, is 4 bytes here, and was 10 bytes." in said.stderr
    ), said.stderr
    data.write_text("0123456789")
    with open(log, "a") as more:  # a log it appends to may grow: CRIU does not check its size
        more.write("written since\n")
    out = os.open(tmp_path / "out.txt", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        with Controller(restore="needy", stdio=(out, out, out)) as c:
            assert c.evaluate("f.read()") == (True, "'3456789'")
            c.execute("log.write('restored\\n'); log.flush()")
        assert log.read_text() == "saved\nwritten since\nrestored\n"
    finally:
        os.close(out)


def _libz() -> str:
    import zlib  # noqa: F401 - maps libz, whose path /proc says

    for line in Path("/proc/self/maps").read_text().splitlines():
        if "/libz.so" in line:
            return line.split()[-1]
    pytest.skip("no libz.so mapped")


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None, reason="needs root and unshare")
def test_a_session_moves_to_a_fresh_machine_whose_pids_are_taken(tmp_path: Path, isolated: str) -> None:
    """Saved and exported from a shell that goes on running (its processes keep the PIDs the
    session had); imported and restored in another mount namespace, where the store, the
    runtime dir and /tmp/forkpoint-UID are empty tmpfs mounts that nothing of the first one
    can see."""
    env = env_for(tmp_path, isolated)
    home = Terminal(["shell"], env, cwd=str(tmp_path))
    try:
        home.wait_prompt()
        home.run("import os, numpy as np; rows = [np.full(1000, i) for i in range(200)]; total = 7")
        pid = int(home.run("os.getpid()").strip())
        assert 'as "moving": ' in home.run(":save moving")
        exported = command(tmp_path, isolated, FORKPOINT, "export", "moving", str(tmp_path / "moving.fp"))
        assert exported.returncode == 0 and 'exported "moving" to ' in exported.stdout, exported.stderr

        attach = f"/tmp/forkpoint-{os.getuid()}"
        os.makedirs(attach, mode=0o700, exist_ok=True)
        script = " && ".join(
            [
                *(f"mount -t tmpfs -o mode=0700 none {tmp_path}/{d}" for d in ("data", "run")),
                f"mount -t tmpfs -o mode=0700 none {attach}",
                f'test -z "$(ls -A {tmp_path}/data)"',
                f"{FORKPOINT} sessions",
                f"{FORKPOINT} import {tmp_path}/moving.fp",
                f"exec {FORKPOINT} restore moving",
            ]
        )
        away = Terminal(["-m", "--propagation", "private", "sh", "-c", script], env, str(tmp_path), "unshare")
        try:
            before = away.wait_prompt(timeout=60)
            assert "no saved sessions" in before and 'imported "moving" (' in before, before
            assert 'restored "moving" [' in before
            assert (
                away.run("total, int(sum(r.sum() for r in rows))").strip() == f"(7, {1000 * sum(range(200))})"
            )
            assert int(away.run("os.getpid()").strip()) != pid
            away.finish(":quit")
        finally:
            away.close()
        assert home.run("total").strip() == "7"  # the first one still runs, with its PIDs
        assert os.path.exists(f"/proc/{pid}")
        home.finish(":quit")
    finally:
        home.close()
    assert wait_until(lambda: not processes_with(isolated), timeout=5)
    assert not list((tmp_path / "data").glob("forkpoint/sessions/.*saving*"))


def test_a_large_file_a_session_needs_is_fingerprinted_by_samples(tmp_path: Path) -> None:
    """Over 256 MiB (a dataset held open or mapped), 64 samples of 1 MiB stand for the whole:
    a changed block among them is seen, and nothing is read beyond them."""
    big = tmp_path / "big.bin"
    with open(big, "wb") as f:
        f.truncate(300 << 20)  # sparse: nothing written
    first = needs.fingerprint(big, big.stat().st_size)
    assert first.startswith("sampled:") and len(first) == len("sampled:") + 32
    with open(big, "r+b") as f:
        f.seek((300 << 20) // 64 * 5 + 10)
        f.write(b"x")
    assert needs.fingerprint(big, big.stat().st_size) != first
    small = tmp_path / "small.bin"
    small.write_bytes(b"abc")
    assert needs.fingerprint(small, 3) == store.content_hash(small)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give a folder to another user")
def test_an_attach_folder_another_user_took_is_named(tmp_path: Path, isolated: str) -> None:
    """/tmp/forkpoint-UID is a fixed path (restored processes look there on any machine), so
    another user may have made it first: a restore names it, in one sentence."""
    with Controller() as c:
        c.execute("x = 1")
        c.save("s", scope=SaveScope.ONLY)
    root = Path(f"/tmp/forkpoint-{os.getuid()}")
    root.mkdir(mode=0o700, exist_ok=True)
    os.chown(root, 4321, 4321)
    try:
        said = command(tmp_path, isolated, FORKPOINT, "restore", "s")
        assert said.returncode == 2, said
        assert said.stderr.startswith(f"forkpoint: {root} belongs to another user (uid 4321)"), said.stderr
    finally:
        os.chown(root, os.getuid(), os.getgid())
    out = os.open(tmp_path / "out.txt", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        with Controller(restore="s", stdio=(out, out, out)) as c:
            assert c.evaluate("x") == (True, "1")
    finally:
        os.close(out)


def test_an_export_killed_while_it_writes_leaves_no_part_of_a_file(tmp_path: Path, isolated: str) -> None:
    """SIGKILLed mid-write, an export leaves nothing at its target (the file has no name until
    whole), and a hidden partial file a killed export left where O_TMPFILE is missing, its pid
    gone, is removed by the next export to the same file."""
    with Controller() as c:
        c.execute("import numpy as np; a = np.random.default_rng(0).random(60_000_000)")  # 480 MB
        c.save("big")
    out = tmp_path / "out"
    out.mkdir()
    target = out / "big.forkpoint"
    gone = subprocess.Popen(["true"])
    gone.wait()
    (out / f".big.forkpoint.partial-{gone.pid}").write_bytes(b"the start of an archive")
    (out / ".big.forkpoint.partial-1").write_bytes(b"a live pid's")  # init's: never taken

    export = subprocess.Popen(
        [FORKPOINT, "export", "big", str(target)],
        env=env_for(tmp_path, isolated),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    def writing() -> bool:
        with contextlib.suppress(OSError):
            for fd in Path(f"/proc/{export.pid}/fd").iterdir():
                if os.readlink(fd).startswith(f"{out}/") and fd.stat().st_size > 8 << 20:
                    return True
        return False

    try:
        assert wait_until(writing, timeout=60), "the export never wrote 8 MiB"
    finally:
        export.kill()
        export.wait()
    assert sorted(p.name for p in out.iterdir()) == [".big.forkpoint.partial-1"]
    done = command(tmp_path, isolated, FORKPOINT, "export", "big", str(target))
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in out.iterdir()) == [".big.forkpoint.partial-1", "big.forkpoint"]
    assert command(tmp_path, isolated, FORKPOINT, "import", str(target), "again").returncode == 0
