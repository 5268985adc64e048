"""Stream tokens: genuine, unexpired, for this user, used once; everything else refused."""

from __future__ import annotations

import pytest

from bridge.web.stream_tokens import TTL_S, StreamTokenError, StreamTokens

NOW = 1_800_000_000.0


def tokens() -> StreamTokens:
    return StreamTokens(b"k" * 32)


def test_a_token_admits_one_stream_of_its_user_and_call() -> None:
    t = tokens()
    token = t.issue("alice", "CA123", NOW)
    claims = t.use(token, "alice", NOW + 1)
    assert (claims.user_id, claims.call_id) == ("alice", "CA123")
    with pytest.raises(StreamTokenError, match="already used"):
        t.use(token, "alice", NOW + 2)


def test_a_token_for_another_user_is_refused_and_not_spent() -> None:
    t = tokens()
    token = t.issue("alice", "CA123", NOW)
    with pytest.raises(StreamTokenError, match="another user"):
        t.use(token, "bob", NOW)
    assert t.use(token, "alice", NOW).user_id == "alice"


def test_an_expired_token_is_refused() -> None:
    t = tokens()
    token = t.issue("alice", "CA1", NOW)
    with pytest.raises(StreamTokenError, match="expired"):
        t.use(token, "alice", NOW + TTL_S + 1)


@pytest.mark.parametrize("mangle", [
    lambda tok: tok[:-2] + ("A" if tok[-2] != "A" else "B") + tok[-1],  # MAC changed
    lambda tok: "x" + tok,  # payload changed
    lambda tok: tok.split(".")[0],  # no MAC
    lambda tok: "",
    lambda tok: "!!!.???",
    lambda tok: tok * 20,  # over the length bound
])
def test_a_forged_or_mangled_token_is_refused(mangle) -> None:
    t = tokens()
    with pytest.raises(StreamTokenError):
        t.use(mangle(t.issue("alice", "CA1", NOW)), "alice", NOW)


def test_another_bridges_key_does_not_verify_but_the_same_secret_does() -> None:
    token = StreamTokens.for_secret("secret-a").issue("alice", "CA1", NOW)
    with pytest.raises(StreamTokenError, match="not genuine"):
        StreamTokens.for_secret("secret-b").use(token, "alice", NOW)
    assert StreamTokens.for_secret("secret-a").use(token, "alice", NOW).call_id == "CA1"


def test_used_tokens_are_forgotten_once_expired() -> None:
    t = tokens()
    for i in range(5):
        t.use(t.issue("alice", f"CA{i}", NOW), "alice", NOW)
    assert t.remembered == 5
    t.use(t.issue("alice", "CAlate", NOW + TTL_S + 1), "alice", NOW + TTL_S + 1)
    assert t.remembered == 1


def test_ids_with_spaces_cannot_be_issued() -> None:
    with pytest.raises(ValueError):
        tokens().issue("alice", "CA 1", NOW)
