"""The three header forms, the token exchange, session expiry and the forbidden token."""

from __future__ import annotations

import base64
import json
import time

from auditor.sandbox import SandboxConfig, user_token_for
from auditor.sandbox.server import CLUSTERS_PATH as CLUSTERS
from auditor.sandbox.server import REFRESH_PATH as REFRESH


def payload(jwt: str) -> dict:
    body = jwt.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))


def test_bearer_mode_accepts_only_the_bearer_form(sandbox, api_for):
    api = api_for(sandbox(auth="bearer"))
    assert api.get(CLUSTERS, token="SAMPLE", scheme="Bearer").status_code == 200
    assert api.get(CLUSTERS, token="SAMPLE", scheme="bearer").status_code == 200
    assert api.get(CLUSTERS, token="SAMPLE", scheme=None).status_code == 401
    assert api.get(CLUSTERS, token="SAMPLEX", scheme="Bearer").status_code == 401


def test_raw_mode_accepts_only_the_bare_token(sandbox, api_for):
    api = api_for(sandbox(auth="raw"))
    assert api.get(CLUSTERS, token="SAMPLE", scheme=None).status_code == 200
    response = api.get(CLUSTERS, token="SAMPLE", scheme="Bearer")
    assert (response.status_code, response.text) == (401, "Unauthorized")
    assert api.get(CLUSTERS, token="SAMPL", scheme=None).status_code == 401


def test_refresh_mode_exchanges_a_user_token_for_a_session(sandbox, api_for):
    server = sandbox(auth="refresh")
    api = api_for(server)
    user = server.key
    assert user == user_token_for(1)
    assert payload(user)["type"] == "refresh-token"
    # the user token itself opens no data call, in either form
    assert api.get(CLUSTERS, token=user, scheme=None).status_code == 401
    assert api.get(CLUSTERS, token=user, scheme="Bearer").status_code == 401
    # the exchange takes the raw header only
    response = api.get(REFRESH, token=user, scheme="Bearer")
    assert (response.status_code, response.json()) == (401, {"message": "Refresh token not valid"})
    response = api.get(REFRESH, token=user, scheme=None)
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"success", "systemToken"} and body["success"] is True
    session = body["systemToken"]
    claims = payload(session)
    assert claims["type"] == "access-token"
    assert claims["exp"] > time.time() + 3000
    assert api.get(CLUSTERS, token=session, scheme=None).status_code == 200
    assert api.get(CLUSTERS, token=session, scheme="Bearer").status_code == 401
    assert server.stats.sessions_issued == 1
    # a forged session (right shape, wrong signature) is refused
    forged = session.rsplit(".", 1)[0] + ".AAAA"
    assert api.get(CLUSTERS, token=forged, scheme=None).status_code == 401


def test_the_tutorial_token_can_be_a_user_token_too(sandbox, api_for):
    server = sandbox(auth="refresh", token="SAMPLE")
    api = api_for(server)
    session = api.get(REFRESH, token="SAMPLE", scheme=None).json()["systemToken"]
    assert api.get(CLUSTERS, token=session, scheme=None).status_code == 200
    assert api.get(REFRESH, token="nope", scheme=None).status_code == 401


def test_sessions_expire_after_their_ttl(sandbox, api_for):
    server = sandbox(auth="refresh", session_ttl=0.3)
    api = api_for(server)
    session = api.get(REFRESH, token=server.key, scheme=None).json()["systemToken"]
    assert api.get(CLUSTERS, token=session, scheme=None, limit=1).status_code == 200
    time.sleep(0.4)
    assert api.get(CLUSTERS, token=session, scheme=None, limit=1).status_code == 401
    fresh = api.get(REFRESH, token=server.key, scheme=None).json()["systemToken"]
    assert fresh != session
    assert api.get(CLUSTERS, token=fresh, scheme=None, limit=1).status_code == 200


def test_sessions_expire_after_a_number_of_requests(sandbox, api_for):
    server = sandbox(auth="refresh", session_max_requests=3)
    api = api_for(server)
    session = api.get(REFRESH, token=server.key, scheme=None).json()["systemToken"]
    statuses = [api.get(CLUSTERS, token=session, scheme=None, limit=1).status_code for _ in range(5)]
    assert statuses == [200, 200, 200, 401, 401]


def test_raw_and_bearer_modes_also_issue_sessions(sandbox, api_for):
    for auth, scheme in (("raw", None), ("bearer", "Bearer")):
        server = sandbox(auth=auth)
        api = api_for(server)
        session = api.get(REFRESH, token="SAMPLE", scheme=scheme).json()["systemToken"]
        assert api.get(CLUSTERS, token=session, scheme=scheme, limit=1).status_code == 200


def test_forbidden_token_in_every_mode(sandbox, api_for):
    for auth, scheme in (("bearer", "Bearer"), ("raw", None)):
        api = api_for(sandbox(auth=auth, forbidden_token="NO-RIGHTS"))
        assert api.get(CLUSTERS, token="NO-RIGHTS", scheme=scheme).status_code == 403
    server = sandbox(auth="refresh", forbidden_token="NO-RIGHTS")
    api = api_for(server)
    session = api.get(REFRESH, token="NO-RIGHTS", scheme=None).json()["systemToken"]
    assert api.get(CLUSTERS, token=session, scheme=None).status_code == 403


def test_configured_tokens_by_mode():
    assert SandboxConfig().token == "SAMPLE"
    assert SandboxConfig(auth="raw").key == "SAMPLE"
    assert SandboxConfig(auth="refresh").key == user_token_for(1)
    assert SandboxConfig(auth="refresh", seed=2).key != user_token_for(1)
    assert SandboxConfig().with_changes(auth="refresh").key == user_token_for(1)
    assert SandboxConfig(token="mine").with_changes(auth="refresh").key == "mine"


def test_soft_auth_errors_answer_200_with_success_false(sandbox, api_for):
    server = sandbox(auth="refresh", soft_auth_errors=True)
    api = api_for(server)
    response = api.get(CLUSTERS, token="nope", scheme=None)
    assert (response.status_code, response.json()) == (
        200,
        {"success": False, "message": "Failed to authenticate token."},
    )
    response = api.get(REFRESH, token="nope", scheme=None)
    assert (response.status_code, response.json()) == (
        200,
        {"success": False, "message": "Refresh token not valid"},
    )
    session = api.get(REFRESH, token=server.key, scheme=None).json()["systemToken"]
    assert api.get(CLUSTERS, token=session, scheme=None).json() == list(server.dataset.clusters())
