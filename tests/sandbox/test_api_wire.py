"""What the sandbox puts on the wire: header names as Salesforce writes them, gzip when asked."""

from __future__ import annotations

import socket
import ssl

from salesforce_sandbox.server import SandboxServer


def raw_response_head(sandbox: SandboxServer, path: str, *extra_headers: str) -> list[str]:
    """The status line and header lines exactly as sent, read off a plain TLS socket."""
    context = ssl.create_default_context(cafile=str(sandbox.ca_path))
    with socket.create_connection(("127.0.0.1", sandbox.port)) as plain, \
            context.wrap_socket(plain, server_hostname="localhost") as tls:
        lines = [
            f"GET {path} HTTP/1.1", "Host: localhost",
            f"Authorization: Bearer {sandbox.credentials['session_id']}", "Connection: close", *extra_headers,
        ]
        tls.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = tls.recv(65536)
            if not chunk:
                break
            data += chunk
    return data.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")


def header_names(head: list[str]) -> list[str]:
    return [line.split(":", 1)[0] for line in head[1:]]


def test_rest_answers_carry_salesforce_header_casing(sandbox: SandboxServer):
    names = header_names(raw_response_head(sandbox, "/services/data/v59.0/limits"))
    assert "Sforce-Limit-Info" in names
    assert "Content-Type" in names and "Date" in names
    assert all(name[0].isupper() for name in names), names


def test_bulk_results_headers_as_salesforce_writes_them(sandbox: SandboxServer, completed_query_job):
    job = completed_query_job("SELECT Id FROM Account")
    head = raw_response_head(sandbox, f"/services/data/v59.0/jobs/query/{job['id']}/results?maxRecords=5")
    assert head[0] == "HTTP/1.1 200 OK"
    names = header_names(head)
    assert "Sforce-Locator" in names
    assert "Sforce-NumberOfRecords" in names
    assert "Sforce-Limit-Info" in names
