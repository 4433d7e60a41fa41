"""SIP Digest authentication: RFC vectors, nonces, replay, parsing, enumeration.

Credentials are built the way a phone builds them: from a challenge header
value, through :func:`response`, into a header string that is then parsed, so
the challenge writer and the credentials parser are exercised on every path.
"""

from __future__ import annotations

import base64
import hmac
from collections.abc import Mapping

import pytest

from appliance.sip import digest
from appliance.sip.digest import (
    ALGORITHMS,
    MAX_AUTH_PARAMS,
    MAX_CREDENTIALS_LENGTH,
    MD5,
    NONCE_CLOCK_SKEW_SECONDS,
    SHA256,
    AuthOutcome,
    AuthResult,
    Credentials,
    DigestParseError,
    DigestVerifier,
    FailureReason,
    NonceFactory,
    NonceState,
    UnsupportedScheme,
    challenges,
    ha1,
    parse_credentials,
    response,
)

KEY = bytes(range(32))
LIFETIME = 300.0
NOW = 1_800_000_000.0
REALM = "tenant-a.example"
IP = "192.0.2.10"
USER = "1001"
PASSWORD = "correct horse battery staple"
URI = "sip:tenant-a.example"
TOKEN_PARAMS = ("algorithm", "qop", "nc")


def _ha1s(password: str = PASSWORD) -> dict[str, str]:
    """What the store holds for USER: one HA1 per algorithm, never the password."""
    return {algorithm: ha1(algorithm, USER, REALM, password) for algorithm in ALGORITHMS}


def _verifier(max_tracked_nonces: int = digest.MAX_TRACKED_NONCES) -> DigestVerifier:
    return DigestVerifier(NonceFactory(KEY, LIFETIME), max_tracked_nonces=max_tracked_nonces)


def _challenge(verifier: DigestVerifier, algorithm: str = SHA256, now: float = NOW) -> str:
    """The challenge value for ``algorithm`` among those the verifier sends."""
    for value in verifier.challenge(REALM, now=now, source_ip=IP):
        if _params(value)["algorithm"] == algorithm:
            return value
    raise AssertionError(f"no {algorithm} challenge")


def _params(header_value: str) -> Mapping[str, str]:
    parsed = parse_credentials(header_value)
    assert isinstance(parsed, Credentials)
    return parsed.params


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _authorize(
    challenge: str,
    *,
    password: str = PASSWORD,
    method: str = "REGISTER",
    nc: int = 1,
    cnonce: str = "0a4f113b",
    overrides: Mapping[str, str | None] | None = None,
) -> Credentials:
    """A phone's answer to ``challenge``; ``overrides`` replace (or, with None, drop)
    parameters after the response is computed."""
    offered = _params(challenge)
    algorithm = offered["algorithm"]
    nc_text = f"{nc:08x}"
    params: dict[str, str] = {
        "username": USER,
        "realm": offered["realm"],
        "nonce": offered["nonce"],
        "uri": URI,
        "response": response(
            algorithm,
            ha1(algorithm, USER, offered["realm"], password),
            nonce=offered["nonce"],
            nc=nc_text,
            cnonce=cnonce,
            qop="auth",
            method=method,
            uri=URI,
        ),
        "algorithm": algorithm,
        "qop": "auth",
        "nc": nc_text,
        "cnonce": cnonce,
    }
    for name, value in (overrides or {}).items():
        if value is None:
            del params[name]
        else:
            params[name] = value
    header = "Digest " + ", ".join(
        f"{name}={value if name in TOKEN_PARAMS else _quote(value)}"
        for name, value in params.items()
    )
    parsed = parse_credentials(header)
    assert isinstance(parsed, Credentials)
    return parsed


def _verify(
    verifier: DigestVerifier,
    credentials: Credentials,
    *,
    ha1s: Mapping[str, str] | None = None,
    now: float = NOW,
    source_ip: str = IP,
    method: str = "REGISTER",
    realm: str = REALM,
) -> AuthResult:
    stored = _ha1s() if ha1s is None else ha1s
    return verifier.verify(credentials, method, stored, realm, now=now, source_ip=source_ip)


def _failed(reason: FailureReason) -> AuthResult:
    return AuthResult(AuthOutcome.FAILED, USER, reason)


OK = AuthResult(AuthOutcome.OK, USER)
STALE = AuthResult(AuthOutcome.STALE, USER)


# RFC 7616 §3.9.1


@pytest.mark.parametrize(
    ("algorithm", "expected"),
    [
        (MD5, "8ca523f5e9506fed4657c9700eebdbec"),
        (SHA256, "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"),
    ],
)
def test_rfc7616_vectors(algorithm: str, expected: str) -> None:
    """HA1 and the response reproduce the RFC 7616 §3.9.1 examples for MD5 and SHA-256."""
    stored = ha1(algorithm, "Mufasa", "http-auth@example.org", "Circle of Life")
    assert (
        response(
            algorithm,
            stored,
            nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
            nc="00000001",
            cnonce="f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
            qop="auth",
            method="GET",
            uri="/dir/index.html",
        )
        == expected
    )


def test_ha1_refuses_unsupported_algorithms() -> None:
    """Only SHA-256 and MD5 HA1s can be made: no -sess variants, no SHA-512-256."""
    for algorithm in ("MD5-sess", "SHA-256-sess", "SHA-512-256", "sha-256"):
        with pytest.raises(ValueError, match="unsupported"):
            ha1(algorithm, USER, REALM, PASSWORD)


# Challenges


def test_challenges_offer_sha256_then_md5_with_one_fresh_nonce() -> None:
    """The verifier's challenge is two values, SHA-256 first, each with realm, a valid
    nonce bound to the client's address, qop="auth" and no stale flag."""
    verifier = _verifier()
    values = verifier.challenge(REALM, now=NOW, source_ip=IP)
    offered = [_params(value) for value in values]
    assert [p["algorithm"] for p in offered] == [SHA256, MD5]
    for params in offered:
        assert params["realm"] == REALM
        assert params["qop"] == "auth"
        assert "stale" not in params
        assert verifier.nonces.check(params["nonce"], NOW, IP, REALM) is NonceState.VALID
    assert values[0].startswith("Digest ")


def test_challenges_carry_stale_and_escape_the_realm() -> None:
    """stale=true is added on request, and a realm with quotes or backslashes survives
    the round trip through the header syntax."""
    realm = 'odd "realm" \\ here'
    values = challenges(realm, "n0nce", stale=True)
    for value in values:
        params = _params(value)
        assert params["realm"] == realm
        assert params["nonce"] == "n0nce"
        assert params["stale"] == "true"


def test_challenges_refuse_bad_realms_and_algorithms() -> None:
    """A realm that could inject a header line, an empty realm or an unsupported
    algorithm is a programming error, not a challenge."""
    with pytest.raises(ValueError, match="realm"):
        challenges("evil\r\nVia: x", "n")
    with pytest.raises(ValueError, match="realm"):
        challenges("", "n")
    with pytest.raises(ValueError, match="unsupported"):
        challenges(REALM, "n", algorithms=("MD5-sess",))


# Nonces


def test_nonce_factory_refuses_short_keys_and_bad_lifetimes() -> None:
    """A key shorter than a SHA-256 block and a non-positive lifetime fail at setup."""
    with pytest.raises(ValueError, match="key"):
        NonceFactory(b"short", LIFETIME)
    with pytest.raises(ValueError, match="lifetime"):
        NonceFactory(KEY, 0)


def test_nonces_are_salted() -> None:
    """Two challenges at the same instant to the same address get different nonces,
    so phones behind one NAT never share an nc sequence; the salt comes from the
    injected random source."""
    factory = NonceFactory(KEY, LIFETIME)
    assert factory.make(NOW, IP, REALM) != factory.make(NOW, IP, REALM)
    fixed = NonceFactory(KEY, LIFETIME, random_bytes=lambda n: b"\x01" * n)
    assert fixed.make(NOW, IP, REALM) == fixed.make(NOW, IP, REALM)
    broken = NonceFactory(KEY, LIFETIME, random_bytes=lambda n: b"")
    with pytest.raises(ValueError, match="random"):
        broken.make(NOW, IP, REALM)


def test_nonce_lifetime_and_clock_skew() -> None:
    """A nonce is valid up to its lifetime, stale after it, tolerated a little in the
    future (a clock stepped back) and invalid further in the future."""
    factory = NonceFactory(KEY, LIFETIME)
    nonce = factory.make(NOW, IP, REALM)
    assert factory.check(nonce, NOW + LIFETIME, IP, REALM) is NonceState.VALID
    assert factory.check(nonce, NOW + LIFETIME + 0.01, IP, REALM) is NonceState.STALE
    assert factory.check(nonce, NOW - NONCE_CLOCK_SKEW_SECONDS, IP, REALM) is NonceState.VALID
    assert factory.check(nonce, NOW - NONCE_CLOCK_SKEW_SECONDS - 1, IP, REALM) is (
        NonceState.INVALID
    )


def test_nonce_is_bound_to_address_realm_and_key() -> None:
    """A genuine nonce checked for another address, another realm or under another
    key is invalid, not stale."""
    nonce = NonceFactory(KEY, LIFETIME).make(NOW, IP, REALM)
    factory = NonceFactory(KEY, LIFETIME)
    assert factory.check(nonce, NOW, "192.0.2.11", REALM) is NonceState.INVALID
    assert factory.check(nonce, NOW, IP, "tenant-b.example") is NonceState.INVALID
    other = NonceFactory(bytes(32), LIFETIME)
    assert other.check(nonce, NOW, IP, REALM) is NonceState.INVALID


def test_nonce_with_edited_timestamp_is_invalid() -> None:
    """Moving the issue time forward to extend a nonce's life breaks its MAC."""
    factory = NonceFactory(KEY, LIFETIME)
    raw = bytearray(base64.urlsafe_b64decode(factory.make(NOW, IP, REALM)))
    raw[6] ^= 0x01
    forged = base64.urlsafe_b64encode(bytes(raw)).decode()
    assert factory.check(forged, NOW + LIFETIME + 100, IP, REALM) is NonceState.INVALID


@pytest.mark.parametrize(
    "nonce",
    ["", "abc", "!" * 64, "A" * 63, "A" * 65, "A" * 62 + "==", "é" * 64, "A" * 64],
)
def test_malformed_nonces_are_invalid(nonce: str) -> None:
    """Wrong length, characters outside base64url, padding, non-ASCII and random
    well-formed strings are all invalid, never an exception."""
    assert NonceFactory(KEY, LIFETIME).check(nonce, NOW, IP, REALM) is NonceState.INVALID


# Verification round trips


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_round_trip_ok(algorithm: str) -> None:
    """A phone answering either challenge with the right password is authenticated."""
    verifier = _verifier()
    credentials = _authorize(_challenge(verifier, algorithm))
    assert _verify(verifier, credentials) == OK
    assert _verify(verifier, credentials).ok is False  # the same nc again is a replay


def test_wrong_password_fails() -> None:
    """A response computed from another password fails as bad credentials."""
    verifier = _verifier()
    credentials = _authorize(_challenge(verifier), password="guess")
    assert _verify(verifier, credentials) == _failed(FailureReason.CREDENTIALS)


def test_unknown_user_fails_exactly_like_a_wrong_password() -> None:
    """An unknown user, a wrong password and a user without an HA1 for the chosen
    algorithm give equal result objects, so the answer does not reveal which."""
    verifier = _verifier()
    wrong = _verify(verifier, _authorize(_challenge(verifier), password="guess"))
    unknown = verifier.verify(
        _authorize(_challenge(verifier)), "REGISTER", None, REALM, now=NOW, source_ip=IP
    )
    md5_only = {MD5: _ha1s()[MD5]}
    no_sha = _verify(verifier, _authorize(_challenge(verifier, SHA256)), ha1s=md5_only)
    assert unknown == wrong == no_sha == _failed(FailureReason.CREDENTIALS)


def test_unknown_user_and_wrong_password_do_the_same_work(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Unknown user, wrong password and right password hash the same number of
    strings of the same lengths and make the same comparisons (counted, not timed)."""
    work: list[tuple[str, int, int]] = []
    real_hash, real_compare = digest.hash_hex, hmac.compare_digest

    def counting_hash(algorithm: str, text: str) -> str:
        work.append(("hash", len(algorithm), len(text)))
        return real_hash(algorithm, text)

    def counting_compare(a: bytes, b: bytes) -> bool:
        work.append(("compare", len(a), len(b)))
        return real_compare(a, b)

    verifier = _verifier()
    cases = {
        "right": (_authorize(_challenge(verifier)), _ha1s()),
        "wrong": (_authorize(_challenge(verifier), password="guess"), _ha1s()),
        "unknown": (_authorize(_challenge(verifier)), None),
    }
    monkeypatch.setattr(digest, "hash_hex", counting_hash)
    monkeypatch.setattr(digest, "compare_digest", counting_compare)
    observed: dict[str, list[tuple[str, int, int]]] = {}
    for name, (credentials, stored) in cases.items():
        work.clear()
        verifier.verify(credentials, "REGISTER", stored, REALM, now=NOW, source_ip=IP)
        observed[name] = list(work)
    assert observed["unknown"] == observed["wrong"] == observed["right"]
    assert [kind for kind, _, _ in observed["right"]].count("hash") == 2


def test_stale_nonce_with_right_password_is_stale() -> None:
    """Past its lifetime, a nonce answered with the right password yields STALE (retry
    with a fresh nonce), which is not a failure."""
    verifier = _verifier()
    credentials = _authorize(_challenge(verifier))
    result = _verify(verifier, credentials, now=NOW + LIFETIME + 1)
    assert result == STALE
    assert result.reason is None


def test_stale_nonce_with_wrong_password_or_unknown_user_fails() -> None:
    """Stale is only said to someone who knows the password, so it reveals nothing."""
    verifier = _verifier()
    later = NOW + LIFETIME + 1
    wrong = _authorize(_challenge(verifier), password="guess")
    assert _verify(verifier, wrong, now=later) == _failed(FailureReason.CREDENTIALS)
    unknown = verifier.verify(
        _authorize(_challenge(verifier)), "REGISTER", None, REALM, now=later, source_ip=IP
    )
    assert unknown == _failed(FailureReason.CREDENTIALS)


def test_nonce_from_another_address_fails() -> None:
    """Credentials captured from one address and sent from another are refused."""
    verifier = _verifier()
    credentials = _authorize(_challenge(verifier))
    assert _verify(verifier, credentials, source_ip="198.51.100.7") == _failed(FailureReason.NONCE)


def test_forged_nonce_fails_even_with_the_right_password() -> None:
    """A nonce the appliance did not issue is refused whatever the response."""
    verifier = _verifier()
    foreign = DigestVerifier(NonceFactory(bytes(32), LIFETIME))
    credentials = _authorize(_challenge(foreign))
    assert _verify(verifier, credentials) == _failed(FailureReason.NONCE)


def test_replayed_nc_fails_and_increasing_nc_succeeds() -> None:
    """Each nc may be used once per nonce and must increase; gaps are allowed."""
    verifier = _verifier()
    challenge = _challenge(verifier)
    assert _verify(verifier, _authorize(challenge, nc=1)) == OK
    assert _verify(verifier, _authorize(challenge, nc=1)) == _failed(FailureReason.REPLAY)
    assert _verify(verifier, _authorize(challenge, nc=2, cnonce="other")) == OK
    assert _verify(verifier, _authorize(challenge, nc=5)) == OK
    assert _verify(verifier, _authorize(challenge, nc=4)) == _failed(FailureReason.REPLAY)
    assert verifier.tracked_nonces == 1


def test_failed_attempts_do_not_consume_nc_or_table_space() -> None:
    """A wrong password does not advance the counter nor occupy the table, so garbage
    responses cannot lock a phone out or fill memory."""
    verifier = _verifier()
    challenge = _challenge(verifier)
    assert _verify(verifier, _authorize(challenge, password="guess")).ok is False
    assert verifier.tracked_nonces == 0
    assert _verify(verifier, _authorize(challenge)) == OK


def test_full_nc_table_forgets_the_oldest_and_stales_what_it_cannot_track() -> None:
    """A full table evicts its oldest nonce; nonces issued up to the evicted one are
    then stale (their counters are gone, so a replay could not be told apart), the
    tracked ones keep working, and a fresh nonce always fits: registration never
    stops however many phones there are, and memory stays bounded."""
    verifier = _verifier(max_tracked_nonces=2)
    first, second = _challenge(verifier), _challenge(verifier, now=NOW + 1)
    assert _verify(verifier, _authorize(first)) == OK
    assert _verify(verifier, _authorize(second), now=NOW + 1) == OK
    third = _challenge(verifier, now=NOW + 2)
    assert _verify(verifier, _authorize(third), now=NOW + 2) == OK
    assert verifier.tracked_nonces == 2
    assert _verify(verifier, _authorize(first, nc=2), now=NOW + 2) == STALE
    assert _verify(verifier, _authorize(second, nc=2), now=NOW + 2) == OK
    assert _verify(verifier, _authorize(second, nc=2), now=NOW + 2) == _failed(
        FailureReason.REPLAY
    )
    for step in range(3, 50):
        fresh = _challenge(verifier, now=NOW + step)
        assert _verify(verifier, _authorize(fresh), now=NOW + step) == OK
    assert verifier.tracked_nonces == 2


def test_nc_table_is_pruned_by_age() -> None:
    """Entries are dropped once their nonce must be stale, oldest first."""
    verifier = _verifier()
    assert _verify(verifier, _authorize(_challenge(verifier))) == OK
    mid = NOW + LIFETIME / 2
    assert _verify(verifier, _authorize(_challenge(verifier, now=mid)), now=mid) == OK
    assert verifier.tracked_nonces == 2
    end = NOW + LIFETIME + NONCE_CLOCK_SKEW_SECONDS + 1
    assert _verify(verifier, _authorize(_challenge(verifier, now=end)), now=end) == OK
    assert verifier.tracked_nonces == 2


def test_response_is_bound_to_the_method() -> None:
    """Credentials computed for REGISTER do not authenticate an INVITE."""
    verifier = _verifier()
    credentials = _authorize(_challenge(verifier), method="REGISTER")
    assert _verify(verifier, credentials, method="INVITE") == _failed(FailureReason.CREDENTIALS)


def test_realm_mismatch_fails() -> None:
    """Credentials for another realm are refused before any hashing."""
    verifier = _verifier()
    credentials = _authorize(_challenge(verifier))
    assert _verify(verifier, credentials, realm="tenant-b.example") == _failed(FailureReason.REALM)


@pytest.mark.parametrize("missing", digest.REQUIRED_PARAMS)
def test_missing_required_params_fail(missing: str) -> None:
    """Each of username, realm, nonce, uri, response, qop, nc and cnonce is required;
    an empty value counts as missing."""
    verifier = _verifier()
    challenge = _challenge(verifier)
    absent = _verify(verifier, _authorize(challenge, overrides={missing: None}))
    username = None if missing == "username" else USER
    assert absent == AuthResult(AuthOutcome.FAILED, username, FailureReason.MISSING_PARAM)
    if missing not in TOKEN_PARAMS:  # an empty token is a parse error, tested below
        empty = _verify(verifier, _authorize(challenge, overrides={missing: ""}))
        assert empty.reason is FailureReason.MISSING_PARAM


@pytest.mark.parametrize("algorithm", ["MD5-sess", "SHA-256-sess", "SHA-512-256", "SHA1"])
def test_unsupported_algorithms_fail(algorithm: str) -> None:
    """Only SHA-256 and MD5 are accepted."""
    verifier = _verifier()
    credentials = _authorize(_challenge(verifier), overrides={"algorithm": algorithm})
    assert _verify(verifier, credentials) == _failed(FailureReason.ALGORITHM)


def test_algorithm_defaults_to_md5_and_ignores_case() -> None:
    """An absent algorithm means MD5 (RFC 7616 §3.4) and "sha-256" means SHA-256."""
    verifier = _verifier()
    md5 = _authorize(_challenge(verifier, MD5), overrides={"algorithm": None})
    assert _verify(verifier, md5) == OK
    sha = _authorize(_challenge(verifier, SHA256), overrides={"algorithm": None})
    assert _verify(verifier, sha) == _failed(FailureReason.CREDENTIALS)
    lower = _authorize(_challenge(verifier, SHA256), overrides={"algorithm": "sha-256"})
    assert _verify(verifier, lower) == OK


def test_only_qop_auth_is_accepted() -> None:
    """qop=auth-int is refused, quoted "auth" is tolerated; a missing qop (RFC 2069
    style) is refused by test_missing_required_params_fail."""
    verifier = _verifier()
    challenge = _challenge(verifier)
    auth_int = _authorize(challenge, overrides={"qop": "auth-int"})
    assert _verify(verifier, auth_int) == _failed(FailureReason.QOP)
    quoted = _authorize(challenge, overrides={"qop": '"auth"'})
    assert quoted.params["qop"] == "auth"  # phones that quote qop are tolerated
    assert _verify(verifier, quoted) == OK


@pytest.mark.parametrize("nc", ["1", "0000000g", "000000001", "00000000"])
def test_malformed_nc_fails(nc: str) -> None:
    """nc must be eight hex digits and not zero."""
    verifier = _verifier()
    credentials = _authorize(_challenge(verifier), overrides={"nc": nc})
    assert _verify(verifier, credentials) == _failed(FailureReason.NONCE_COUNT)


# Parsing


def test_parse_unknown_scheme_is_a_distinct_result() -> None:
    """Basic (or any other scheme) is reported as unsupported, not as an error."""
    assert parse_credentials("Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==") == UnsupportedScheme("Basic")
    assert parse_credentials("Bearer abc.def") == UnsupportedScheme("Bearer")


def test_parse_scheme_and_names_are_case_insensitive() -> None:
    """ "dIgEsT" is Digest, and parameter names are lowercased; values keep their case."""
    parsed = parse_credentials('dIgEsT UserName="Alice", NC=0000000A')
    assert isinstance(parsed, Credentials)
    assert parsed.scheme == "dIgEsT"
    assert dict(parsed.params) == {"username": "Alice", "nc": "0000000A"}
    assert parsed.username == "Alice"


def test_parse_escaped_quotes_and_backslashes() -> None:
    """Backslash escapes in quoted strings are undone; commas inside quotes are text."""
    parsed = parse_credentials(r'Digest username="al\"ice\\", realm="a, b", uri="\s"')
    assert isinstance(parsed, Credentials)
    assert parsed.params["username"] == 'al"ice\\'
    assert parsed.params["realm"] == "a, b"
    assert parsed.params["uri"] == "s"


def test_parse_tolerates_lws_and_folding() -> None:
    """Spaces and tabs around '=' and ',' and folded continuation lines are allowed."""
    parsed = parse_credentials(
        ' Digest\tusername = "a" ,\r\n realm=\t"r",\n\tnonce="n", qop=auth , nc=00000001 '
    )
    assert isinstance(parsed, Credentials)
    assert dict(parsed.params) == {
        "username": "a",
        "realm": "r",
        "nonce": "n",
        "qop": "auth",
        "nc": "00000001",
    }


@pytest.mark.parametrize(
    "value",
    [
        'Digest username="abc',
        'Digest username="abc\\',
        'Digest username"abc"',
        "Digest username",
        'Digest username="a", username="b"',
        'Digest username="a", USERNAME="b"',
        "",
        "   ",
        '"Digest"',
        "Digest",
        'Digest username="a",',
        'Digest username="a" realm="b"',
        'Digest ,username="a"',
        "Digest nc=",
        "Digest uri=sip:host",
        'Digest username="a\nb"',
        'Digest username="a"\r\nrealm="b"',
        'Digest username="a\x00"',
    ],
)
def test_parse_malformed_values_are_400(value: str) -> None:
    """Unterminated quotes, missing '=', duplicates (whatever their case), empty
    values, stray or missing commas and control characters are malformed: 400."""
    with pytest.raises(DigestParseError) as caught:
        parse_credentials(value)
    assert caught.value.status_code == 400


def test_parse_limits_fail_closed() -> None:
    """Headers over the length limit or with too many parameters are 400, not parsed."""
    with pytest.raises(DigestParseError, match="too long"):
        parse_credentials("Digest " + "a" * MAX_CREDENTIALS_LENGTH)
    many = ", ".join(f"p{i}=x" for i in range(MAX_AUTH_PARAMS + 1))
    with pytest.raises(DigestParseError, match="too many"):
        parse_credentials("Digest " + many)
    parse_credentials("Digest " + ", ".join(f"p{i}=x" for i in range(MAX_AUTH_PARAMS)))


def test_parse_errors_do_not_echo_values() -> None:
    """Error messages name the parameter at most, never its value (a response or
    anything else a client sent)."""
    secret = "5ccc069c403ebaf9f0171e9517f40e41"
    for value in (
        f'Digest response="{secret}", response="{secret}"',
        f'Digest response="{secret}',
        f'Digest response="{secret}" x=y',
    ):
        with pytest.raises(DigestParseError) as caught:
            parse_credentials(value)
        assert secret not in str(caught.value)
        assert "response" in str(caught.value)
