"""Every login mode simple-salesforce offers, against the sandbox, and how bad credentials fail."""

from __future__ import annotations

import time

import jwt
import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from simple_salesforce import Salesforce
from simple_salesforce.exceptions import SalesforceAuthenticationFailed, SalesforceExpiredSession

from salesforce_sandbox.server import SandboxServer


def _order_count(sf: Salesforce) -> int:
    return sf.query("SELECT COUNT() FROM Order")["totalSize"]


def test_soap_login_with_security_token_reaches_the_sandbox(sandbox: SandboxServer, sf_soap: Salesforce):
    assert sf_soap.auth_type == "password"
    assert sf_soap.sf_instance == f"localhost:{sandbox.port}"
    assert sf_soap.session_id != sandbox.credentials["session_id"]
    assert _order_count(sf_soap) > 0


def test_soap_login_with_organization_id_needs_no_token(sandbox: SandboxServer, http: requests.Session):
    from salesforce_sandbox.auth import ORG_ID

    creds = sandbox.credentials
    sf = Salesforce(
        username=creds["username"], password=creds["password"], organizationId=ORG_ID, session=http
    )
    assert sf.auth_type == "ipfilter"
    assert _order_count(sf) > 0


def test_soap_login_with_a_wrong_token_is_invalid_login(sandbox: SandboxServer, http: requests.Session):
    creds = sandbox.credentials
    with pytest.raises(SalesforceAuthenticationFailed) as failure:
        Salesforce(
            username=creds["username"], password=creds["password"], security_token="WRONG", session=http
        )
    assert failure.value.code == "INVALID_LOGIN"
    assert "Invalid username, password, security token" in str(failure.value)


def test_soap_login_fault_is_http_500_with_a_login_fault(sandbox: SandboxServer, http: requests.Session):
    envelope = (
        '<?xml version="1.0"?><env:Envelope xmlns:env="http://schemas.xmlsoap.org/soap/envelope/" '
        'xmlns:urn="urn:partner.soap.sforce.com"><env:Body><urn:login><urn:username>nobody</urn:username>'
        "<urn:password>x</urn:password></urn:login></env:Body></env:Envelope>"
    )
    response = http.post(
        f"{sandbox.url}/services/Soap/u/59.0", data=envelope, headers={"SOAPAction": "login"}
    )
    assert response.status_code == 500
    assert "<sf:exceptionCode>INVALID_LOGIN</sf:exceptionCode>" in response.text
    assert 'xmlns:sf="urn:fault.partner.soap.sforce.com"' in response.text


def test_oauth_password_grant(sandbox: SandboxServer, http: requests.Session):
    creds = sandbox.credentials
    sf = Salesforce(
        username=creds["username"],
        password=creds["password"],
        consumer_key=creds["consumer_key"],
        consumer_secret=creds["consumer_secret"],
        session=http,
    )
    assert sf.sf_instance == f"localhost:{sandbox.port}"
    assert _order_count(sf) > 0


@pytest.mark.parametrize(
    ("override", "error"),
    [({"password": "wrong"}, "invalid_grant"), ({"consumer_secret": "wrong"}, "invalid_client")],
)
def test_oauth_password_grant_with_bad_credentials(
    sandbox: SandboxServer, http: requests.Session, override, error
):
    creds = sandbox.credentials | override
    with pytest.raises(SalesforceAuthenticationFailed) as failure:
        Salesforce(
            username=creds["username"],
            password=creds["password"],
            consumer_key=creds["consumer_key"],
            consumer_secret=creds["consumer_secret"],
            session=http,
        )
    assert failure.value.code == error


def test_oauth_token_answer_shape(sandbox: SandboxServer, http: requests.Session):
    creds = sandbox.credentials
    response = http.post(
        f"{sandbox.url}/services/oauth2/token",
        data={
            "grant_type": "password",
            "client_id": creds["consumer_key"],
            "client_secret": creds["consumer_secret"],
            "username": creds["username"],
            "password": creds["password"] + creds["security_token"],
        },
    )
    assert response.status_code == 200
    body = response.json()
    assert body["instance_url"] == sandbox.url  # no trailing slash
    assert body["token_type"] == "Bearer"
    assert body["issued_at"].isdigit() and len(body["issued_at"]) == 13  # milliseconds
    # The identity URL is under the host the login went to (login.salesforce.com through the proxy).
    assert body["id"].startswith(f"{sandbox.url}/id/00D")
    assert body["access_token"].startswith("00D")
    assert "refresh_token" not in body  # the password grant returns none, as on Salesforce


def test_client_credentials_grant(sandbox: SandboxServer, http: requests.Session):
    creds = sandbox.credentials
    # simple-salesforce uses this grant only for a My Domain (not login/test).
    sf = Salesforce(
        consumer_key=creds["consumer_key"],
        consumer_secret=creds["consumer_secret"],
        domain="sandbox-org.my",
        session=http,
    )
    assert sf.auth_type == "client-credentials"
    assert _order_count(sf) > 0


def test_client_credentials_with_a_bad_secret(sandbox: SandboxServer, http: requests.Session):
    with pytest.raises(SalesforceAuthenticationFailed) as failure:
        Salesforce(
            consumer_key=sandbox.credentials["consumer_key"],
            consumer_secret="nope",
            domain="sandbox-org.my",
            session=http,
        )
    assert failure.value.code == "invalid_client"


def test_jwt_bearer_signed_with_the_sandbox_key(sandbox: SandboxServer, http: requests.Session):
    creds = sandbox.credentials
    sf = Salesforce(
        username=creds["username"],
        consumer_key=creds["consumer_key"],
        privatekey_file=str(sandbox.jwt_private_key_path),
        session=http,
    )
    assert sf.auth_type == "jwt-bearer"
    assert _order_count(sf) > 0


def test_jwt_bearer_signed_with_another_key_is_refused(sandbox: SandboxServer, http: requests.Session):
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with pytest.raises(SalesforceAuthenticationFailed) as failure:
        Salesforce(
            username=sandbox.credentials["username"],
            consumer_key=sandbox.credentials["consumer_key"],
            privatekey=other_key.decode(),
            session=http,
        )
    assert failure.value.code == "invalid_grant"


@pytest.mark.parametrize(
    ("audience", "accepted"),
    [
        ("https://login.salesforce.com", True),  # what simple-salesforce sends (domain "login")
        ("https://test.salesforce.com", True),
        ("https://example.com", False),
        (None, False),
    ],
)
def test_jwt_bearer_checks_the_audience(sandbox: SandboxServer, http: requests.Session, audience, accepted: bool):
    claims = {"iss": sandbox.credentials["consumer_key"], "sub": sandbox.credentials["username"],
              "exp": str(int(time.time()) + 180)}
    if audience is not None:
        claims["aud"] = audience
    assertion = jwt.encode(claims, sandbox.jwt_private_key_path.read_bytes(), algorithm="RS256")
    answer = http.post(f"{sandbox.url}/services/oauth2/token",
                       data={"grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer", "assertion": assertion})
    if accepted:
        assert answer.status_code == 200 and answer.json()["scope"] == "api"
    else:
        assert answer.status_code == 400
        assert answer.json() == {"error": "invalid_grant", "error_description": "audience is invalid"}


def test_direct_session_id_needs_no_login(sandbox: SandboxServer, sf: Salesforce):
    before = sandbox.admin.stats()["calls"]["auth"]
    assert sf.auth_type == "direct"
    assert _order_count(sf) > 0
    assert sandbox.admin.stats()["calls"]["auth"] == before


def test_unknown_session_id_is_401_invalid_session_id(sandbox: SandboxServer, http: requests.Session):
    sf = Salesforce(session_id="00Dbogus!AQnope", instance_url=sandbox.url, session=http)
    with pytest.raises(SalesforceExpiredSession) as failure:
        sf.query("SELECT Id FROM Order LIMIT 1")
    assert failure.value.status == 401
    assert failure.value.content == [
        {"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}
    ]


def test_missing_authorization_is_401(sandbox: SandboxServer, http: requests.Session):
    response = http.get(f"{sandbox.url}/services/data/v59.0/limits/")
    assert response.status_code == 401
    assert response.json()[0]["errorCode"] == "INVALID_SESSION_ID"


def test_x_sfdc_session_header_is_accepted(sandbox: SandboxServer, http: requests.Session):
    response = http.get(
        f"{sandbox.url}/services/data/v59.0/limits/",
        headers={"X-SFDC-Session": sandbox.credentials["session_id"]},
    )
    assert response.status_code == 200


def test_logins_count_as_auth_calls_but_not_against_the_allowance(
    sandbox: SandboxServer, http: requests.Session
):
    before = sandbox.admin.stats()
    creds = sandbox.credentials
    Salesforce(
        username=creds["username"],
        password=creds["password"],
        security_token=creds["security_token"],
        session=http,
    )
    after = sandbox.admin.stats()
    assert after["calls"]["auth"] == before["calls"]["auth"] + 1
    assert after["api_usage"]["used"] == before["api_usage"]["used"]
