"""Checkpoints signed by the study that wrote them: an HMAC-SHA256 of each file, keyed by a
secret kept outside the results store, is written beside the checkpoint when it is saved
and checked before a resume reads (and unpickles) any of its files. Tune's own experiment
state (its pickles, and JSON that embeds pickles) is signed the same way by the driver as
Tune writes it (:func:`sign_state`). Whoever can write to the results folder or bucket,
but not to the user's secret, cannot make a resume run code.

The user's secret is ``checkpoint.key`` (0600) under ``$MTLSTUDY_SECRET_DIR``, else
``~/.config/mtlstudy``; each study signs with its own key derived from it. A study's
driver hands its key to the trial processes in :data:`KEY_ENV`, so trials on other
machines of a cluster sign and check with the same key.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

from study.errors import UserError
from study.store._atomic import write_atomically

__all__ = [
    "KEY_ENV",
    "SECRET_DIR_ENV",
    "SIGNATURES_PREFIX",
    "SIGNED_STATE_DIR",
    "CheckpointRefused",
    "secret_dir",
    "sign_checkpoint",
    "sign_state",
    "study_key",
    "verify_checkpoint",
    "verify_state",
]

#: Where the user's secret lives, when not ``~/.config/mtlstudy``.
SECRET_DIR_ENV = "MTLSTUDY_SECRET_DIR"
#: The study's key (hex), as a driver passes it to its trial processes.
KEY_ENV = "MTLSTUDY_CHECKPOINT_KEY"
#: Each writer (each rank of a trial) leaves ``<prefix><rank>.json`` in the checkpoint.
SIGNATURES_PREFIX = "mtlstudy-signatures."
_SECRET_FILE = "checkpoint.key"
_CHUNK = 1 << 20


class CheckpointRefused(UserError):
    """A checkpoint file was not signed by this study, or was changed since: never loaded."""


def secret_dir() -> Path:
    given = os.environ.get(SECRET_DIR_ENV)
    return Path(given) if given else Path.home() / ".config" / "mtlstudy"


def _user_secret() -> bytes:
    """The user's secret, created (readable by its owner only) on first use."""
    folder = secret_dir()
    path = folder / _SECRET_FILE
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        with os.fdopen(fd, "w") as file:
            file.write(secrets.token_hex(32))
    try:
        text = path.read_text().strip()
        secret = bytes.fromhex(text)
    except (OSError, ValueError) as err:
        raise UserError(
            f"checkpoint secret {path} is unreadable or not hex ({type(err).__name__}); "
            f"expected 64 hex digits, or remove it to make a new one"
        ) from None
    if len(secret) < 16:
        raise UserError(f"checkpoint secret {path} is too short; expected 64 hex digits")
    return secret


def study_key(study: str) -> bytes:
    """The key ``study``'s checkpoints are signed with: :data:`KEY_ENV` in a trial process,
    else derived from the user's secret."""
    given = os.environ.get(KEY_ENV)
    if given:
        return bytes.fromhex(given)
    return hmac.new(_user_secret(), f"mtlstudy checkpoint/{study}".encode(), "sha256").digest()


def _digest(key: bytes, root: Path, path: Path) -> str:
    # The name is signed too: a signed file moved to another name is refused.
    mac = hmac.new(key, path.relative_to(root).as_posix().encode() + b"\0", hashlib.sha256)
    with path.open("rb") as file:
        while chunk := file.read(_CHUNK):
            mac.update(chunk)
    return mac.hexdigest()


def _files(root: Path) -> Iterator[Path]:
    """Every file of a checkpoint a resume could read; hidden files (Ray's own metadata)
    and the signatures aside."""
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root).parts
        if path.is_dir() or any(part.startswith(".") for part in relative):
            continue
        if path.name.startswith(SIGNATURES_PREFIX):
            continue
        yield path


def sign_checkpoint(directory: str | os.PathLike[str], key: bytes, writer: int = 0) -> Path:
    """Sign every file of the checkpoint in ``directory`` as ``writer`` (a trial's rank)."""
    root = Path(directory)
    signatures = {p.relative_to(root).as_posix(): _digest(key, root, p) for p in _files(root)}
    path = root / f"{SIGNATURES_PREFIX}{writer}.json"
    path.write_text(json.dumps(signatures, indent=0, sort_keys=True))
    return path


def _signatures(root: Path) -> dict[str, set[str]]:
    known: dict[str, set[str]] = {}
    for path in sorted(root.glob(f"{SIGNATURES_PREFIX}*.json")):
        try:
            entries = json.loads(path.read_text())
        except (OSError, ValueError):
            continue  # an unreadable list signs nothing
        if isinstance(entries, dict):
            for name, digest in entries.items():
                if isinstance(digest, str):
                    known.setdefault(str(name), set()).add(digest)
    return known


def verify_checkpoint(directory: str | os.PathLike[str], key: bytes) -> None:
    """Refuse the checkpoint in ``directory`` unless every file in it carries this study's
    signature of its current content; nothing in it is unpickled before this passes."""
    root = Path(directory)
    known = _signatures(root)
    for path in _files(root):
        name = path.relative_to(root).as_posix()
        if name not in known:
            raise CheckpointRefused(
                f"refusing to resume from {path}: it carries no signature of this study "
                "(not written by it); delete the checkpoint to start that trial afresh"
            )
        if not any(hmac.compare_digest(_digest(key, root, path), d) for d in known[name]):
            raise CheckpointRefused(
                f"refusing to resume from {path}: its signature does not match (changed "
                "since this study saved it, or signed with another key); delete the "
                "checkpoint to start that trial afresh"
            )
    if not known:
        raise CheckpointRefused(
            f"refusing to resume from {root}: the checkpoint carries no signatures of this "
            "study; delete it to start that trial afresh"
        )


#: Inside a folder signed by :func:`sign_state`: the last signed copy of each file and
#: their signatures.
SIGNED_STATE_DIR = ".mtlstudy-signed"
_STATE_SIGNATURES = "signatures.json"


def _state_files(folder: Path) -> list[Path]:
    """The files of ``folder`` itself that a resume reads; hidden ones are Ray's markers,
    leftovers of atomic writes, or the signed copies."""
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))


def _state_signatures(folder: Path) -> dict[str, str]:
    try:
        entries = json.loads((folder / SIGNED_STATE_DIR / _STATE_SIGNATURES).read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(entries, dict):
        return {}
    return {str(k): v for k, v in entries.items() if isinstance(v, str)}


def sign_state(
    folder: str | os.PathLike[str], key: bytes, seen: dict[str, tuple[int, int]] | None = None
) -> None:
    """Sign the files of ``folder`` (not its subfolders), keeping a copy of each as signed.

    Whatever rewrites those files (Tune, between two calls) leaves the last signed copy
    for :func:`verify_state`. ``seen`` (name → mtime, size) skips files unchanged since a
    previous call that was given the same dictionary.
    """
    root = Path(folder)
    if not root.is_dir():
        return
    copies = root / SIGNED_STATE_DIR
    signatures = _state_signatures(root)
    changed = False
    for path in _state_files(root):
        try:
            stat = path.stat()
        except FileNotFoundError:
            continue  # replaced under us: the next call signs the new one
        stamp = (stat.st_mtime_ns, stat.st_size)
        if seen is not None and seen.get(path.name) == stamp and path.name in signatures:
            continue
        copy = copies / path.name
        # The copy is signed, not the live file: a write racing this one cannot make the
        # signature and the kept bytes disagree.
        write_atomically(copy, lambda tmp, source=path: shutil.copyfile(source, tmp))
        signatures[path.name] = _digest(key, copies, copy)
        if seen is not None:
            seen[path.name] = stamp
        changed = True
    if changed:
        text = json.dumps(signatures, indent=0, sort_keys=True)
        write_atomically(copies / _STATE_SIGNATURES, lambda tmp: tmp.write_text(text))


def verify_state(folder: str | os.PathLike[str], key: bytes) -> list[str]:
    """Make ``folder`` hold only what :func:`sign_state` signed, before anything in it is
    read: a file changed after its last signing (a driver killed between a write and the
    signing) is put back to its signed copy; a file that carries no signature, or whose
    copy does not match either, is refused. Returns the names put back."""
    root = Path(folder)
    copies = root / SIGNED_STATE_DIR
    signatures = _state_signatures(root)
    restored = []
    names = {p.name for p in _state_files(root)} | set(signatures)
    for name in sorted(names):
        digest = signatures.get(name)
        live = root / name
        if digest is None:
            raise CheckpointRefused(
                f"refusing to resume from {root}: {name} carries no signature of this study "
                f"(not written by it); delete {root} to run that phase afresh"
            )
        if live.is_file() and hmac.compare_digest(_digest(key, root, live), digest):
            continue
        copy = copies / name
        if not (copy.is_file() and hmac.compare_digest(_digest(key, copies, copy), digest)):
            raise CheckpointRefused(
                f"refusing to resume from {root}: {name} does not match this study's "
                f"signature (changed since, or signed with another key); delete {root} to "
                "run that phase afresh"
            )
        write_atomically(live, lambda tmp, source=copy: shutil.copyfile(source, tmp))
        restored.append(name)
    return restored
