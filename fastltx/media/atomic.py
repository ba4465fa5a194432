"""Atomic output: write under a hidden temporary name next to the target, rename into place when done.

An interrupted or failed write leaves neither a partial target nor the temporary behind. Unlike
``tempfile.mkstemp`` / ``mkdtemp`` (private: 0600 / 0700), the temporaries are created with the
permissions a plain ``open(path, "w")`` or ``os.mkdir(path)`` gives (0666 / 0777 less the umask), so
the output renamed into place has them too.
"""

import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

_TRIES = 100


def _create_hidden_sibling(path: Path, suffix: str, create: Callable[[str], None]) -> str:
    """``create`` a fresh ``.NAME.RANDOM<suffix>`` beside ``path``; its name."""
    for _ in range(_TRIES):
        tmp = str(path.parent / f".{path.name}.{os.urandom(4).hex()}{suffix}")
        try:
            create(tmp)
            return tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"no unused temporary name beside {path}")


def _new_file(name: str) -> None:
    os.close(os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))  # the umask applies


@contextmanager
def atomic_file(path: str | os.PathLike, suffix: str = "") -> Iterator[str]:
    """Yield the name of a new empty file beside ``path`` to write; on success it replaces ``path``."""
    tmp = _create_hidden_sibling(Path(path), suffix, _new_file)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


@contextmanager
def atomic_folder(folder: str | os.PathLike) -> Iterator[Path]:
    """Yield a new empty folder beside ``folder`` to fill; on success it is renamed to ``folder``,
    which must then be missing or an empty folder (replaced). On failure it is removed with its contents
    and ``folder`` is left as it was."""
    tmp = Path(_create_hidden_sibling(Path(folder), "", lambda name: os.mkdir(name, 0o777)))
    try:
        yield tmp
        os.replace(tmp, folder)  # POSIX: atomically replaces an empty folder, refuses a non-empty one
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
