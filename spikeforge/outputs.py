"""Output folders and files that are either complete and consistent or not there at all.

Every command that writes results (``demo``, ``generate``, ``simulate --save``, ``convert``) writes
through :func:`output_folder` or :func:`output_file`:

* the target is checked **before any work**: it must not be a file (for a folder) or a folder (for a
  file), its parent must be creatable and writable, and an existing non-empty folder is only replaced
  if spikeforge wrote it (it holds a :data:`MANIFEST`); a folder of your own files is never touched;
* the run writes into a hidden staging folder beside the target (``.<name>.partial-*``); only when it
  finishes is :data:`MANIFEST` written (every file with its size and SHA-256, the run's status) and the
  staging folder swapped in place of the old output in two renames. An interrupted run leaves the
  previous output as it was (and removes its staging folder), so new golden traces never end up beside
  old observed ones, nor a new trace beside an old ``summary.json``;
* a run whose check failed still writes its outputs (they are what you debug), but the manifest's
  ``status`` says ``"failed"`` and :func:`check_output` reports it.

:func:`check_output` is what readers call (``spikeforge trace diff``/``show``): it refuses a file in a
spikeforge folder that the manifest does not list or whose content changed since.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["MANIFEST", "OutputError", "OutputFolder", "output_folder", "output_file", "check_target",
           "check_output"]

MANIFEST = "manifest.json"
FORMAT = "spikeforge-output"


class OutputError(ValueError):
    """An output path cannot be used (it is a file, not writable, or a folder spikeforge did not write),
    or a file read back is not what its folder's manifest says."""


def _option(option: str | None) -> str:
    return f"{option} " if option else ""


def check_target(path, *, kind: str = "folder", option: str | None = None) -> Path:
    """Resolve ``path`` and check it can receive a ``kind`` ("folder" or "file") output; raise
    :class:`OutputError` naming ``option`` (as the user typed it) otherwise. Creates nothing."""
    target = Path(path).expanduser().resolve()
    if kind == "folder" and target.is_file():
        raise OutputError(f"{_option(option)}{path} is a file; give a folder (it is created if missing)")
    if kind == "file" and target.is_dir():
        raise OutputError(f"{_option(option)}{path} is a folder; give a file name such as {Path(path) / 'out.json'}")
    parent = target.parent
    while not parent.exists():                       # the first existing ancestor must be writable
        parent = parent.parent
    if not parent.is_dir():
        raise OutputError(f"{_option(option)}{path}: {parent} is a file, so nothing can be created under it")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"{_option(option)}{path}: {parent} is not writable; choose another location")
    if kind == "folder" and target.is_dir():
        if not os.access(target.parent, os.W_OK | os.X_OK):
            raise OutputError(f"{_option(option)}{path}: {target.parent} is not writable, so {target.name} cannot "
                              "be replaced; choose another location")
        if any(target.iterdir()) and not (target / MANIFEST).is_file():
            raise OutputError(f"{_option(option)}{path} exists and was not written by spikeforge (no {MANIFEST}); "
                              "choose a new or empty folder: spikeforge replaces its output folders whole")
    if kind == "file" and target.exists() and not os.access(target, os.W_OK):
        raise OutputError(f"{_option(option)}{path} is not writable; choose another file")
    return target


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass
class OutputFolder:
    """A staging folder being written; ``path`` is where to write, ``target`` where it will appear.
    Set ``status`` to ``"failed"`` (and ``reason``) when the run's check fails; ``info`` goes into the
    manifest."""
    path: Path
    target: Path
    status: str = "complete"
    reason: str = ""
    info: dict = field(default_factory=dict)

    def fail(self, reason: str):
        self.status, self.reason = "failed", reason


def _manifest(folder: OutputFolder) -> dict:
    files = {}
    for p in sorted(folder.path.rglob("*")):
        if p.is_file() and p.name != MANIFEST:
            rel = p.relative_to(folder.path).as_posix()
            files[rel] = {"bytes": p.stat().st_size, "sha256": _digest(p)}
    return {"format": FORMAT, "version": 1, "status": folder.status, "reason": folder.reason,
            "written": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "info": folder.info, "files": files}


@contextlib.contextmanager
def output_folder(path, *, option: str | None = None, info: dict | None = None):
    """Context manager: ``with output_folder("out/demo", option="--out") as out:`` write into
    ``out.path``; on normal exit the folder replaces ``path`` with its manifest, on an exception (or
    Ctrl-C) it is removed and ``path`` is left as it was."""
    target = check_target(path, kind="folder", option=option)
    target.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent))
    os.chmod(stage, 0o777 & ~_umask())                  # mkdtemp makes it private; outputs are not
    folder = OutputFolder(stage, target, info=dict(info or {}))
    try:
        yield folder
        (stage / MANIFEST).write_text(json.dumps(_manifest(folder), indent=1) + "\n")
        old = None
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
            os.replace(target, old / target.name)
        os.replace(stage, target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        folder.path = target
    finally:
        if stage.exists():
            shutil.rmtree(stage, ignore_errors=True)


@contextlib.contextmanager
def output_file(path, *, option: str | None = None):
    """Context manager yielding a temporary path beside ``path``; on normal exit it is renamed onto
    ``path`` (atomic), on an exception removed, leaving an older ``path`` untouched."""
    target = check_target(path, kind="file", option=option)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.partial-", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp)
    os.chmod(tmp, 0o666 & ~_umask())
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def check_output(path) -> dict | None:
    """Check a file read back from an output folder against the folder's manifest (the nearest
    :data:`MANIFEST` in its parents). Returns the manifest entry's folder status dict, or ``None`` when
    the file is not inside a spikeforge output folder. Raises :class:`OutputError` if the manifest does
    not list the file or its content changed since the run wrote it."""
    p = Path(path).resolve()
    for folder in p.parents:
        m = folder / MANIFEST
        if m.is_file():
            try:
                manifest = json.loads(m.read_text())
            except ValueError:
                continue                             # somebody else's manifest.json: not our folder
            if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
                continue
            files = manifest.get("files")
            if not isinstance(files, dict):
                raise OutputError(f"{m} lists no files; the folder's outputs cannot be trusted: rerun the command")
            rel = p.relative_to(folder).as_posix()
            entry = files.get(rel)
            if entry is None:
                raise OutputError(f"{path} was not written by the run that wrote {m} (stale or foreign file); "
                                  "rerun the command that makes it")
            if p.stat().st_size != entry["bytes"] or _digest(p) != entry["sha256"]:
                raise OutputError(f"{path} changed after the run that wrote {m} (content differs from the "
                                  "manifest); rerun the command that makes it")
            return {"folder": str(folder), "status": manifest.get("status"), "reason": manifest.get("reason", "")}
    return None
