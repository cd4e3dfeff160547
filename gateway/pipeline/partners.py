"""Trading partners and routes, as data (YAML; the format is documented at the top of
``config/demo/partners.yaml``).

A partner has an id, a role (plan, provider, state, or ``operator`` — the plan operations staff
who read every partner's submissions in the console and replay them, and never submit),
identifiers (plan code, payer ids, NPIs,
TINs, X12 sender ids), a bearer token kept only as its SHA-256, and the envelope profile used
for 837P files sent to it. Routes say which kind of document from which sender (a role, the
gateway itself, or anyone) goes to whom: a partner id, the member's plan, the state, the
provider with an NPI/TIN, or back to the sender. ``schedules`` holds the intervals of the
gateway's own jobs (``history_extract``).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass, field
from pathlib import Path

import yaml

TRADING_ROLES = ("plan", "provider", "state")
ROLES = (*TRADING_ROLES, "operator")
ROUTE_SOURCES = (*TRADING_ROLES, "gateway", "*")  # `gateway`: documents the gateway makes itself
ROUTE_TARGETS = ("plan", "state", "provider", "sender")


class PartnerConfigError(ValueError):
    """The partner file is wrong (named, with the reason)."""


def _address(raw, path, partner_id) -> tuple[str, ...]:
    if not raw:
        return ()
    keys = ("line1", "city", "state", "postal_code")
    if not isinstance(raw, dict) or any(not raw.get(k) for k in keys):
        raise PartnerConfigError(f"{path}: partner {partner_id!r}: identifiers.address needs "
                                 f"{', '.join(keys)}")
    return tuple(str(raw[k]) for k in keys)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Partner:
    id: str
    name: str
    role: str
    token_sha256: str = ""
    envelope: str = "plan-default"
    plan_code: str = ""
    payer_ids: tuple[str, ...] = ()
    npis: tuple[str, ...] = ()
    tins: tuple[str, ...] = ()
    x12_sender_ids: tuple[str, ...] = ()
    county_code: str = ""  # a plan's 3-digit county code (its state sender id: plan code + it)
    test_mode: bool = False  # a plan onboarding with the state: its 837Ps go with ISA15 T
    # a different interchange reusing this partner's ISA13/GS06: reject (TA1 025) or process
    duplicate_control_numbers: str = "reject"
    # how the state's responses link to this plan's encounters: strict (ISA13 + GS06 + ST02 +
    # claim id) or claim-id (a claim id alone, when the rest does not match; each link warned)
    state_link: str = "strict"
    # SMART Backend Services (gateway/api/smart.py): the client id the EHR signs its
    # assertions with, its public keys (a JWKS, as JSON text) and the scopes it may be granted
    client_id: str = ""
    jwks: str = ""
    smart_scopes: tuple[str, ...] = ()
    disabled: bool = False  # `ecm-gateway partners disable`: its token no longer opens anything
    # a provider's billing address (line1, city, state, ZIP): the gateway fills it into the 837P
    # of a FHIR CarePlan that names its billing provider by identifier only
    address: tuple[str, ...] = ()


    @property
    def operator(self) -> bool:
        return self.role == "operator"

    def sees(self, owner: str) -> bool:
        """May this partner read (and replay) a submission of partner ``owner``? Its own; an
        operator every partner's. The one place the answer is decided."""
        return self.operator or owner == self.id

    def assigned(self, npi: str | None, tin: str | None) -> bool:
        """Is an assignment naming provider NPI ``npi`` and TIN ``tin`` this partner's? When
        it names one of its NPIs or TINs (the one answer in Python; the registry's query of
        the same is :func:`gateway.pipeline.registries.plans_of_members` with ``provider``)."""
        return (npi or "") in self.npis or bool(tin and tin in self.tins)

    @property
    def sees_partner(self) -> str | None:
        """The partner filter of a listing: its own id, or None (every partner) for an
        operator."""
        return None if self.operator else self.id


DUPLICATE_POLICIES = ("reject", "process")
STATE_LINKS = ("strict", "claim-id")


@dataclass(frozen=True)
class Route:
    kind: str
    source_role: str
    to: str
    formats: tuple[str, ...] = ()  # e.g. (csv, fhir) for history extracts; empty: the default


@dataclass
class Partners:
    partners: dict[str, Partner]
    routes: list[Route] = field(default_factory=list)
    schedules: dict[str, str] = field(default_factory=dict)  # e.g. history_extract: daily

    @classmethod
    def load(cls, path: Path) -> Partners:
        try:
            data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise PartnerConfigError(f"{path}: cannot read partners ({exc})") from exc
        partners = {}
        for raw in data.get("partners", []):
            ids = raw.get("identifiers") or {}
            if raw.get("role") not in ROLES:
                raise PartnerConfigError(f"{path}: partner {raw.get('id')!r}: role must be one "
                                         f"of {', '.join(ROLES)}")
            partner = Partner(
                id=str(raw["id"]), name=str(raw.get("name", raw["id"])), role=raw["role"],
                token_sha256=str(raw.get("token_sha256", "")),
                envelope=str(raw.get("envelope", "plan-default")),
                plan_code=str(ids.get("plan_code", "")),
                payer_ids=tuple(str(x) for x in ids.get("payer_ids", [])),
                npis=tuple(str(x) for x in ids.get("npis", [])),
                tins=tuple(str(x) for x in ids.get("tins", [])),
                x12_sender_ids=tuple(str(x) for x in ids.get("x12_sender_ids", [])),
                county_code=str(ids.get("county_code", "")),
                test_mode=bool(raw.get("test_mode", False)),
                duplicate_control_numbers=str(raw.get("duplicate_control_numbers", "reject")),
                state_link=str(raw.get("state_link", "strict")),
                disabled=bool(raw.get("disabled", False)),
                address=_address(ids.get("address"), path, raw.get("id")),
                **_smart(path, raw))
            if partner.duplicate_control_numbers not in DUPLICATE_POLICIES:
                raise PartnerConfigError(f"{path}: partner {partner.id!r}: "
                                         f"duplicate_control_numbers must be one of "
                                         f"{', '.join(DUPLICATE_POLICIES)}")
            if partner.state_link not in STATE_LINKS:
                raise PartnerConfigError(f"{path}: partner {partner.id!r}: state_link must be "
                                         f"one of {', '.join(STATE_LINKS)}")
            if partner.id in partners:
                raise PartnerConfigError(f"{path}: partner {partner.id!r} defined twice")
            partners[partner.id] = partner
        routes = []
        for raw in data.get("routes", []) or []:
            try:
                route = Route(kind=str(raw["kind"]), source_role=str(raw["from"]),
                              to=str(raw["to"]),
                              formats=tuple(str(f) for f in raw.get("formats") or ()))
            except (KeyError, TypeError) as exc:
                raise PartnerConfigError(f"{path}: a route needs kind, from and to "
                                         f"(got {raw!r})") from exc
            if route.source_role not in ROUTE_SOURCES:
                raise PartnerConfigError(f"{path}: route {route.kind}: from must be one of "
                                         f"{', '.join(ROUTE_SOURCES)}")
            if route.to not in ROUTE_TARGETS and route.to not in partners:
                raise PartnerConfigError(f"{path}: route {route.kind}: to must be a partner id "
                                         f"or one of {', '.join(ROUTE_TARGETS)}")
            routes.append(route)
        schedules = data.get("schedules") or {}
        if not isinstance(schedules, dict):
            raise PartnerConfigError(f"{path}: schedules must be a mapping")
        return cls(partners=partners, routes=routes,
                   schedules={str(k): str(v) for k, v in schedules.items()})

    def smart_client(self, client_id: str) -> Partner | None:
        """The partner registered for SMART Backend Services under ``client_id``."""
        return next((p for p in self.partners.values()
                     if p.client_id and p.jwks and p.client_id == client_id
                     and not p.disabled), None)

    def authenticate(self, token: str) -> Partner | None:
        """The partner whose token this is (constant-time comparison of the hashes)."""
        digest = token_hash(token)
        found = None
        for partner in self.partners.values():  # every hash compared: no early exit
            if partner.token_sha256 and hmac.compare_digest(partner.token_sha256, digest) \
                    and not partner.disabled:
                found = partner
        return found

    def refresh_from(self, other: Partners) -> None:
        """Take ``other``'s content in place (the server re-reads the file after
        ``ecm-gateway partners …``; every holder of this object sees the change)."""
        self.partners, self.routes = other.partners, other.routes
        self.schedules = other.schedules

    def route(self, kind: str, source: Partner | str, payer_id: str = "", *,
              plan_id: str = "", npi: str = "", tin: str = "") -> Partner | None:
        """Who receives a document of ``kind`` sent by ``source`` (a partner, or ``gateway``
        for documents the gateway makes itself); None when no route applies. The first route
        whose kind and ``from`` match and whose ``to`` resolves wins:

        * a partner id — that partner;
        * ``plan`` — the plan named by ``plan_id`` (the member's plan from the registry), else
          the plan whose ``payer_ids`` hold ``payer_id``, else the only plan;
        * ``state`` — the state partner (the one whose payer ids hold ``payer_id``, or the only
          one);
        * ``provider`` — the provider partner with NPI ``npi`` or TIN ``tin``;
        * ``sender`` — the partner that sent the document.
        """
        role = source if isinstance(source, str) else source.role
        for route in self.routes:
            if route.kind != kind or route.source_role not in (role, "*"):
                continue
            found = self._resolve(route.to, source, payer_id, plan_id, npi, tin)
            if found is not None:
                return found
        return None

    def _resolve(self, to: str, source, payer_id: str, plan_id: str, npi: str,
                 tin: str) -> Partner | None:
        if to in self.partners:
            return self.partners[to]
        if to == "sender":
            return source if isinstance(source, Partner) else None
        if to == "provider":
            return self.provider_for(npi, tin)
        if to in ("plan", "state"):
            candidates = [p for p in self.partners.values() if p.role == to]
            if to == "plan" and plan_id:
                named = [p for p in candidates if p.id == plan_id]
                if named:
                    return named[0]
            matching = [p for p in candidates if payer_id and payer_id in p.payer_ids]
            if matching:
                return matching[0]
            if len(candidates) == 1:
                return candidates[0]
        return None

    def provider_for(self, npi: str = "", tin: str = "") -> Partner | None:
        """The provider partner with this NPI (or, failing that, this TIN)."""
        providers = [p for p in self.partners.values() if p.role == "provider"]
        for partner in providers:
            if npi and npi in partner.npis:
                return partner
        for partner in providers:
            if tin and tin in partner.tins:
                return partner
        return None


def _smart(path: Path, raw: dict) -> dict:
    """A partner entry's ``smart`` block: ``client_id`` (default: the partner id), ``jwks``
    (``{"keys": [...]}``, public keys only, each with a ``kid``) and ``scopes``."""
    smart = raw.get("smart")
    if not smart:
        return {}
    from joserfc.errors import JoseError
    from joserfc.jwk import KeySet

    where = f"{path}: partner {raw.get('id')!r}: smart"
    jwks = smart.get("jwks") if isinstance(smart, dict) else None
    if not isinstance(jwks, dict) or not isinstance(jwks.get("keys"), list) or not jwks["keys"]:
        raise PartnerConfigError(f"{where}: jwks must be a JWK Set with keys")
    for key in jwks["keys"]:
        if not isinstance(key, dict) or not key.get("kid"):
            raise PartnerConfigError(f"{where}: every key of jwks needs a kid")
        if any(part in key for part in ("d", "p", "q", "dp", "dq", "qi")):
            raise PartnerConfigError(f"{where}: jwks holds a private key; register the "
                                     "public key only")
    try:
        KeySet.import_key_set(jwks)
    except (JoseError, ValueError, TypeError) as exc:
        raise PartnerConfigError(f"{where}: jwks cannot be read ({exc.__class__.__name__})"
                                 ) from None
    scopes = smart.get("scopes") or []
    if not isinstance(scopes, list) or not all(isinstance(s, str) for s in scopes):
        raise PartnerConfigError(f"{where}: scopes must be a list of system/ scopes")
    return {"client_id": str(smart.get("client_id") or raw["id"]),
            "jwks": json.dumps(jwks, sort_keys=True), "smart_scopes": tuple(scopes)}


def issue_demo_tokens(template: Path, target: Path) -> dict[str, str]:
    """Copy the demo partner file to ``target`` with a fresh random token per partner (kept as
    its hash) and return the tokens in clear, to print once at start-up."""
    data = yaml.safe_load(template.read_text(encoding="utf-8"))
    tokens = {}
    for raw in data.get("partners", []):
        token = f"{raw['id']}-{secrets.token_urlsafe(24)}"
        tokens[raw["id"]] = token
        raw["token_sha256"] = token_hash(token)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text("# generated by `ecm-gateway serve --demo`; tokens are hashed\n"
                      + yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return tokens
