"""The file-drop channel: a folder per partner with ``inbox/``, ``outbox/`` and ``archive/``.

``serve`` scans the inboxes; a file is taken only when it is complete — its name does not end
in ``.part``, ``.partial`` or ``.tmp``, does not start with a dot, and its size and modification
time have not changed for ``settle_seconds`` — so a half-copied upload is never read. The file
is stored as a submission (channel ``file-drop``) and queued like an API upload, the original
moves to ``archive/``, and every document routed to the partner is written to its ``outbox/``
once its run has finished.
Names come only from the partner's own folder listing and are reduced to a safe base name, so
nothing is ever written outside the partner's folders.

A partner's folders are hostile ground (issue 12): an inbox entry that is a symbolic link, a
hard link (``st_nlink > 1``: it may name a file the partner does not own) or anything but a
regular file is refused — removed from the inbox, with a ``GATEWAY-DROP-001`` finding written
to the partner's outbox — and a file is read through ``O_NOFOLLOW``. Outbox files are written
through a ``.partial`` created with ``O_CREAT|O_EXCL|O_NOFOLLOW`` (an entry already at that
name, a planted symlink included, is removed, never followed), then renamed over the target
(a rename replaces a link, it does not write through it). Drop folders that are symbolic links
are refused at start-up (:meth:`DropFolders.check`) and skipped by every scan.
"""

from __future__ import annotations

import json
import logging
import os
import re
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path

from gateway.pipeline.partners import Partners
from gateway.pipeline.process import submit
from gateway.pipeline.store import Store

log = logging.getLogger("gateway.filedrop")
INCOMPLETE = (".part", ".partial", ".tmp", ".crdownload")
X12_SUFFIXES = (".x12", ".837", ".edi", ".txt")
_SAFE = re.compile(r"[^A-Za-z0-9._-]")


def safe_name(name: str) -> str:
    """A base name with no path, no leading dots and only plain characters."""
    base = Path(name).name.lstrip(".")
    return _SAFE.sub("_", base)[:120] or "file"


class UnsafeDropFolder(ValueError):
    """A drop folder is a symbolic link (or not a folder): refused at start-up."""


_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


@dataclass
class DropFolders:
    root: Path
    seen: dict[Path, tuple[int, float, float]] = field(default_factory=dict)
    refused: set = field(default_factory=set)

    def folders(self, partner_id: str) -> dict[str, Path]:
        base = self.root / safe_name(partner_id)
        found = {name: base / name for name in ("inbox", "outbox", "archive")}
        for folder in found.values():
            folder.mkdir(parents=True, exist_ok=True)
        _refuse_links(self.root, base, *found.values())
        return found

    def check(self, partners: Partners) -> None:
        """Start-up check: the root and every partner's folders exist (made when missing)
        and none is a symbolic link; :class:`UnsafeDropFolder` names the first that is."""
        self.root.mkdir(parents=True, exist_ok=True)
        for partner in partners.partners.values():
            self.folders(partner.id)

    def complete_files(self, inbox: Path, settle_seconds: float, now: float,
                       refuse=None) -> list[Path]:
        """Files whose size and mtime have been stable for ``settle_seconds``. An entry that
        is not a plain file of its own (symlink, hard link, folder, FIFO, device…) is handed
        to ``refuse(path, what)`` instead."""
        ready = []
        for path in sorted(inbox.iterdir()):
            if path.name.startswith(".") or path.name.lower().endswith(INCOMPLETE):
                continue
            try:
                stat = os.lstat(path)
            except FileNotFoundError:
                continue
            what = _unsafe(stat)
            if what:
                if refuse is not None:
                    refuse(path, what)
                continue
            signature = (stat.st_size, stat.st_mtime)
            first = self.seen.get(path)
            if first is None or first[:2] != signature:
                self.seen[path] = (*signature, now)
                if settle_seconds > 0:
                    continue
            elif now - first[2] < settle_seconds:
                continue
            ready.append(path)
        return ready


def scan_once(drop: DropFolders, store: Store, partners: Partners,
              settle_seconds: float = 2.0, now: float | None = None, queue=None) -> list[str]:
    """Take every complete inbox file of every partner, hand it to ``queue`` (or, without
    one, process it here), and deliver every finished document to the outboxes; returns the
    new submission ids. A crash after storing a file and before archiving it is harmless: the
    file is taken again, found to be a resubmission and archived, and its stored original is
    processed by the queue."""
    now = time.time() if now is None else now
    taken = []
    for partner in partners.partners.values():
        if partner.disabled or partner.operator:  # operators read and replay; they do not
            continue                               # submit
        try:
            folders = drop.folders(partner.id)
        except UnsafeDropFolder as exc:
            log.error("file drop folder refused: %s", exc, extra={"partner": partner.id})
            continue

        def refuse(path: Path, what: str, folders=folders, partner=partner) -> None:
            _refuse_entry(drop, path, what, folders["outbox"], partner.id)

        for path in drop.complete_files(folders["inbox"], settle_seconds, now, refuse):
            try:
                payload = _read_plain(path)
            except _Unsafe as exc:
                refuse(path, str(exc))
                continue
            except FileNotFoundError:
                continue
            name = safe_name(path.name)
            is_x12 = name.lower().endswith(X12_SUFFIXES) or payload.lstrip()[:3] == b"ISA"
            done = submit(store, partners, partner, channel="file-drop",
                          kind="x12" if is_x12 else "file", filename=name, payload=payload,
                          queue=queue)
            archived = folders["archive"] / f"{done.submission_id}-{name}"
            copy = 1
            while archived.exists():  # a resubmission keeps its own bytes beside the original
                copy += 1
                archived = folders["archive"] / f"{done.submission_id}-{copy}-{name}"
            path.replace(archived)
            drop.seen.pop(path, None)
            if not done.duplicate:
                taken.append(done.submission_id)
    for partner in partners.partners.values():  # after all inboxes: routed copies included
        if partner.operator:
            continue
        try:
            outbox = drop.folders(partner.id)["outbox"]
        except UnsafeDropFolder:
            continue
        deliver_outbox(store, partner.id, outbox)
    return taken


class _Unsafe(Exception):
    pass


def _unsafe(info: os.stat_result) -> str:
    """Why an inbox entry is not taken ('' when it is a plain file of its own)."""
    if stat.S_ISLNK(info.st_mode):
        return "a symbolic link"
    if stat.S_ISDIR(info.st_mode):
        return "a folder"
    if not stat.S_ISREG(info.st_mode):
        return "not a regular file"
    if info.st_nlink > 1:
        return "a hard link to another file"
    return ""


def _read_plain(path: Path) -> bytes:
    """The bytes of ``path``, opened without following a link, checked again on the open
    descriptor (the entry may have been swapped since it was listed)."""
    try:
        fd = os.open(path, os.O_RDONLY | _NOFOLLOW | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        if exc.errno in (40, 31) or path.is_symlink():  # ELOOP: a link; EMLINK
            raise _Unsafe("a symbolic link") from None
        raise
    with os.fdopen(fd, "rb") as handle:
        what = _unsafe(os.fstat(handle.fileno()))
        if what:
            raise _Unsafe(what)
        return handle.read()


def _refuse_links(*folders: Path) -> None:
    for folder in folders:
        if folder.is_symlink() or not folder.is_dir():
            raise UnsafeDropFolder(f"drop folder {folder.name!r} is a symbolic link or not a "
                                   "folder; replace it with a real folder")


def _refuse_entry(drop: DropFolders, path: Path, what: str, outbox: Path,
                  partner_id: str) -> None:
    """Remove a refused inbox entry (the link or name only, never what it points to) and tell
    the partner in its outbox; a folder cannot be removed, so it is reported once."""
    from gateway.rules import default_catalogue

    key = (path, what)
    if key in drop.refused:
        return
    name = safe_name(path.name)
    try:
        if what == "a folder":
            drop.refused.add(key)
        else:
            os.unlink(path)
    except OSError:
        drop.refused.add(key)
    finding = default_catalogue().finding("GATEWAY-DROP-001", f"inbox/{name}", None,
                                          name=name, what=what)
    body = json.dumps({"file": name, "findings": [finding.as_dict()]}, indent=2).encode()
    write_exclusive(outbox / f"{name}.refused.json", body)
    log.warning("file drop entry refused: %s", what, extra={"partner": partner_id})


def write_exclusive(target: Path, content: bytes) -> None:
    """Write ``target`` atomically through ``<target>.partial``, created with
    ``O_CREAT|O_EXCL|O_NOFOLLOW``: whatever already sits at the partial's name (a planted
    symlink, a stale partial) is removed first, never followed; then the partial is renamed
    over ``target`` (which replaces a link there, never writes through it)."""
    partial = target.with_name(target.name + ".partial")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW
    try:
        fd = os.open(partial, flags, 0o640)
    except FileExistsError:
        os.unlink(partial)  # the name only: a symlink is removed, its target untouched
        fd = os.open(partial, flags, 0o640)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(content)
        os.replace(partial, target)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


def deliver_outbox(store: Store, partner_id: str, outbox: Path) -> int:
    """Write the partner's undelivered mailbox documents (of finished runs only) into its
    outbox, atomically. Exactly once: the file name comes from the document (its submission id
    and role), so if a crash falls between the rename and ``mark_delivered``, the next scan
    rewrites the same file with the same bytes instead of adding a second one."""
    count = 0
    for item in store.mailbox(partner_id):
        if item.get("delivered_at"):
            continue
        document = store.document(item["id"])
        write_exclusive(outbox / safe_name(document["name"]), document["content"])
        store.mark_delivered(item["id"])
        count += 1
    return count


def watch(drop: DropFolders, store: Store, partners: Partners, stop, interval: float = 2.0,
          queue=None) -> None:
    """Scan until ``stop`` (a threading.Event) is set; errors are logged, never fatal."""
    while not stop.is_set():
        try:
            scan_once(drop, store, partners, queue=queue)
        except Exception as exc:  # noqa: BLE001 - the watcher must survive one bad file
            log.error("file drop scan failed: %s", exc.__class__.__name__)
        stop.wait(interval)
