import base64
import json
import time

import jwt
import pytest

from ingest.auth import decode_token, mint_token
from ingest.errors import Unauthorized

SECRET = "unit-secret-" + "s" * 64
STREAM = "123e4567-e89b-12d3-a456-426614174000"
OTHER = "00000000-0000-4000-8000-000000000001"


def _b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def _claims(**overrides):
    claims = {"sub": "u1", "role": "streamer", "streams": [STREAM], "exp": time.time() + 60}
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not None}


def test_minted_streamer_token_decodes_to_its_claims():
    principal = decode_token(
        mint_token(SECRET, role="streamer", streams=[STREAM], sub="alice"), SECRET
    )
    assert (principal.sub, principal.role, principal.streams) == (
        "alice",
        "streamer",
        frozenset({STREAM}),
    )
    assert principal.expires_at > time.time() + 3000


def test_stream_ids_in_tokens_are_compared_in_canonical_form():
    principal = decode_token(
        jwt.encode(_claims(streams=[STREAM.upper()]), SECRET, algorithm="HS256"), SECRET
    )
    assert principal.may("update", STREAM)


def test_monitor_without_streams_claim_sees_every_stream():
    principal = decode_token(mint_token(SECRET, role="moderator"), SECRET)
    assert principal.streams is None
    assert principal.may("monitor", STREAM) and principal.may("get", OTHER)


@pytest.mark.parametrize(
    "token",
    [
        None,
        "",
        42,
        {"token": "x"},
        "garbage",
        "a.b.c",
        jwt.encode(_claims(), "another-secret-" + "z" * 32, algorithm="HS256"),
        jwt.encode(_claims(exp=time.time() - 5), SECRET, algorithm="HS256"),
        jwt.encode(_claims(), SECRET, algorithm="HS512"),
        # alg: none, with and without a signature part.
        f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(_claims())}.",
        f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(_claims())}",
        jwt.encode(_claims(exp=None), SECRET, algorithm="HS256"),
        jwt.encode(_claims(sub=None), SECRET, algorithm="HS256"),
        jwt.encode(_claims(role=None), SECRET, algorithm="HS256"),
        jwt.encode(_claims(role="superuser"), SECRET, algorithm="HS256"),
        jwt.encode(_claims(streams=None), SECRET, algorithm="HS256"),
        jwt.encode(_claims(role="viewer", streams=None), SECRET, algorithm="HS256"),
        jwt.encode(_claims(streams=STREAM), SECRET, algorithm="HS256"),
        jwt.encode(_claims(streams=["not-a-uuid"]), SECRET, algorithm="HS256"),
        jwt.encode(_claims(streams=[7]), SECRET, algorithm="HS256"),
    ],
    ids=[
        "missing",
        "empty",
        "number",
        "object",
        "garbage",
        "three-garbage-parts",
        "wrong-secret",
        "expired",
        "hs512",
        "alg-none",
        "alg-none-no-signature",
        "no-exp",
        "no-sub",
        "no-role",
        "unknown-role",
        "streamer-without-streams",
        "viewer-without-streams",
        "streams-not-a-list",
        "streams-not-uuids",
        "streams-not-strings",
    ],
)
def test_bad_tokens_are_refused(token):
    with pytest.raises(Unauthorized) as info:
        decode_token(token, SECRET)
    assert info.value.payload()["code"] == "unauthorized"
    assert str(info.value)


@pytest.mark.parametrize(
    ("role", "streams", "allowed"),
    [
        ("streamer", [STREAM], {"update", "get", "alerts"}),
        ("viewer", [STREAM], {"watch"}),
        ("moderator", None, {"get", "monitor", "alerts"}),
        ("analyst", None, {"get", "monitor", "alerts"}),
        ("admin", None, {"update", "get", "monitor", "alerts"}),
        ("moderator", [STREAM], {"get", "monitor", "alerts"}),
    ],
)
def test_roles_may_do_what_the_protocol_table_says_on_their_streams(role, streams, allowed):
    principal = decode_token(mint_token(SECRET, role=role, streams=streams), SECRET)
    for action in ("update", "get", "monitor", "watch", "alerts"):
        assert principal.may(action, STREAM) is (action in allowed), action
        # Outside a scoped token's streams nothing is allowed.
        assert principal.may(action, OTHER) is (action in allowed and streams is None), action


def test_minting_a_streamer_token_without_a_stream_is_refused():
    with pytest.raises(Exception, match="at least one stream"):
        mint_token(SECRET, role="streamer", streams=[])


def _signed(**overrides) -> str:
    return jwt.encode(_claims(**overrides), SECRET, algorithm="HS256")


def test_a_token_issued_slightly_in_the_future_is_accepted_within_the_clock_skew():
    token = _signed(iat=int(time.time()) + 20, nbf=int(time.time()) + 20)
    assert decode_token(token, SECRET, clock_skew=30).sub == "u1"
    with pytest.raises(Unauthorized, match="not valid yet"):
        decode_token(token, SECRET, clock_skew=5)


def test_a_token_issued_beyond_the_clock_skew_is_refused():
    with pytest.raises(Unauthorized, match="30s ahead"):
        decode_token(_signed(iat=int(time.time()) + 120), SECRET, clock_skew=30)


def test_the_clock_skew_gives_no_grace_to_an_expired_token():
    with pytest.raises(Unauthorized, match="expired"):
        decode_token(_signed(exp=int(time.time()) - 2), SECRET, clock_skew=30)


def test_an_oversize_token_is_refused_before_its_signature_is_checked():
    token = _signed(pad="x" * 10_000)
    with pytest.raises(Unauthorized, match="at most 8192"):
        decode_token(token, SECRET)


@pytest.mark.parametrize(
    "spelling",
    [
        "{123e4567-e89b-12d3-a456-426614174000}",
        "urn:uuid:123e4567-e89b-12d3-a456-426614174000",
        "123e4567e89b12d3a456426614174000",
        "123e4567-e89b12d3-a456-4266-14174000",
        " 123e4567-e89b-12d3-a456-426614174000",
    ],
)
def test_stream_ids_in_tokens_must_be_spelled_canonically(spelling):
    with pytest.raises(Unauthorized, match="stream UUIDs"):
        decode_token(_signed(streams=[spelling]), SECRET)
