"""Logins and sessions: OAuth token grants, SOAP login and the bearer tokens they issue.

Supported, as Salesforce answers them (wire spec §1):
- ``POST /services/oauth2/token`` with the ``password``, ``client_credentials``, JWT bearer,
  ``authorization_code`` and ``refresh_token`` grants;
- ``GET /services/oauth2/authorize`` (web server flow): approved at once for the org's one user,
  redirecting with a code; exchanging the code returns a refresh token, as Salesforce does;
- ``POST /services/oauth2/revoke`` for access and refresh tokens (a revoked refresh token takes
  the access tokens issued from it along);
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
from collections.abc import Callable
from dataclasses import dataclass, field
from html import escape
from pathlib import Path

import jwt

from .ids import make_id
from .wire import local_name, parse_xml

ORG_ID = make_id("00D", 1)
AUTHORIZATION_CODE_SECONDS = 15 * 60
# Salesforce's error description for a bad or revoked refresh token.
STALE_GRANT_MESSAGE = "expired access/refresh token"


@dataclass(frozen=True)
class Credentials:
    """What a client needs to log in. Local development values, printed by the CLI."""

    username: str = "integration@sandbox.example.com"
    password: str = "sandbox-password"  # noqa: S105 - published local sandbox credential
    security_token: str = "SANDBOXTOKEN0001"  # noqa: S105 - published local sandbox credential
    consumer_key: str = "3MVG9sandbox.local.consumer.key"
    consumer_secret: str = "SANDBOX0CONSUMER0SECRET"  # noqa: S105 - published local sandbox credential
    session_id: str = f"{ORG_ID[:15]}!AQsandbox.fixed.session.id"
    # Valid until revoked, for clients that log in only with the refresh-token grant.
    refresh_token: str = "5Aep861sandbox.fixed.refresh.token"  # noqa: S105 - published local sandbox credential

    def as_dict(self) -> dict[str, str]:
        return {
            "username": self.username,
            "password": self.password,
            "security_token": self.security_token,
            "consumer_key": self.consumer_key,
            "consumer_secret": self.consumer_secret,
            "session_id": self.session_id,
            "refresh_token": self.refresh_token,
        }


REFRESH_SCOPE = "refresh_token api id"


@dataclass(frozen=True)
class _TokenAnswer:
    """Where a token answer points: the instance, the login host, and the secret it is signed with."""

    instance_url: str
    login_url: str
    secret: str


class LoginRejected(Exception):
    """A login attempt failed; ``error``/``description`` are the OAuth error fields."""

    def __init__(self, error: str, description: str):
        super().__init__(description)
        self.error = error
        self.description = description


@dataclass
class SessionRegistry:
    """The bearer tokens the org accepts: the configured session id and every token issued,
    each with the refresh token it was issued from (None for a login)."""

    fixed_session_id: str
    _issued: dict[str, str | None] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def issue(self, refresh_token: str | None = None) -> str:
        token = f"{ORG_ID[:15]}!AQ{secrets.token_urlsafe(48)}"
        with self._lock:
            self._issued[token] = refresh_token
        return token

    def is_valid(self, token: str | None) -> bool:
        if not token:
            return False
        if hmac.compare_digest(token, self.fixed_session_id):
            return True
        with self._lock:
            return token in self._issued

    def revoke(self, token: str) -> bool:
        """Forget an issued token; False when it was never issued (the fixed session id cannot be revoked)."""
        with self._lock:
            if token not in self._issued:
                return False
            del self._issued[token]
            return True

    def revoke_issued_from(self, refresh_token: str) -> None:
        with self._lock:
            for token in [t for t, origin in self._issued.items() if origin == refresh_token]:
                del self._issued[token]


@dataclass
class RefreshTokens:
    """Refresh tokens: the configured one and those issued by the web server flow, until revoked."""

    fixed_token: str
    _issued: set[str] = field(default_factory=set)
    _revoked: set[str] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def issue(self) -> str:
        token = f"5Aep861{secrets.token_urlsafe(60)}"
        with self._lock:
            self._issued.add(token)
        return token

    def is_valid(self, token: str | None) -> bool:
        if not token:
            return False
        with self._lock:
            if token in self._revoked:
                return False
            return token in self._issued or hmac.compare_digest(token, self.fixed_token)

    def revoke(self, token: str) -> bool:
        if not self.is_valid(token):
            return False
        with self._lock:
            self._issued.discard(token)
            self._revoked.add(token)
        return True


@dataclass(frozen=True)
class AuthorizationCode:
    client_id: str
    redirect_uri: str
    expires_at: float


@dataclass
class AuthorizationCodes:
    """Codes of the web server flow: each good for one exchange, for 15 minutes."""

    _codes: dict[str, AuthorizationCode] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def issue(self, client_id: str, redirect_uri: str) -> str:
        code = f"aPrx{secrets.token_urlsafe(40)}"
        with self._lock:
            self._codes[code] = AuthorizationCode(client_id, redirect_uri, time.time() + AUTHORIZATION_CODE_SECONDS)
        return code

    def redeem(self, code: str) -> AuthorizationCode | None:
        with self._lock:
            grant = self._codes.pop(code, None)
        if grant is None or grant.expires_at < time.time():
            return None
        return grant


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
        self.refresh_tokens = RefreshTokens(credentials.refresh_token)
        self.codes = AuthorizationCodes()
        self._jwt_public_key = jwt_public_key_path.read_bytes() if jwt_public_key_path else None

    # -- OAuth 2.0 -------------------------------------------------------------------------

    def oauth_token(self, form: dict[str, str], authorization: str | None, instance_url: str, login_url: str) -> dict:
        """The token endpoint's answer for a form-encoded request; raises LoginRejected.

        ``login_url`` is where the request came in (``https://login.salesforce.com`` through the
        proxy): the identity URL in the answer is under it, as on Salesforce."""
        answer = _TokenAnswer(instance_url, login_url, self.credentials.consumer_secret)
        grant = form.get("grant_type", "")
        if grant == "password":
            self._check_client(form.get("client_id"), form.get("client_secret"))
            self._check_user(form.get("username"), form.get("password"), token_optional=True)
            return self._token_answer(answer)
        if grant == "client_credentials":
            key, secret = _client_of(form, authorization)
            self._check_client(key, secret)
            return self._token_answer(answer, scope="api")
        if grant == "urn:ietf:params:oauth:grant-type:jwt-bearer":
            self._check_jwt(form.get("assertion", ""), (login_url, instance_url))
            return self._token_answer(answer, scope="api")
        if grant == "authorization_code":
            key, secret = _client_of(form, authorization)
            self._check_client(key, secret)
            code = self.codes.redeem(form.get("code", ""))
            if code is None or not _same(form.get("redirect_uri"), code.redirect_uri):
                raise LoginRejected("invalid_grant", "invalid authorization code")
            refresh_token = self.refresh_tokens.issue()
            return self._token_answer(answer, scope=REFRESH_SCOPE, refresh_token=refresh_token) | {
                "refresh_token": refresh_token
            }
        if grant == "refresh_token":
            key, secret = _client_of(form, authorization)
            if not _same(key, self.credentials.consumer_key):
                raise LoginRejected("invalid_client_id", "client identifier invalid")
            if secret is not None and not _same(secret, self.credentials.consumer_secret):
                raise LoginRejected("invalid_client", "invalid client credentials")
            refresh_token = form.get("refresh_token", "")
            if not self.refresh_tokens.is_valid(refresh_token):
                raise LoginRejected("invalid_grant", STALE_GRANT_MESSAGE)
            return self._token_answer(answer, scope=REFRESH_SCOPE, refresh_token=refresh_token)
        raise LoginRejected("unsupported_grant_type", "grant type not supported")

    def authorize(self, client_id: str | None, redirect_uri: str | None) -> str:
        """A code for the web server flow; the org's one user approves every request."""
        if not _same(client_id, self.credentials.consumer_key):
            raise LoginRejected("invalid_client_id", "client identifier invalid")
        if not redirect_uri:
            raise LoginRejected("redirect_uri_missing", "redirect_uri must be provided")
        return self.codes.issue(client_id or "", redirect_uri)

    def revoke(self, token: str | None) -> None:
        """Revoke an access token, or a refresh token and every access token issued from it."""
        if token and self.refresh_tokens.revoke(token):
            self.sessions.revoke_issued_from(token)
            return
        if not token or not self.sessions.revoke(token):
            raise LoginRejected("invalid_token", "invalid token")

    def identity(self, login_url: str, instance_url: str, user: dict) -> dict:
        """The identity URL's answer for the org's integration user."""
        base = instance_url.rstrip("/")
        org = ORG_ID[:15]
        urls = {
            "enterprise": f"{base}/services/Soap/c/{{version}}/{org}",
            "metadata": f"{base}/services/Soap/m/{{version}}/{org}",
            "partner": f"{base}/services/Soap/u/{{version}}/{org}",
            "rest": f"{base}/services/data/v{{version}}/",
            "sobjects": f"{base}/services/data/v{{version}}/sobjects/",
            "search": f"{base}/services/data/v{{version}}/search/",
            "query": f"{base}/services/data/v{{version}}/query/",
            "recent": f"{base}/services/data/v{{version}}/recent/",
            "tooling_soap": f"{base}/services/Soap/T/{{version}}/{org}",
            "tooling_rest": f"{base}/services/data/v{{version}}/tooling/",
            "profile": f"{base}/{user['Id']}",
            "custom_domain": base,
        }
        return {
            "id": self.identity_url(login_url),
            "asserted_user": True,
            "user_id": user["Id"],
            "organization_id": ORG_ID,
            "username": user["Username"],
            "nick_name": user["Username"].split("@")[0],
            "display_name": user["Name"],
            "email": user["Email"],
            "email_verified": True,
            "first_name": user["FirstName"],
            "last_name": user["LastName"],
            "timezone": "GMT",
            "photos": {"picture": None, "thumbnail": None},
            "active": True,
            "user_type": "STANDARD",
            "language": "en_US",
            "locale": "en_US",
            "utcOffset": 0,
            "last_modified_date": user["LastModifiedDate"],
            "is_app_installed": True,
            "urls": urls,
        }

    def identity_url(self, login_url: str) -> str:
        return f"{login_url.rstrip('/')}/id/{ORG_ID}/{self._user_id()}"

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

    def _check_jwt(self, assertion: str, own_urls: tuple[str, ...] = ()) -> None:
        """``own_urls``: the sandbox's own addresses, which are audiences it also accepts."""
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
        if not _jwt_audience_ok(claims.get("aud"), own_urls):
            raise LoginRejected("invalid_grant", "audience is invalid")

    def _token_answer(self, where: _TokenAnswer, scope: str | None = None, refresh_token: str | None = None) -> dict:
        identity = self.identity_url(where.login_url)
        issued_at = str(int(time.time() * 1000))
        # Salesforce signs the identity URL and issue time with the consumer secret.
        signature = hmac.new(where.secret.encode(), (identity + issued_at).encode(), hashlib.sha256).digest()
        answer = {
            "access_token": self.sessions.issue(refresh_token),
            "instance_url": where.instance_url.rstrip("/"),
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


# What Salesforce accepts as a JWT's ``aud``: its login hosts (wire spec 1a: https://{domain}.salesforce.com),
# My Domain and site URLs; the sandbox also takes its own address.
_JWT_AUDIENCE_HOSTS = ("login.salesforce.com", "test.salesforce.com")
_JWT_AUDIENCE_SUFFIXES = (".my.salesforce.com", ".force.com", ".my.site.com")


def _jwt_audience_ok(aud: object, own_urls: tuple[str, ...]) -> bool:
    audiences = aud if isinstance(aud, list) else [aud]
    own = {url.rstrip("/").lower() for url in own_urls if url}
    for audience in audiences:
        if not isinstance(audience, str):
            continue
        url = audience.strip().rstrip("/").lower()
        host = url.removeprefix("https://")
        salesforce_host = host in _JWT_AUDIENCE_HOSTS or host.endswith(_JWT_AUDIENCE_SUFFIXES)
        if url in own or (url.startswith("https://") and salesforce_host):
            return True
    return False


def soap_fault(code: str, message: str) -> str:
    """A SOAP login fault envelope (answered with HTTP 500)."""
    return SOAP_FAULT.format(code=escape(code), message=escape(message))


def _parse_soap_login(body: bytes) -> tuple[str | None, str | None, str | None]:
    try:
        root = parse_xml(body)
    except ValueError as exc:
        raise LoginRejected("INVALID_LOGIN", f"Invalid request: {exc}") from exc
    values: dict[str, str] = {}
    for element in root.iter():
        local = local_name(element)
        if local in ("username", "password", "organizationId"):
            values[local] = element.text or ""
    return values.get("username"), values.get("password"), values.get("organizationId")


def _client_of(form: dict[str, str], authorization: str | None) -> tuple[str | None, str | None]:
    """The consumer key and secret: from ``Authorization: Basic``, else the form fields."""
    return _basic_auth(authorization) or (form.get("client_id"), form.get("client_secret"))


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
