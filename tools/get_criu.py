"""Give a virtual environment a working CRIU 4.x and pycriu, without touching the system.

    python tools/get_criu.py VENV

A system CRIU 4.x is used as it is (linked as VENV/bin/criu). Otherwise Debian 13's criu, its
libraries (glibc included) and python3-pycriu are fetched with ``apt-get download`` through a
private sources list for the trixie suite and unpacked under VENV/criu/root; VENV/bin/criu runs
that criu through the prefix's own loader (``ld-linux-x86-64.so.2 --library-path ...``), and a
.pth file makes pycriu importable in the venv (it needs protobuf from PyPI). Debian 12's CRIU
3.17 cannot dump on current kernels ("vdso: Unexpected rt vDSO area bounds"), hence 4.x.

Standard library only: it runs before the venv has anything installed.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

SUITE = "trixie"
MIRROR = "http://deb.debian.org/debian"
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
ROOTS = ["criu", "libcompel1"]
EXTRA = ["python3-pycriu"]  # not its dependencies: python3 and protobuf come from the venv
MIN_MAJOR = 4


def say(text: str) -> None:
    print(f"get_criu: {text}", flush=True)


def version(criu: str) -> tuple[int, ...] | None:
    try:
        out = subprocess.run([criu, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    found = re.search(r"Version:\s*(\d+)\.(\d+)", out)
    return tuple(int(x) for x in found.groups()) if found else None


def good(criu: str) -> bool:
    found = version(criu)
    return found is not None and found[0] >= MIN_MAJOR


def apt(prefix: Path) -> list[str]:
    """apt options that keep every list, cache and lock under ``prefix``."""
    return [
        f"-oDir::Etc::SourceList={prefix / 'sources.list'}",
        "-oDir::Etc::SourceParts=/dev/null",
        f"-oDir::State::Lists={prefix / 'lists'}",
        f"-oDir::Cache={prefix / 'cache'}",
        "-oDir::State::status=/dev/null",
        "-oDebug::NoLocking=1",
        "-oAPT::Sandbox::User=root",
    ]


def fetch(venv: Path) -> Path:
    """Download and unpack criu and what it needs; returns the unpacked root."""
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        raise SystemExit("get_criu: no CRIU 4.x here and no apt-get to fetch one; install criu >= 4 yourself")
    prefix = venv / "criu"
    root = prefix / "root"
    for sub in ("lists/partial", "cache/archives/partial", "debs"):
        (prefix / sub).mkdir(parents=True, exist_ok=True)
    signed = f"[signed-by={KEYRING}] " if os.path.exists(KEYRING) else "[trusted=yes] "
    (prefix / "sources.list").write_text(f"deb {signed}{MIRROR} {SUITE} main\n")
    options = apt(prefix)
    say(f"fetching the package lists of Debian {SUITE}")
    subprocess.run(["apt-get", *options, "-qq", "update"], check=True)
    listing = subprocess.run(
        ["apt-cache", *options, "depends", "--recurse", "--no-recommends", "--no-suggests", "--no-conflicts"]
        + ["--no-breaks", "--no-replaces", "--no-enhances", *ROOTS],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    packages = sorted({line for line in listing.splitlines() if line and not line.startswith((" ", "<"))})
    say(f"downloading {len(packages) + len(EXTRA)} packages: {' '.join(packages + EXTRA)}")
    debs = prefix / "debs"
    subprocess.run(["apt-get", *options, "-qq", "download", *packages, *EXTRA], check=True, cwd=debs)
    if root.exists():
        shutil.rmtree(root)
    for deb in sorted(debs.glob("*.deb")):
        subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
    for deb in debs.glob("*.deb"):
        deb.unlink()
    return root


def install(venv: Path) -> None:
    venv = venv.resolve()
    target = venv / "bin" / "criu"
    if good(str(target)):
        say(f"{target} is CRIU {'.'.join(map(str, version(str(target)) or ()))}")
        return
    system = shutil.which("criu", path="/usr/local/sbin:/usr/sbin:/sbin:" + os.environ.get("PATH", ""))
    system_pycriu = Path("/usr/lib/python3/dist-packages/pycriu")
    if system and good(system) and system_pycriu.is_dir():
        target.unlink(missing_ok=True)
        target.symlink_to(system)
        _expose_pycriu(venv, system_pycriu.parent)
        say(f"using the system's {system}")
        return
    root = fetch(venv)
    libs = root / "usr/lib/x86_64-linux-gnu"
    loader = libs / "ld-linux-x86-64.so.2"
    target.unlink(missing_ok=True)
    target.write_text(
        "#!/bin/sh\n"
        "# CRIU from Debian's packages, run with its own glibc (forkpoint's tools/get_criu.py)\n"
        f'exec "{loader}" --library-path "{libs}" "{root / "usr/sbin/criu"}" "$@"\n'
    )
    target.chmod(0o755)
    _expose_pycriu(venv, root / "usr/lib/python3/dist-packages")
    found = version(str(target))
    if found is None or found[0] < MIN_MAJOR:
        raise SystemExit(f"get_criu: the unpacked CRIU does not run ({target} --version)")
    say(f"CRIU {'.'.join(map(str, found))} in {venv / 'criu'}, run by {target}")


def _expose_pycriu(venv: Path, packages: Path) -> None:
    """Make ``pycriu`` (alone, not its neighbours) importable in the venv."""
    shelf = venv / "criu" / "python"
    shelf.mkdir(parents=True, exist_ok=True)
    link = shelf / "pycriu"
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(packages / "pycriu")
    site = next((venv / "lib").glob("python3*/site-packages"))
    (site / "forkpoint-pycriu.pth").write_text(f"{shelf}\n")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: python tools/get_criu.py VENV")
    install(Path(sys.argv[1]))
