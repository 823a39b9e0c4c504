"""Credentials for MLflow servers, scoped to ezpz's own requests.

Two ways to authenticate, both read from the environment:

- ``MLFLOW_TRACKING_TOKEN``: MLflow's own bearer token; MLflow sends it.
- ``AMSC_API_KEY``: an ``X-API-Key`` header (American Science Cloud servers).
  MLflow has no setting for custom headers, so ezpz adds one through MLflow's
  documented plugin hook, a ``RequestHeaderProvider``. The provider only adds
  the header on a thread that is inside :func:`request_scope`, which ezpz's
  MLflow backend enters around its own calls (and its system-metrics thread).
  Nothing in MLflow is replaced or wrapped, and requests that other code in
  the process makes to other servers never carry the key.

Both may also come from ``~/.amsc.env`` and then a ``.env`` in the working
directory (python-dotenv, when installed). A project ``.env`` wins over
``~/.amsc.env``; a variable already set in the environment wins over both.
Values are never logged or written anywhere; use :func:`redact` on any text
(e.g. an exception message) before logging it.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from ezpz._redact import protect_logger, redact_text

logger = protect_logger(logging.getLogger(__name__))

API_KEY_VAR = "AMSC_API_KEY"
API_KEY_HEADER = "X-API-Key"
# Variables whose values must never appear in logs or outputs.
SECRET_VARS = (
    API_KEY_VAR,
    "MLFLOW_TRACKING_TOKEN",
    "MLFLOW_TRACKING_PASSWORD",
    "WANDB_API_KEY",
)

_scope = threading.local()
_dotenv_lock = threading.Lock()
_dotenv_loaded = False


def dotenv_paths() -> list[Path]:
    """Files read for credentials, in load order (later ones win among themselves)."""
    return [Path.home() / ".amsc.env", Path.cwd() / ".env"]


def load_credentials(paths: list[Path] | None = None, *, force: bool = False) -> list[str]:
    """Load dotenv files into ``os.environ`` without overriding set variables.

    Returns the names (never the values) of the variables it set. A no-op
    after the first call (unless ``force``) and when python-dotenv is absent.
    """
    global _dotenv_loaded
    with _dotenv_lock:
        if _dotenv_loaded and not force:
            return []
        _dotenv_loaded = True
        try:
            from dotenv import dotenv_values
        except ImportError:
            logger.debug("python-dotenv not installed: credentials come from the environment")
            return []
        merged: dict[str, str] = {}
        for path in dotenv_paths() if paths is None else paths:
            if path.is_file():
                values = dotenv_values(path)
                merged.update({k: v for k, v in values.items() if v is not None})
                logger.debug("read credentials file %s (%d entries)", path, len(values))
        added = [name for name in merged if name not in os.environ]
        for name in added:
            os.environ[name] = merged[name]
        if added:
            logger.info("loaded from dotenv files: %s", ", ".join(sorted(added)))
        return added


def auth_headers(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """Headers ezpz adds to its MLflow requests (``X-API-Key`` when AMSC_API_KEY is set)."""
    env = os.environ if env is None else env
    key = env.get(API_KEY_VAR, "").strip()
    return {API_KEY_HEADER: key} if key else {}


def redact(text: str, env: Mapping[str, str] | None = None) -> str:
    """``text`` with every secret variable's value and URL credentials replaced by ``***``."""
    env = os.environ if env is None else env
    for name in SECRET_VARS:
        value = env.get(name, "")
        if len(value) >= 4 and value in text:
            text = text.replace(value, "***")
    # URL credentials (MLFLOW_TRACKING_URI=http://user:pass@host) and any
    # other secret-named variable: the shared rule of ezpz._redact.
    return redact_text(text, env)


def scoped_headers() -> dict[str, str]:
    """The headers of the innermost :func:`request_scope` on this thread."""
    return dict(getattr(_scope, "headers", None) or {})


@contextmanager
def request_scope(headers: Mapping[str, str]) -> Iterator[None]:
    """Add ``headers`` to every MLflow request made on this thread inside the block."""
    previous = getattr(_scope, "headers", None)
    _scope.headers = dict(headers)
    try:
        yield
    finally:
        _scope.headers = previous


try:  # The provider subclasses MLflow's base class when MLflow is installed.
    from mlflow.tracking.request_header.abstract_request_header_provider import (
        RequestHeaderProvider as _ProviderBase,
    )
except ImportError:  # pragma: no cover - mlflow absent: the class is never registered
    _ProviderBase = object  # type: ignore[assignment,misc]


class ScopedHeaderProvider(_ProviderBase):
    """MLflow request-header plugin: the headers of the current :func:`request_scope`.

    Registered through the ``mlflow.request_header_provider`` entry point, or
    at run time by :func:`ensure_provider_registered`.
    """

    def in_context(self) -> bool:
        return bool(getattr(_scope, "headers", None))

    def request_headers(self) -> dict[str, str]:
        return scoped_headers()


def ensure_provider_registered() -> None:
    """Make sure MLflow consults :class:`ScopedHeaderProvider` (once per process).

    When ezpz is installed with its entry point MLflow already did; otherwise
    the provider is added to MLflow's header-provider registry, the same way
    MLflow adds entry-point plugins. It only acts inside :func:`request_scope`.
    """
    from mlflow.tracking.request_header import registry

    providers = registry._request_header_provider_registry
    if not any(isinstance(p, ScopedHeaderProvider) for p in providers):
        providers.register(ScopedHeaderProvider)
