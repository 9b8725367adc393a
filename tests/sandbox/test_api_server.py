"""The server's lifecycle: its certificate, a database file that outlives it, the cursor store."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest
import requests
from cryptography import x509

from salesforce_sandbox.cursors import ChildCursor, CursorStore
from salesforce_sandbox.errors import SalesforceError
from salesforce_sandbox.server import SandboxServer
from salesforce_sandbox.tls import ensure_certificate


def test_certificate_is_its_own_trust_anchor_for_localhost(tmp_path: Path):
    files = ensure_certificate(tmp_path)
    cert = x509.load_pem_x509_certificate(files.cert_path.read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["localhost", "login.salesforce.com", "test.salesforce.com"]
    assert names.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
    assert (cert.not_valid_after_utc - cert.not_valid_before_utc).days > 3000
    # generated once, then reused
    assert ensure_certificate(tmp_path).cert_path.read_bytes() == files.cert_path.read_bytes()


def test_certificate_is_made_anew_when_it_lacks_a_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    first = ensure_certificate(tmp_path).cert_path.read_bytes()
    monkeypatch.setenv("SANDBOX_CERT_HOSTNAMES", "sandbox")
    files = ensure_certificate(tmp_path)
    assert files.cert_path.read_bytes() != first
    cert = x509.load_pem_x509_certificate(files.cert_path.read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "sandbox" in names.get_values_for_type(x509.DNSName)
    assert ensure_certificate(tmp_path).cert_path.read_bytes() == files.cert_path.read_bytes()


def test_database_file_keeps_its_data_across_restarts(tmp_path: Path):
    db = tmp_path / "org.db"
    with SandboxServer(port=0, db_path=db, orders=50, state_dir=tmp_path / "state") as first:
        assert first.seed_summary is not None
        orders = first.store.count("Order")
        first_cert = first.ca_path.read_bytes()
    with SandboxServer(port=0, db_path=db, orders=80, state_dir=tmp_path / "state") as second:
        assert second.seed_summary is None  # existing data kept
        assert second.store.count("Order") == orders
        assert second.ca_path.read_bytes() == first_cert
        session = requests.Session()
        session.trust_env = False
        assert session.get(f"{second.url}/services/data/", verify=str(second.ca_path)).status_code == 200


def test_cursors_expire_after_idle_time():
    now = [0.0]
    store = CursorStore(idle_timeout=60, clock=lambda: now[0])
    locator = store.open(ChildCursor(records=[{}], page_size=200))
    assert locator.startswith("01g") and len(locator) == 18
    now[0] = 59
    store.get(locator)  # using it keeps it alive
    now[0] = 118
    assert store.get(locator).total == 1
    now[0] = 179
    with pytest.raises(SalesforceError) as failure:
        store.get(locator)
    assert failure.value.error_code == "INVALID_QUERY_LOCATOR"


def test_cursor_count_is_bounded_least_recently_used_first():
    store = CursorStore(max_cursors=2)
    first, second = store.open(ChildCursor([], 200)), store.open(ChildCursor([], 200))
    store.get(first)
    store.open(ChildCursor([], 200))
    assert len(store) == 2
    store.get(first)
    with pytest.raises(SalesforceError):
        store.get(second)
