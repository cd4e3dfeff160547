"""SMART Backend Services for EHRs (SMART App Launch 2.x, "Backend Services"): how a system
gets an access token for the FHIR API, and which interactions a token allows.

* ``GET /fhir/.well-known/smart-configuration`` — the token endpoint, the grant type
  (``client_credentials``), the client authentication (``private_key_jwt`` signed RS384 or
  ES384) and the scopes the server knows;
* ``POST /auth/token`` — ``grant_type=client_credentials``,
  ``client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer``,
  ``client_assertion`` (a JWT the client signed with one of the keys in its partner entry's
  ``smart.jwks``: ``iss`` = ``sub`` = its client id, ``aud`` = this endpoint's URL, ``exp`` at
  most five minutes ahead, a ``jti`` never used before) and ``scope``. The answer is an opaque
  bearer token valid ``access_token_seconds`` (setting, 300) with the granted scopes: those asked for that
  the partner's ``smart.scopes`` cover. Errors are OAuth 2.0 error bodies (RFC 6749 §5.2):
  ``invalid_client`` (401) for a bad assertion, ``invalid_scope``, ``invalid_request``,
  ``unsupported_grant_type`` (400); nothing about the failure is issued.

JWT and JWKS handling is joserfc's; tokens are kept in the store as their SHA-256 (any API
process or worker on the store accepts them) and the ``jti`` of each assertion until it
expires (:meth:`Store.remember_assertion`: a replay is refused across processes).

Scopes (:func:`allows`): ``system/<Type|*>.<read|write|*>`` (SMART v1) or
``system/<Type|*>.<cruds>`` (v2); read/vread/history need ``r``, search ``s``, create ``c``,
update ``u``. A partner's static bearer token (the partner file's ``token_sha256``) keeps
working everywhere with every scope, as before; an access token is good under ``/fhir`` only.
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from joserfc import jws, jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from gateway.pipeline.partners import Partner, token_hash
from gateway.settings import current as settings

TOKEN_PATH = "/auth/token"
ASSERTION_MAX_SECONDS = 300  # SMART: the assertion's exp at most five minutes ahead
ALGORITHMS = ("RS384", "ES384")
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
SCOPE = re.compile(r"^system/(?P<type>[A-Za-z]+|\*)\.(?P<perm>read|write|\*|c?r?u?d?s?)$")
V1 = {"read": "rs", "write": "cud", "*": "cruds"}
INTERACTIONS = {"read": "r", "vread": "r", "history": "r", "search": "s", "create": "c",
                "update": "u", "validate": "c"}


def public_base(request: Request) -> str:
    """The server's public URL (the ``public_url`` setting, e.g. behind a proxy; else as the
    request reached it), without a trailing slash."""
    configured = settings().public_url.rstrip("/")
    return configured or str(request.base_url).rstrip("/")


def permissions(scope: str) -> tuple[str, str] | None:
    """(type or ``*``, permission letters) of a system scope; None for anything else."""
    found = SCOPE.match(scope)
    if found is None or not found["perm"]:
        return None
    return found["type"], V1.get(found["perm"], found["perm"])


def allows(scopes: tuple[str, ...] | None, resource_type: str, interaction: str) -> bool:
    """Whether ``scopes`` (None: a static partner token, everything) allow ``interaction`` on
    ``resource_type``."""
    if scopes is None:
        return True
    letter = INTERACTIONS[interaction]
    for scope in scopes:
        found = permissions(scope)
        if found and found[0] in (resource_type, "*") and letter in found[1]:
            return True
    return False


def needed(resource_type: str, interaction: str) -> str:
    letter = INTERACTIONS[interaction]
    v1 = "read" if letter in "rs" else "write"
    return f"system/{resource_type}.{letter} (or system/{resource_type}.{v1})"


def grant(requested: list[str], allowed: tuple[str, ...]) -> list[str]:
    """The requested scopes the partner's configured ones cover (each permission letter)."""
    granted = []
    for scope in requested:
        found = permissions(scope)
        if found is None:
            continue
        rtype, perms = found
        if all(any((a := permissions(s)) and a[0] in (rtype, "*") and p in a[1]
                   and (a[0] == "*" or rtype != "*") for s in allowed) for p in perms):
            granted.append(scope)
    return granted


@dataclass(frozen=True)
class Client:
    """Who calls the FHIR API: the partner, and the scopes of its access token (None: its static
    bearer token, every scope)."""

    partner: Partner
    scopes: tuple[str, ...] | None = None

    def allows(self, resource_type: str, interaction: str) -> bool:
        return allows(self.scopes, resource_type, interaction)


class OAuthError(Exception):
    def __init__(self, status: int, error: str, description: str) -> None:
        super().__init__(error)
        self.status, self.error, self.description = status, error, description


def _invalid_client(description: str) -> OAuthError:
    return OAuthError(401, "invalid_client", description)


def issue_token(store, partners, form: dict[str, str], token_url: str,
                now: datetime | None = None) -> dict:
    """Check a client-credentials request with a signed assertion and issue an access token
    (see the module's doc); :class:`OAuthError` otherwise."""
    now = now or datetime.now(UTC)
    if form.get("grant_type") != "client_credentials":
        raise OAuthError(400, "unsupported_grant_type", "grant_type must be client_credentials")
    if form.get("client_assertion_type") != ASSERTION_TYPE:
        raise OAuthError(400, "invalid_request", f"client_assertion_type must be "
                                                 f"{ASSERTION_TYPE}")
    assertion = form.get("client_assertion") or ""
    if not form.get("scope", "").strip():
        raise OAuthError(400, "invalid_scope", "scope is required (e.g. system/Task.cru)")
    try:
        unverified = jws.extract_compact(assertion.encode("ascii"))
        header = unverified.headers()
        claims = json.loads(unverified.payload)
    except (JoseError, ValueError, UnicodeError):
        raise _invalid_client("client_assertion is not a signed JWT") from None
    if not isinstance(claims, dict):
        raise _invalid_client("client_assertion is not a signed JWT")
    if header.get("alg") not in ALGORITHMS:
        raise _invalid_client("client_assertion must be signed with RS384 or ES384")
    client_id = claims.get("iss")
    partner = partners.smart_client(client_id) if isinstance(client_id, str) else None
    if partner is None:
        raise _invalid_client("iss is not a registered client id")
    keys = KeySet.import_key_set(json.loads(partner.jwks))
    kid = header.get("kid")
    if not isinstance(kid, str) or kid not in {k.kid for k in keys}:
        raise _invalid_client("kid names no key registered for this client")
    try:
        token = jwt.decode(assertion, keys, algorithms=list(ALGORITHMS))
    except JoseError:
        raise _invalid_client("the signature does not verify with the registered key") \
            from None
    claims = token.claims
    if claims.get("sub") != client_id:
        raise _invalid_client("sub must be the client id (as iss)")
    audience = claims.get("aud")
    audiences = audience if isinstance(audience, list) else [audience]
    if token_url not in audiences:
        raise _invalid_client(f"aud must be the token endpoint {token_url}")
    exp = claims.get("exp")
    if not isinstance(exp, (int, float)) or isinstance(exp, bool):
        raise _invalid_client("exp is required")
    expires = datetime.fromtimestamp(exp, UTC)
    if expires <= now:
        raise _invalid_client("the assertion has expired")
    if expires > now + timedelta(seconds=ASSERTION_MAX_SECONDS + 30):
        raise _invalid_client("exp may be at most five minutes ahead")
    jti = claims.get("jti")
    if not isinstance(jti, str) or not jti or len(jti) > 255:
        raise _invalid_client("jti is required")
    if not store.remember_assertion(client_id, jti, expires, now):
        raise _invalid_client("jti was used before (a replayed assertion)")
    scopes = grant(form["scope"].split(), partner.smart_scopes)
    if not scopes:
        raise OAuthError(400, "invalid_scope", "none of the requested scopes is granted to "
                                               "this client")
    access = secrets.token_urlsafe(32)
    lifetime = settings().access_token_seconds
    store.add_access_token(token_hash(access), partner.id, " ".join(scopes),
                           now + timedelta(seconds=lifetime), now)
    store.audit(actor=partner.id, action="token", target=client_id, detail=" ".join(scopes))
    return {"access_token": access, "token_type": "bearer", "expires_in": lifetime,
            "scope": " ".join(scopes)}


def smart_configuration(base: str) -> dict:
    return {
        "issuer": base,
        "token_endpoint": base + TOKEN_PATH,
        "token_endpoint_auth_methods_supported": ["private_key_jwt"],
        "token_endpoint_auth_signing_alg_values_supported": list(ALGORITHMS),
        "grant_types_supported": ["client_credentials"],
        "scopes_supported": ["system/*.read", "system/*.rs", "system/*.cruds",
                             "system/Task.cru", "system/CarePlan.cru",
                             "system/ServiceRequest.cru", "system/Patient.crs",
                             "system/Coverage.crs"],
        "capabilities": ["client-confidential-asymmetric"],
    }


def fhir_token_partner(store, partners, token: str) -> Client | None:
    """The client an unexpired SMART access token was issued to (None: no such token, or its
    partner is gone or disabled)."""
    found = store.access_token(token_hash(token))
    partner = partners.partners.get(found["partner"]) if found else None
    if partner is None or partner.disabled:
        return None
    return Client(partner, tuple(found["scope"].split()))


def install_smart(app: FastAPI):
    """Add the SMART configuration and token endpoint; return the FHIR API's dependency that
    yields the calling :class:`Client` (401 without a valid static or access token)."""

    @app.get("/fhir/.well-known/smart-configuration", tags=["fhir"])
    def configuration(request: Request) -> JSONResponse:
        return JSONResponse(smart_configuration(public_base(request)))

    @app.post(TOKEN_PATH, tags=["fhir"])
    async def token(request: Request) -> JSONResponse:
        """OAuth 2.0 client credentials with a private_key_jwt assertion (SMART Backend
        Services)."""
        headers = {"Cache-Control": "no-store", "Pragma": "no-cache"}
        try:
            form = {k: v for k, v in (await request.form()).items() if isinstance(v, str)}
        except Exception:  # not a form: the error below says what is expected
            form = {}
        try:
            body = await asyncio.to_thread(issue_token, app.state.store, app.state.partners,
                                           form, public_base(request) + TOKEN_PATH)
        except OAuthError as exc:
            return JSONResponse({"error": exc.error, "error_description": exc.description},
                                status_code=exc.status, headers=headers)
        return JSONResponse(body, headers=headers)

    bearer = HTTPBearer(auto_error=False)

    async def client_of(request: Request,
                        credentials: HTTPAuthorizationCredentials | None = Depends(bearer)
                        ) -> Client:
        client = None
        if credentials is not None:
            partner = app.state.partners.authenticate(credentials.credentials)
            if partner is not None:
                client = Client(partner)
            else:
                client = await asyncio.to_thread(fhir_token_partner, app.state.store,
                                                 app.state.partners, credentials.credentials)
        if client is None:
            raise HTTPException(401, "a valid bearer token is required",
                                headers={"WWW-Authenticate": "Bearer"})
        request.state.partner_id = client.partner.id  # for the access log
        return client

    return client_of
