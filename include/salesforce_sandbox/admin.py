"""A small client for the sandbox's control endpoint (``/__sandbox/``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

DEFAULT_TIMEOUT_SECONDS = 120.0  # a re-seed of a large org takes a while


class AdminError(RuntimeError):
    """The control endpoint refused a request (e.g. an unknown fault switch)."""


class AdminClient:
    def __init__(self, url: str, ca_path: str | Path | None, timeout: float = DEFAULT_TIMEOUT_SECONDS):
        self.base = url.rstrip("/") + "/__sandbox"
        self.timeout = timeout
        self.session = requests.Session()
        # Trust exactly the sandbox's certificate, whatever REQUESTS_CA_BUNDLE says.
        self.session.trust_env = False
        self.session.verify = str(ca_path) if ca_path else True
        # The server closes a keep-alive connection idle for a few seconds; a call sent on it just
        # then finds it closed before any answer ("Remote end closed connection without response")
        # and is sent again on a new one. Every control call may be repeated (set, clear, reset).
        retry = Retry(total=2, connect=2, read=2, status=0, allowed_methods=None, raise_on_status=False)
        self.session.mount("https://", HTTPAdapter(max_retries=retry))
        self.session.mount("http://", HTTPAdapter(max_retries=retry))

    def _call(self, method: str, path: str, payload: dict | None = None) -> Any:
        response = self.session.request(method, self.base + path, json=payload, timeout=self.timeout)
        if response.status_code >= 400:
            raise AdminError(f"{method} {path} answered {response.status_code}: {response.text}")
        return response.json()

    def health(self) -> dict:
        return self._call("GET", "/health")

    def info(self) -> dict:
        """The sandbox's URL and login credentials."""
        return self._call("GET", "/info")

    def stats(self) -> dict:
        """API calls by kind (``calls``), daily usage (``api_usage``) and injected faults."""
        return self._call("GET", "/stats")

    def reset_stats(self) -> dict:
        return self._call("POST", "/stats/reset")

    def faults(self) -> dict:
        return self._call("GET", "/faults")

    def set_faults(self, **settings: Any) -> dict:
        """Change fault switches (see ``salesforce_sandbox.faults.FaultSettings``); others are kept."""
        return self._call("POST", "/faults", settings)

    def clear_faults(self) -> dict:
        return self._call("DELETE", "/faults")

    def reset(self, orders: int = 500, seed: int = 7, with_imported_status: bool = True, **options: Any) -> dict:
        """Replace the org's data with a freshly generated set."""
        payload = {"orders": orders, "seed": seed, "with_imported_status": with_imported_status, **options}
        return self._call("POST", "/reset", payload)

    def close(self) -> None:
        self.session.close()
