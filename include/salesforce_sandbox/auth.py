"""Logins and sessions: OAuth token grants, SOAP login and the bearer tokens they issue.

Supported, as Salesforce answers them (wire spec §1):
- ``POST /services/oauth2/token`` with the ``password``, ``client_credentials`` and JWT bearer grants;
- ``POST /services/Soap/u/{version}`` SOAP ``login`` (username + password + security token, or
  username + password with the org id in a ``LoginScopeHeader``);
- a fixed, configured session id that is valid without any login ("direct" mode).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field
from html import escape
from pathlib import Path

import jwt

from .ids import make_id

ORG_ID = make_id("00D", 1)
IDENTITY_HOST = "https://login.salesforce.com"


@dataclass(frozen=True)
class Credentials:
    """What a client needs to log in. Local development values, printed by the CLI."""

    username: str = "integration@sandbox.example.com"
    password: str = "sandbox-password"  # noqa: S105 - published local sandbox credential
    security_token: str = "SANDBOXTOKEN0001"  # noqa: S105 - published local sandbox credential
    consumer_key: str = "3MVG9sandbox.local.consumer.key"
    consumer_secret: str = "SANDBOX0CONSUMER0SECRET"  # noqa: S105 - published local sandbox credential
    session_id: str = f"{ORG_ID[:15]}!AQsandbox.fixed.session.id"

    def as_dict(self) -> dict[str, str]:
        return {
            "username": self.username,
            "password": self.password,
            "security_token": self.security_token,
            "consumer_key": self.consumer_key,
            "consumer_secret": self.consumer_secret,
            "session_id": self.session_id,
        }


class LoginRejected(Exception):
    """A login attempt failed; ``error``/``description`` are the OAuth error fields."""

    def __init__(self, error: str, description: str):
        super().__init__(description)
        self.error = error
        self.description = description


@dataclass
class SessionRegistry:
    """The bearer tokens the org accepts: the configured session id and every token issued."""

    fixed_session_id: str
    _issued: set[str] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def issue(self) -> str:
        token = f"{ORG_ID[:15]}!AQ{secrets.token_urlsafe(48)}"
        with self._lock:
            self._issued.add(token)
        return token

    def is_valid(self, token: str | None) -> bool:
        if not token:
            return False
        if hmac.compare_digest(token, self.fixed_session_id):
            return True
        with self._lock:
            return token in self._issued

    def revoke(self, token: str) -> None:
        with self._lock:
            self._issued.discard(token)


class Authenticator:
    """Checks login requests against the org's credentials and issues sessions."""

    def __init__(
        self,
        credentials: Credentials,
        user_id: Callable[[], str],
        jwt_public_key_path: Path | None = None,
    ):
        self.credentials = credentials
        self._user_id = user_id  # the org's integration user, whom every session belongs to
        self.sessions = SessionRegistry(credentials.session_id)
        self._jwt_public_key = jwt_public_key_path.read_bytes() if jwt_public_key_path else None

    # -- OAuth 2.0 -------------------------------------------------------------------------

    def oauth_token(self, form: dict[str, str], authorization: str | None, instance_url: str) -> dict:
        """The token endpoint's answer for a form-encoded request; raises LoginRejected."""
        grant = form.get("grant_type", "")
        if grant == "password":
            self._check_client(form.get("client_id"), form.get("client_secret"))
            self._check_user(form.get("username"), form.get("password"), token_optional=True)
            return self._token_answer(instance_url, form.get("client_secret") or "")
        if grant == "client_credentials":
            key, secret = _basic_auth(authorization) or (form.get("client_id"), form.get("client_secret"))
            self._check_client(key, secret)
            return self._token_answer(instance_url, secret or "", scope="api")
        if grant == "urn:ietf:params:oauth:grant-type:jwt-bearer":
            self._check_jwt(form.get("assertion", ""))
            return self._token_answer(instance_url, self.credentials.consumer_secret, scope="api")
        raise LoginRejected("unsupported_grant_type", "grant type not supported")

    def _check_client(self, client_id: str | None, client_secret: str | None) -> None:
        if not _same(client_id, self.credentials.consumer_key):
            raise LoginRejected("invalid_client_id", "client identifier invalid")
        if not _same(client_secret, self.credentials.consumer_secret):
            raise LoginRejected("invalid_client", "invalid client credentials")

    def _check_user(self, username: str | None, password: str | None, *, token_optional: bool) -> None:
        # The security token is appended to the password; a login from a trusted
        # network (OAuth, or SOAP with the org id) may leave it out.
        creds = self.credentials
        accepted = [creds.password + creds.security_token]
        if token_optional:
            accepted.append(creds.password)
        if not _same(username, creds.username) or not any(_same(password, p) for p in accepted):
            raise LoginRejected("invalid_grant", "authentication failure")

    def _check_jwt(self, assertion: str) -> None:
        try:
            if self._jwt_public_key is not None:
                claims = jwt.decode(
                    assertion,
                    self._jwt_public_key,
                    algorithms=["RS256"],
                    options={"verify_aud": False, "require": ["iss", "sub", "exp"]},
                )
            else:
                claims = jwt.decode(assertion, options={"verify_signature": False, "verify_exp": True})
        except jwt.ExpiredSignatureError as exc:
            raise LoginRejected("invalid_grant", "expired authorization code") from exc
        except jwt.InvalidTokenError as exc:
            raise LoginRejected("invalid_grant", "invalid assertion") from exc
        if not _same(str(claims.get("iss", "")), self.credentials.consumer_key):
            raise LoginRejected("invalid_client_id", "client identifier invalid")
        if not _same(str(claims.get("sub", "")), self.credentials.username):
            raise LoginRejected("invalid_grant", "user hasn't approved this consumer")

    def _token_answer(self, instance_url: str, secret: str, scope: str | None = None) -> dict:
        identity = f"{IDENTITY_HOST}/id/{ORG_ID}/{self._user_id()}"
        issued_at = str(int(time.time() * 1000))
        signature = hmac.new(secret.encode(), (identity + issued_at).encode(), hashlib.sha256).digest()
        answer = {
            "access_token": self.sessions.issue(),
            "instance_url": instance_url.rstrip("/"),
            "id": identity,
            "token_type": "Bearer",
            "issued_at": issued_at,
            "signature": base64.b64encode(signature).decode(),
        }
        if scope:
            answer["scope"] = scope
        return answer

    # -- SOAP ------------------------------------------------------------------------------

    def soap_login(self, body: bytes, instance_url: str, version: str) -> str:
        """The SOAP ``loginResponse`` envelope; raises LoginRejected on bad credentials."""
        username, password, organization_id = _parse_soap_login(body)
        self._check_user(username, password, token_optional=_same(organization_id, ORG_ID[:15])
                         or _same(organization_id, ORG_ID))
        base = instance_url.rstrip("/")
        return SOAP_LOGIN_RESPONSE.format(
            metadata_url=escape(f"{base}/services/Soap/m/{version}/{ORG_ID[:15]}"),
            server_url=escape(f"{base}/services/Soap/u/{version}/{ORG_ID[:15]}"),
            session_id=escape(self.sessions.issue()),
            user_id=self._user_id(),
            org_id=ORG_ID,
            username=escape(self.credentials.username),
        )


def soap_fault(code: str, message: str) -> str:
    """A SOAP login fault envelope (answered with HTTP 500)."""
    return SOAP_FAULT.format(code=escape(code), message=escape(message))


def _parse_soap_login(body: bytes) -> tuple[str | None, str | None, str | None]:
    # Entity declarations are never part of a login request; refusing them keeps the
    # standard-library parser clear of entity-expansion tricks.
    if b"<!DOCTYPE" in body or b"<!ENTITY" in body:
        raise LoginRejected("INVALID_LOGIN", "Invalid request")
    try:
        root = ET.fromstring(body)
    except ET.ParseError as exc:
        raise LoginRejected("INVALID_LOGIN", "Invalid request: malformed XML") from exc
    values: dict[str, str] = {}
    for element in root.iter():
        local = element.tag.rsplit("}", 1)[-1]
        if local in ("username", "password", "organizationId"):
            values[local] = element.text or ""
    return values.get("username"), values.get("password"), values.get("organizationId")


def _basic_auth(header: str | None) -> tuple[str, str] | None:
    if not header or not header.lower().startswith("basic "):
        return None
    try:
        decoded = base64.b64decode(header[6:].strip()).decode()
    except (ValueError, UnicodeDecodeError):
        return None
    key, _, secret = decoded.partition(":")
    return key, secret


def _same(given: str | None, expected: str) -> bool:
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


SOAP_LOGIN_RESPONSE = """<?xml version="1.0" encoding="UTF-8"?>
<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" \
xmlns="urn:partner.soap.sforce.com" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
<soapenv:Body><loginResponse><result>
<metadataServerUrl>{metadata_url}</metadataServerUrl>
<passwordExpired>false</passwordExpired>
<sandbox>true</sandbox>
<serverUrl>{server_url}</serverUrl>
<sessionId>{session_id}</sessionId>
<userId>{user_id}</userId>
<userInfo><organizationId>{org_id}</organizationId><userName>{username}</userName></userInfo>
</result></loginResponse></soapenv:Body></soapenv:Envelope>"""

SOAP_FAULT = """<?xml version="1.0" encoding="UTF-8"?>
<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" \
xmlns:sf="urn:fault.partner.soap.sforce.com" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
<soapenv:Body><soapenv:Fault><faultcode>sf:{code}</faultcode>
<faultstring>{code}: {message}</faultstring>
<detail><sf:LoginFault xsi:type="sf:LoginFault"><sf:exceptionCode>{code}</sf:exceptionCode>\
<sf:exceptionMessage>{message}</sf:exceptionMessage></sf:LoginFault></detail>
</soapenv:Fault></soapenv:Body></soapenv:Envelope>"""
