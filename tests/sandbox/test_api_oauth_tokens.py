"""The web server flow, the refresh-token grant, revocation and the identity URL."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from simple_salesforce import Salesforce

from salesforce_sandbox.server import SandboxServer

REDIRECT_URI = "http://localhost:1717/OauthRedirect"


def _token(sandbox: SandboxServer, http: requests.Session, **form: str) -> requests.Response:
    return http.post(f"{sandbox.url}/services/oauth2/token", data=form)


def _refresh(sandbox: SandboxServer, http: requests.Session, token: str, **override: str) -> requests.Response:
    creds = sandbox.credentials
    form = {
        "grant_type": "refresh_token",
        "client_id": creds["consumer_key"],
        "client_secret": creds["consumer_secret"],
        "refresh_token": token,
    }
    return _token(sandbox, http, **(form | override))


def _web_server_flow(sandbox: SandboxServer, http: requests.Session) -> dict:
    creds = sandbox.credentials
    approval = http.get(
        f"{sandbox.url}/services/oauth2/authorize",
        params={"response_type": "code", "client_id": creds["consumer_key"], "redirect_uri": REDIRECT_URI,
                "state": "xyz"},
        allow_redirects=False,
    )
    assert approval.status_code == 302
    location = urlsplit(approval.headers["Location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == REDIRECT_URI
    query = parse_qs(location.query)
    assert query["state"] == ["xyz"]
    exchange = _token(
        sandbox, http, grant_type="authorization_code", code=query["code"][0], redirect_uri=REDIRECT_URI,
        client_id=creds["consumer_key"], client_secret=creds["consumer_secret"],
    )
    assert exchange.status_code == 200, exchange.text
    return exchange.json()


def test_printed_refresh_token_logs_in(sandbox: SandboxServer, http: requests.Session):
    response = _refresh(sandbox, http, sandbox.credentials["refresh_token"])
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) >= {"access_token", "instance_url", "id", "token_type", "issued_at", "signature", "scope"}
    assert "refresh_token" not in body  # Salesforce does not rotate refresh tokens
    assert body["instance_url"] == sandbox.url
    sf = Salesforce(session_id=body["access_token"], instance_url=body["instance_url"], session=http)
    assert sf.query("SELECT COUNT() FROM Order")["totalSize"] > 0


def test_web_server_flow_returns_a_refresh_token_that_works(sandbox: SandboxServer, http: requests.Session):
    answer = _web_server_flow(sandbox, http)
    assert answer["refresh_token"].startswith("5Aep861")
    assert "refresh_token" in answer["scope"].split()
    refreshed = _refresh(sandbox, http, answer["refresh_token"])
    assert refreshed.status_code == 200
    assert refreshed.json()["access_token"] != answer["access_token"]


def test_authorization_code_is_good_for_one_exchange(sandbox: SandboxServer, http: requests.Session):
    creds = sandbox.credentials
    approval = http.get(
        f"{sandbox.url}/services/oauth2/authorize",
        params={"response_type": "code", "client_id": creds["consumer_key"], "redirect_uri": REDIRECT_URI},
        allow_redirects=False,
    )
    code = parse_qs(urlsplit(approval.headers["Location"]).query)["code"][0]
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT_URI,
            "client_id": creds["consumer_key"], "client_secret": creds["consumer_secret"]}
    assert _token(sandbox, http, **form).status_code == 200
    again = _token(sandbox, http, **form)
    assert again.status_code == 400
    assert again.json() == {"error": "invalid_grant", "error_description": "invalid authorization code"}


def test_authorize_with_an_unknown_client_is_refused(sandbox: SandboxServer, http: requests.Session):
    response = http.get(
        f"{sandbox.url}/services/oauth2/authorize",
        params={"response_type": "code", "client_id": "nope", "redirect_uri": REDIRECT_URI},
        allow_redirects=False,
    )
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_client_id"


@pytest.mark.parametrize(
    ("override", "status", "error"),
    [
        ({"refresh_token": "5Aep861not.a.real.token"}, 400,
         {"error": "invalid_grant", "error_description": "expired access/refresh token"}),
        ({"refresh_token": ""}, 400, {"error": "invalid_grant", "error_description": "expired access/refresh token"}),
        ({"client_id": "wrong"}, 400, {"error": "invalid_client_id", "error_description": "client identifier invalid"}),
        ({"client_secret": "wrong"}, 400, {"error": "invalid_client", "error_description": "invalid client credentials"}),
    ],
)
def test_refresh_grant_errors(sandbox: SandboxServer, http: requests.Session, override, status, error):
    response = _refresh(sandbox, http, sandbox.credentials["refresh_token"], **override)
    assert response.status_code == status
    assert response.json() == error


def test_revoked_refresh_token_and_its_sessions_stop_working(sandbox: SandboxServer, http: requests.Session):
    answer = _web_server_flow(sandbox, http)
    access = _refresh(sandbox, http, answer["refresh_token"]).json()["access_token"]
    limits = f"{sandbox.url}/services/data/v59.0/limits"
    assert http.get(limits, headers={"Authorization": f"Bearer {access}"}).status_code == 200

    revoke = http.post(f"{sandbox.url}/services/oauth2/revoke", data={"token": answer["refresh_token"]})
    assert revoke.status_code == 200

    refused = _refresh(sandbox, http, answer["refresh_token"])
    assert refused.json() == {"error": "invalid_grant", "error_description": "expired access/refresh token"}
    expired = http.get(limits, headers={"Authorization": f"Bearer {access}"})
    assert expired.status_code == 401
    assert expired.json()[0]["errorCode"] == "INVALID_SESSION_ID"
    # The access token of the code exchange came from the same grant.
    assert http.get(limits, headers={"Authorization": f"Bearer {answer['access_token']}"}).status_code == 401
    # The printed refresh token is untouched.
    assert _refresh(sandbox, http, sandbox.credentials["refresh_token"]).status_code == 200


def test_revoking_an_access_token_and_an_unknown_token(sandbox: SandboxServer, http: requests.Session):
    access = _refresh(sandbox, http, sandbox.credentials["refresh_token"]).json()["access_token"]
    assert http.post(f"{sandbox.url}/services/oauth2/revoke", data={"token": access}).status_code == 200
    limits = f"{sandbox.url}/services/data/v59.0/limits"
    assert http.get(limits, headers={"Authorization": f"Bearer {access}"}).status_code == 401
    again = http.post(f"{sandbox.url}/services/oauth2/revoke", data={"token": access})
    assert again.status_code == 400
    assert again.json()["error"] == "invalid_token"


def test_identity_url_from_the_login_answers_who_the_token_is(sandbox: SandboxServer, http: requests.Session):
    answer = _refresh(sandbox, http, sandbox.credentials["refresh_token"]).json()
    response = http.get(answer["id"], headers={"Authorization": f"Bearer {answer['access_token']}"})
    assert response.status_code == 200
    identity = response.json()
    assert identity["id"] == answer["id"]
    assert identity["username"] == sandbox.credentials["username"]
    assert identity["user_id"] == sandbox.store.integration_user_id
    assert identity["organization_id"].startswith("00D")
    assert answer["id"].endswith(f"/id/{identity['organization_id']}/{identity['user_id']}")
    assert identity["urls"]["rest"] == f"{sandbox.url}/services/data/v{{version}}/"
    # The token may also come as a parameter; a bad one is refused.
    assert http.get(answer["id"], params={"oauth_token": answer["access_token"]}).status_code == 200
    refused = http.get(answer["id"], headers={"Authorization": "Bearer nope"})
    assert (refused.status_code, refused.text) == (403, "Bad_OAuth_Token")


def test_userinfo_answers_the_tokens_user(sandbox: SandboxServer, http: requests.Session):
    """What the write-back asks to know its own LastModifiedById (no echo)."""
    answer = _refresh(sandbox, http, sandbox.credentials["refresh_token"]).json()
    response = http.get(f"{sandbox.url}/services/oauth2/userinfo", headers={"Authorization": f"Bearer {answer['access_token']}"})
    assert response.status_code == 200
    info = response.json()
    assert info["user_id"] == sandbox.store.integration_user_id
    assert info["sub"] == answer["id"]
    refused = http.get(f"{sandbox.url}/services/oauth2/userinfo", headers={"Authorization": "Bearer nope"})
    assert (refused.status_code, refused.text) == (403, "Bad_OAuth_Token")
