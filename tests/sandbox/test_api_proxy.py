"""Clients that hard-code login.salesforce.com reach the sandbox through its HTTPS proxy, with no
change to their code and none to the hosts file: only their environment names the proxy and the
certificate to trust."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from cryptography import x509
from simple_salesforce import Salesforce

from salesforce_sandbox.server import SandboxServer


@pytest.fixture
def client_env(sandbox: SandboxServer, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The recipe's environment, in this process (requests reads it on every request)."""
    env = sandbox.client_environment()
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


def test_certificate_names_the_salesforce_login_hosts(sandbox: SandboxServer):
    cert = x509.load_pem_x509_certificate(Path(sandbox.ca_path).read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {"login.salesforce.com", "test.salesforce.com", "localhost"} <= set(names.get_values_for_type(x509.DNSName))


@pytest.mark.parametrize("domain", ["login", "test"])
def test_simple_salesforce_logs_in_at_the_hard_coded_host(sandbox: SandboxServer, client_env, domain: str):
    creds = sandbox.credentials
    before = sandbox.runtime.stats()["calls"]["auth"]
    # A plain client: no session, no URL of the sandbox; SOAP login at https://{domain}.salesforce.com.
    sf = Salesforce(
        username=creds["username"], password=creds["password"], security_token=creds["security_token"], domain=domain
    )
    assert sandbox.runtime.stats()["calls"]["auth"] == before + 1
    assert sf.base_url.startswith(f"{sandbox.url}/services/data/")
    assert sf.query("SELECT COUNT() FROM Order")["totalSize"] > 0


def test_refresh_grant_at_login_salesforce_com_names_that_host_in_the_identity_url(sandbox: SandboxServer, client_env):
    import requests  # a plain session: proxies and trust from the environment

    creds = sandbox.credentials
    answer = requests.post(
        "https://login.salesforce.com/services/oauth2/token",
        data={"grant_type": "refresh_token", "client_id": creds["consumer_key"],
              "client_secret": creds["consumer_secret"], "refresh_token": creds["refresh_token"]},
        timeout=30,
    ).json()
    assert answer["instance_url"] == sandbox.url
    assert answer["id"].startswith("https://login.salesforce.com/id/00D")
    # The identity URL is reached through the proxy too.
    identity = requests.get(answer["id"], headers={"Authorization": f"Bearer {answer['access_token']}"}, timeout=30)
    assert identity.status_code == 200
    assert identity.json()["username"] == creds["username"]


def _proxy_exchange(sandbox: SandboxServer, request: str) -> str:
    host, port = sandbox.proxy_url.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=30) as conn:
        conn.sendall(request.encode())
        data = b""
        while chunk := conn.recv(4096):
            data += chunk
    return data.decode()


def test_proxy_tunnels_only_to_names_of_the_sandbox(sandbox: SandboxServer):
    refused = _proxy_exchange(sandbox, "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n")
    assert refused.startswith("HTTP/1.1 403 ")
    assert "login.salesforce.com" in refused
    # A local name on another port is another service, not the sandbox.
    other_port = _proxy_exchange(sandbox, "CONNECT localhost:5432 HTTP/1.1\r\n\r\n")
    assert other_port.startswith("HTTP/1.1 403 ")
    plain = _proxy_exchange(sandbox, "GET http://login.salesforce.com/ HTTP/1.1\r\nHost: login.salesforce.com\r\n\r\n")
    assert plain.startswith("HTTP/1.1 405 ")


def test_client_without_the_certificate_does_not_trust_the_tunnel(sandbox: SandboxServer, client_env, monkeypatch):
    import requests

    monkeypatch.delenv("REQUESTS_CA_BUNDLE")
    with pytest.raises(requests.exceptions.SSLError):
        requests.get("https://login.salesforce.com/services/data/", timeout=30)
