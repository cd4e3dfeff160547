"""Partner onboarding without editing YAML by hand: ``ecm-gateway partners add | rotate-token |
disable | list``.

A token is 32 random bytes (URL-safe), printed once and never stored: the partners file keeps
its SHA-256 (:func:`gateway.pipeline.partners.token_hash`), compared in constant time. Each
change is written atomically (a new file checked by :meth:`Partners.load`, then renamed over
the old one, mode 0600) and audited in the store (actor ``operator``, action
``partner-add``/``partner-rotate-token``/``partner-disable``, the partner id and what changed —
never the token). A running server re-reads the file within seconds (no restart). Comments in
the file are not kept.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import yaml

from gateway.pipeline.partners import ROLES, PartnerConfigError, Partners, token_hash

IDENTIFIERS = ("plan_code", "payer_ids", "npis", "tins", "x12_sender_ids")


class OnboardingError(ValueError):
    """The change cannot be made (named, with the reason)."""


def new_token(partner_id: str) -> str:
    return f"{partner_id}-{secrets.token_urlsafe(32)}"


def _read(path: Path) -> dict:
    if not path.exists():
        return {"partners": [], "routes": []}
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise OnboardingError(f"{path}: cannot read partners ({exc.__class__.__name__})") \
            from None


def _write(path: Path, data: dict) -> None:
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0),
                 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write("# trading partners; tokens are kept as SHA-256 only (ecm-gateway "
                     "partners …)\n" + yaml.safe_dump(data, sort_keys=False))
    try:
        Partners.load(partial)
        os.replace(partial, path)
    except PartnerConfigError as exc:
        raise OnboardingError(str(exc).replace(str(partial), str(path))) from None
    finally:
        partial.unlink(missing_ok=True)


def _find(data: dict, partner_id: str) -> dict:
    for raw in data.get("partners") or []:
        if str(raw.get("id")) == partner_id:
            return raw
    raise OnboardingError(f"no partner {partner_id!r} in the partners file")


def add(path: Path, partner_id: str, name: str, role: str, identifiers: dict,
        envelope: str | None = None) -> str:
    """Add a partner; returns its token (to show once)."""
    if role not in ROLES:
        raise OnboardingError(f"role must be one of {', '.join(ROLES)}")
    if not partner_id or not all(c.isalnum() or c in "-_." for c in partner_id):
        raise OnboardingError("a partner id is letters, digits, '-', '_' or '.'")
    data = _read(path)
    if any(str(p.get("id")) == partner_id for p in data.get("partners") or []):
        raise OnboardingError(f"partner {partner_id!r} exists already (rotate-token changes "
                              "its token)")
    token = new_token(partner_id)
    entry = {"id": partner_id, "name": name or partner_id, "role": role,
             "token_sha256": token_hash(token)}
    if envelope:
        entry["envelope"] = envelope
    ids = {k: v for k, v in identifiers.items() if v}
    if ids:
        entry["identifiers"] = ids
    data.setdefault("partners", []).append(entry)
    _write(path, data)
    return token


def rotate_token(path: Path, partner_id: str) -> str:
    """A new token for the partner (the old one stops working); returns it."""
    data = _read(path)
    entry = _find(data, partner_id)
    token = new_token(partner_id)
    entry["token_sha256"] = token_hash(token)
    entry.pop("disabled", None)
    _write(path, data)
    return token


def disable(path: Path, partner_id: str) -> None:
    """The partner's token stops working (kept in the file, with its routes and history)."""
    data = _read(path)
    entry = _find(data, partner_id)
    entry["disabled"] = True
    entry["token_sha256"] = ""
    _write(path, data)


def listing(path: Path) -> list[dict]:
    try:
        partners = Partners.load(path)
    except PartnerConfigError as exc:
        raise OnboardingError(str(exc)) from None
    return [{"id": p.id, "name": p.name, "role": p.role, "disabled": p.disabled,
             "has_token": bool(p.token_sha256)} for p in partners.partners.values()]
