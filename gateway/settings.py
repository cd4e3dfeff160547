"""The gateway's settings: ONE object (:class:`Settings`, pydantic-settings) read from the
environment (``ECM_GATEWAY_*``) and, optionally, a YAML settings file, and handed to the modules
that need it — nothing else in ``gateway/`` reads the environment.

Where a value comes from, first wins: the constructor's arguments (the command line's options),
the environment, the settings file (``ECM_GATEWAY_SETTINGS`` or ``serve --settings FILE``), the
defaults below. The file uses the field names without the prefix::

    store: postgresql+psycopg://gateway@db/gateway
    partners: /etc/ecm-gateway/partners.yaml
    lease_seconds: 60

:func:`current` is the process's settings (from the environment and file, read again when an
``ECM_GATEWAY_*`` variable changes; :func:`configure` fixes them, e.g. from the command line's
options). Modules read ``current()`` when they act, or receive it, never at import time (the
data folders of :mod:`gateway.paths` aside, fixed when the package loads).

:class:`Settings` is built on pydantic-settings, which takes longer to import than the command
line takes to validate a small file; so the class is made on first use, and :func:`early`
reads the few settings the fast paths need (``home``, ``var``, ``x12_map_cache``, ``yaml_cache``,
``x12_pure``) from the same
sources in the same order without it.

=========================  ===================================  ===========================
setting (env ``ECM_GATEWAY_``)  meaning                        default
=========================  ===================================  ===========================
``home``                   folder holding profiles/, mappings/   the checkout
``var``                    the embedded store's folder          ``var``
``store``                  store URL                            SQLite under ``var``
``partners``               trading-partner file                 none (``serve`` needs one)
``queue``                  Redis broker URL (scale-out)         none: embedded worker threads
``lease_seconds``          a run's lease                        60
``sweep_seconds``          Celery re-send sweep interval        5
``defer_seconds``          embedded routing defers to FHIR API  5
``split_bytes``            X12 files split across workers above 5 MiB
``split_transactions``     transactions per part                50
``fhir_threads``           threads validating FHIR requests     2
``api_workers``            API processes of ``serve``           1
``workers``                embedded worker threads per process  1
``drop``                   root of the file-drop folders        none
``public_url``             the server's public base URL (SMART  as requests arrive
                           ``aud``, absolute links)
``access_token_seconds``   SMART access token lifetime          300
``overdue_seconds``        overdue-referral check interval      300
``retention_payload_days``   raw payloads kept (then purged)      90
``retention_document_days``  documents kept (acks, routed, …)     90
``retention_finding_days``   findings kept                        365
``purge_schedule``         how often ``serve`` purges           ``daily`` (``never``: off)
``debug``                  tracebacks on the command line       false
``x12_map_cache``          compiled X12 maps cache (``off``)    ``<var>/cache/x12-maps``
``yaml_cache``             parsed YAML data files cache         ``<var>/cache/yaml``
                           (``off``)
``x12_pure``               X12 engine as pure Python, not its   false
                           compiled build (read at import)
``rules_pipeline_bytes``   X12 inputs this large run the ECM    1048576 (1 MiB)
                           rules in a second process, where
                           safe (gateway/ecm/pipelined.py; 0:
                           never)
``test_slow_writes``       TESTS ONLY: sleep per run write      0
=========================  ===================================  ===========================
"""

from __future__ import annotations

import os
import threading
from functools import lru_cache
from pathlib import Path
from typing import Any

ENV_PREFIX = "ECM_GATEWAY_"
SETTINGS_FILE_ENV = "ECM_GATEWAY_SETTINGS"
_CHECKOUT = Path(__file__).resolve().parent.parent


class SettingsError(ValueError):
    """The settings file cannot be used (named, with the reason)."""


def _read_file(path: Path | None, known) -> dict[str, Any]:
    """The settings file's values (YAML, field names without the prefix); absent: nothing."""
    if path is None:
        return {}
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise SettingsError(f"settings file {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise SettingsError(f"settings file {path}: expected a mapping")
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise SettingsError(f"settings file {path}: unknown setting(s) "
                            f"{', '.join(unknown)}")
    return data


def _settings_file() -> Path | None:
    path = os.environ.get(SETTINGS_FILE_ENV) or None
    return Path(path) if path else None


@lru_cache(maxsize=1)
def _settings_class():
    """:class:`Settings`, defined on first use (pydantic-settings is imported then)."""
    from pydantic import Field
    from pydantic_settings import (
        BaseSettings,
        PydanticBaseSettingsSource,
        SettingsConfigDict,
    )

    class _YamlFile(PydanticBaseSettingsSource):
        def __init__(self, settings_cls, path: Path | None) -> None:
            super().__init__(settings_cls)
            self.path = path

        def get_field_value(self, field, field_name):  # pragma: no cover - __call__ is used
            return None, field_name, False

        def __call__(self) -> dict[str, Any]:
            return _read_file(self.path, self.settings_cls.model_fields)

    class Settings(BaseSettings):
        """Every setting of the gateway (see the module docstring for the table)."""

        model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore",
                                          validate_default=True)

        home: Path = Field(default=_CHECKOUT)
        var: Path = Path("var")
        store: str | None = None
        partners: Path | None = None
        queue: str | None = None
        lease_seconds: float = 60.0
        sweep_seconds: float = 5.0
        defer_seconds: float = 5.0
        split_bytes: int = 5 * 1024 * 1024
        split_transactions: int = 50
        fhir_threads: int = 2
        api_workers: int = 1
        workers: int = 1  # embedded worker threads per API process
        drop: Path | None = None  # root of the file-drop folders
        public_url: str = ""
        access_token_seconds: int = 300
        overdue_seconds: float = 300.0
        # retention (gateway.pipeline.retention): days after receipt, per kind of data
        retention_payload_days: int = Field(default=90, ge=1)
        retention_document_days: int = Field(default=90, ge=1)
        retention_finding_days: int = Field(default=365, ge=1)
        purge_schedule: str = "daily"
        debug: bool = False
        x12_map_cache: str | None = None
        yaml_cache: str | None = None
        x12_pure: bool = False
        rules_pipeline_bytes: int = Field(default=1024 * 1024, ge=0)
        test_slow_writes: float = 0.0

        @classmethod
        def settings_customise_sources(cls, settings_cls, init_settings, env_settings,
                                       dotenv_settings, file_secret_settings):
            return (init_settings, env_settings, _YamlFile(settings_cls, _settings_file()))

        # -- derived ---------------------------------------------------------------------------
        @property
        def profiles(self) -> Path:
            return self.home / "profiles"

        @property
        def mappings(self) -> Path:
            return self.home / "mappings"

        def store_url(self) -> str | None:
            return self.store or None

    Settings.__module__ = __name__
    Settings.__qualname__ = "Settings"
    return Settings


def __getattr__(name: str):
    if name == "Settings":
        return _settings_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


_lock = threading.Lock()
_current: Settings | None = None
_configured = False
_snapshot: tuple = ()


def _environment() -> tuple:
    return tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith(ENV_PREFIX)))


def current() -> Settings:
    """The process's settings: those :func:`configure` set, else the environment's and the
    settings file's (read again when an ``ECM_GATEWAY_*`` variable changed)."""
    global _current, _snapshot
    with _lock:
        if _configured and _current is not None:
            return _current
        snapshot = _environment()
        if _current is None or snapshot != _snapshot:
            _current, _snapshot = _settings_class()(), snapshot
        return _current


def configure(settings: Settings | None = None, **overrides) -> Settings:
    """Make ``settings`` (or the environment's, with ``overrides``) the process's settings."""
    global _current, _configured
    with _lock:
        base = settings or _settings_class()()
        _current = base.model_copy(update=overrides) if overrides else base
        _configured = True
        return _current


# the settings :func:`early` reads: name -> (type, default), the same as the fields of Settings
def _flag(raw: str) -> bool:
    """An environment flag as pydantic reads a bool."""
    return raw.strip().lower() in ("1", "true", "yes", "on", "y", "t")


_EARLY = {"home": (Path, _CHECKOUT), "var": (Path, Path("var")), "x12_map_cache": (str, None),
          "yaml_cache": (str, None),
          "x12_pure": (_flag, False), "rules_pipeline_bytes": (int, 1024 * 1024)}


def early(name: str):
    """One of the settings the fast paths need (``home``, ``var``, ``x12_map_cache``), read
    without building :class:`Settings` (without importing pydantic) when it can be: the
    process's settings when they are built or configured, else the environment's
    ``ECM_GATEWAY_<NAME>``, else the default. With a settings file (``ECM_GATEWAY_SETTINGS``),
    :func:`current` reads it all (the file is validated as a whole)."""
    kind, default = _EARLY[name]
    with _lock:
        if _current is not None and (_configured or _environment() == _snapshot):
            return getattr(_current, name)
    if _settings_file() is not None:
        return getattr(current(), name)
    wanted = ENV_PREFIX + name.upper()
    raw = next((v for k, v in os.environ.items() if k.upper() == wanted), None)
    return default if raw is None else kind(raw)


def reset() -> None:
    """Forget the process's settings (read again from the environment on next use)."""
    global _current, _configured
    with _lock:
        _current, _configured = None, False
