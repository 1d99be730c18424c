"""Credential scopes: digests of who calls whom, remembered per credentials."""

from __future__ import annotations

from llmpool.state import CredentialScopes, credential_scope


def test_remembered_scopes_are_the_scopes_whatever_the_other_headers() -> None:
    """CredentialScopes gives credential_scope's answer, computed once per base
    URL and credentials: a per-call Idempotency-Key neither changes the scope
    nor defeats the table (the rate limiter digested every call before)."""
    scopes = CredentialScopes(size=4)
    calls = [
        {"Authorization": "Bearer a", "Idempotency-Key": f"llmpool-{i}", "Accept": "x"}
        for i in range(50)
    ]
    seen = {scopes(h, "http://h/v1") for h in calls}
    assert seen == {credential_scope(calls[0], "http://h/v1")}
    assert len(scopes._scopes) == 1 and len(scopes._secret) == 1
    other_key = {"Authorization": "Bearer b", "Idempotency-Key": "k", "Accept": "x"}
    assert scopes(other_key, "http://h/v1") == credential_scope(other_key, "http://h/v1")
    assert scopes(other_key, "http://h/v1") != scopes(calls[0], "http://h/v1")
    assert scopes(calls[0], "http://other/v1") != scopes(calls[0], "http://h/v1")
    for i in range(10):  # the tables stay bounded
        scopes({"X-Api-Key": f"k{i}", f"X-{i}": "v"}, None)
    assert len(scopes._scopes) <= 4 and len(scopes._secret) <= 4
