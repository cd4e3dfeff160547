"""The file-drop channel: a folder per partner with ``inbox/``, ``outbox/`` and ``archive/``.

``serve`` scans the inboxes; a file is taken only when it is complete — its name does not end
in ``.part``, ``.partial`` or ``.tmp``, does not start with a dot, and its size and modification
time have not changed for ``settle_seconds`` — so a half-copied upload is never read. The file
is stored as a submission (channel ``file-drop``) and queued like an API upload, the original
moves to ``archive/``, and every document routed to the partner is written to its ``outbox/``
once its run has finished.
Names come only from the partner's own folder listing and are reduced to a safe base name, so
nothing is ever written outside the partner's folders.
"""

from __future__ import annotations

import logging
import re
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


@dataclass
class DropFolders:
    root: Path
    seen: dict[Path, tuple[int, float, float]] = field(default_factory=dict)

    def folders(self, partner_id: str) -> dict[str, Path]:
        base = self.root / safe_name(partner_id)
        found = {name: base / name for name in ("inbox", "outbox", "archive")}
        for folder in found.values():
            folder.mkdir(parents=True, exist_ok=True)
        return found

    def complete_files(self, inbox: Path, settle_seconds: float, now: float) -> list[Path]:
        """Files whose size and mtime have been stable for ``settle_seconds``."""
        ready = []
        for path in sorted(inbox.iterdir()):
            if not path.is_file() or path.is_symlink() or path.name.startswith(".") or \
                    path.name.lower().endswith(INCOMPLETE):
                continue
            stat = path.stat()
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
        if partner.operator:  # operators read and replay; they do not submit
            continue
        folders = drop.folders(partner.id)
        for path in drop.complete_files(folders["inbox"], settle_seconds, now):
            payload = path.read_bytes()
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
        deliver_outbox(store, partner.id, drop.folders(partner.id)["outbox"])
    return taken


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
        target = outbox / safe_name(document["name"])
        partial = target.with_name(target.name + ".partial")
        partial.write_bytes(document["content"])
        partial.replace(target)
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
