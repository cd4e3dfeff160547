"""Per-plan ECM settings (``profiles/plans/<plan id>.yaml``): presumptive authorization and the
history-extract lookback. The one place these are read."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import yaml

from gateway.paths import PROFILES

DEFAULT_LOOKBACK_MONTHS = 12


class PlanSettingsError(ValueError):
    """A plan settings file that cannot be used."""


def settings_path(plan_id: str | None) -> Path | None:
    """The plan's settings file, None when it has none (or the id is not a file name)."""
    if not plan_id or "/" in plan_id or "\\" in plan_id or plan_id.startswith("."):
        return None
    path = PROFILES / "plans" / f"{plan_id}.yaml"
    return path if path.is_file() else None


@lru_cache(maxsize=64)
def plan_settings(plan_id: str | None) -> dict:
    path = settings_path(plan_id)
    if path is None:
        return {}
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(data, dict):
        raise PlanSettingsError(f"{path.name}: expected a mapping")
    return data


def partner_rules(partner: str | None):
    """The rule catalogue for ``--partner``: its overrides
    (:func:`gateway.rules.partner_catalogue`); a plan with settings and no overrides file has
    none (the default catalogue); an id with neither file is :class:`UnknownPartner`."""
    from gateway.rules import UnknownPartner, default_catalogue, overrides_path, \
        partner_catalogue

    if partner is None or overrides_path(partner) is not None:
        return partner_catalogue(partner)
    if settings_path(partner) is not None:
        return default_catalogue()
    raise UnknownPartner(f"no rule overrides or plan settings for partner {partner!r} "
                         f"(expected profiles/rules/overrides/{partner}.yaml or "
                         f"profiles/plans/{partner}.yaml)")


def presumptive_of(plan_id: str | None):
    from gateway.ecm.rules import Presumptive

    return Presumptive.from_setting(plan_settings(plan_id).get("presumptive_authorization"))


def presumptive_by_payer(partners) -> dict:
    """Payer id → the presumptive arrangement of the plan that payer id names (server)."""
    out = {}
    for partner in partners.partners.values():
        if partner.role != "plan":
            continue
        arrangement = presumptive_of(partner.id)
        if arrangement is not None:
            for payer in partner.payer_ids:
                out[payer] = arrangement
    return out


def lookback_months(plan_id: str | None) -> int:
    setting = plan_settings(plan_id).get("history_extract") or {}
    return int(setting.get("lookback_months", DEFAULT_LOOKBACK_MONTHS))
