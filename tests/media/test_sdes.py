"""SDES ``a=crypto`` parsing, vetting, offers and answers (appliance.media.sdes)."""

from __future__ import annotations

import base64
import hashlib

import pytest

from appliance.media.sdes import (
    ACCEPTED_SUITES,
    MAX_CRYPTO_LINES,
    MIN_LIFETIME,
    OFFER_ORDER,
    CryptoAttribute,
    KeyMaterial,
    SdesError,
    Suite,
    answer_for,
    choose_offered,
    new_attribute,
    offer_lines,
    parse_crypto,
    select_answer,
)


class CountingSource:
    """A deterministic random source: each call returns different bytes, and
    every request is recorded, so tests can count the keys drawn."""

    def __init__(self) -> None:
        self.requests: list[int] = []

    def __call__(self, size: int) -> bytes:
        self.requests.append(size)
        return hashlib.shake_256(len(self.requests).to_bytes(8, "big")).digest(size)


def raw_key(suite: Suite, seed: bytes = b"k") -> bytes:
    """Key and salt of the right length for ``suite``, derived from ``seed``."""
    return hashlib.shake_256(seed + suite.value.encode()).digest(suite.key_salt_length)


def b64(data: bytes, *, padded: bool = True) -> str:
    """Standard base64, with or without its ``=`` padding."""
    text = base64.b64encode(data).decode("ascii")
    return text if padded else text.rstrip("=")


def line(suite: str, key: bytes, tag: int = 1, extra: str = "", params: str = "") -> str:
    """An ``a=crypto`` value: ``tag suite inline:key<extra> <params>``."""
    return f"{tag} {suite} inline:{b64(key)}{extra}{' ' + params if params else ''}"


KEY_128 = raw_key(Suite.AES_CM_128_HMAC_SHA1_80)
KEY_128_B64 = b64(KEY_128)
GOOD_128 = line("AES_CM_128_HMAC_SHA1_80", KEY_128)


def assert_no_key(text: str, key: bytes) -> None:
    """``text`` shows ``key`` in none of the forms it could leak in."""
    for form in (b64(key), b64(key, padded=False), key.hex(), repr(key)[2:-1]):
        assert form not in text
    for part in (key[:16], key[16:]):
        if part:
            assert b64(part, padded=False)[:12] not in text
            assert part.hex() not in text


# Suites


@pytest.mark.parametrize(
    ("suite", "key", "salt", "tag", "aead"),
    [
        (Suite.AES_CM_128_HMAC_SHA1_80, 16, 14, 10, False),
        (Suite.AES_CM_128_HMAC_SHA1_32, 16, 14, 4, False),
        (Suite.AES_256_CM_HMAC_SHA1_80, 32, 14, 10, False),
        (Suite.AES_256_CM_HMAC_SHA1_32, 32, 14, 4, False),
        (Suite.AEAD_AES_128_GCM, 16, 12, 16, True),
        (Suite.AEAD_AES_256_GCM, 32, 12, 16, True),
    ],
)
def test_suite_lengths(suite: Suite, key: int, salt: int, tag: int, aead: bool) -> None:
    """Each suite's key, salt and tag lengths are those of RFC 3711/6188/7714;
    key+salt is 30 bytes for 128-bit CM, 46 for 256-bit CM, 28 and 44 for GCM."""
    assert (suite.key_length, suite.salt_length, suite.auth_tag_length) == (key, salt, tag)
    assert suite.key_salt_length == key + salt
    assert suite.aead is aead
    assert str(suite) == suite.value


def test_offer_order_is_strongest_first() -> None:
    """We offer the five suites of the product rules, strongest first, and
    accept every suite we offer plus AES_256_CM_HMAC_SHA1_32."""
    assert [s.value for s in OFFER_ORDER] == [
        "AEAD_AES_256_GCM",
        "AES_256_CM_HMAC_SHA1_80",
        "AEAD_AES_128_GCM",
        "AES_CM_128_HMAC_SHA1_80",
        "AES_CM_128_HMAC_SHA1_32",
    ]
    assert set(OFFER_ORDER) | {Suite.AES_256_CM_HMAC_SHA1_32} == ACCEPTED_SUITES


# Parsing: accepted forms


@pytest.mark.parametrize("padded", [True, False], ids=["padded", "unpadded"])
@pytest.mark.parametrize("suite", list(Suite), ids=str)
def test_every_suite_parses_with_and_without_padding(suite: Suite, padded: bool) -> None:
    """Each accepted suite parses with its key in padded or unpadded base64,
    and the key and salt are split at the suite's key length."""
    key = raw_key(suite)
    value = f"7 {suite.value} inline:{b64(key, padded=padded)}"
    attribute = parse_crypto(value)
    assert (attribute.tag, attribute.suite) == (7, suite)
    assert attribute.key == key[: suite.key_length]
    assert attribute.salt == key[suite.key_length :]
    assert attribute.key_salt == key
    assert (attribute.lifetime, attribute.session_params) == (None, ())


def test_unpadded_forms_really_differ() -> None:
    """The padding cases above are real: 256-bit CM and both GCM keys have
    padding in standard base64 (128-bit CM, 30 bytes, has none)."""
    for suite in (Suite.AES_256_CM_HMAC_SHA1_80, Suite.AEAD_AES_128_GCM, Suite.AEAD_AES_256_GCM):
        assert b64(raw_key(suite)).endswith("=")
    assert not b64(KEY_128).endswith("=")


@pytest.mark.parametrize(
    ("lifetime", "packets"),
    [
        ("2^31", 2**31),
        ("2^48", 2**48),
        ("2147483648", 2**31),
        ("281474976710656", 2**48),
        ("4294967296", 2**32),
    ],
)
def test_harmless_lifetimes_are_accepted(lifetime: str, packets: int) -> None:
    """A lifetime of 2^31 packets or more (up to 2^48), as a power or in
    decimal, is kept: we never rekey within a call, and it is that long."""
    attribute = parse_crypto(line("AES_CM_128_HMAC_SHA1_80", KEY_128, extra=f"|{lifetime}"))
    assert attribute.lifetime == packets >= MIN_LIFETIME


def test_window_size_hint_is_accepted() -> None:
    """``WSH`` (a replay window hint of at least 64) is the one session
    parameter accepted; it is kept as sent."""
    attribute = parse_crypto(GOOD_128 + " WSH=128")
    assert attribute.session_params == ("WSH=128",)
    assert parse_crypto(GOOD_128 + " WSH=64").session_params == ("WSH=64",)


@pytest.mark.parametrize(
    ("value", "tag"),
    [
        (GOOD_128, 1),
        ("999999999 AES_CM_128_HMAC_SHA1_80 inline:" + KEY_128_B64, 999_999_999),
        ("0 AES_CM_128_HMAC_SHA1_80 inline:" + KEY_128_B64, 0),
        ("01 AES_CM_128_HMAC_SHA1_80 inline:" + KEY_128_B64, 1),
        ("3\tAES_CM_128_HMAC_SHA1_80  inline:" + KEY_128_B64 + "\r\n", 3),
    ],
)
def test_tag_and_whitespace_forms(value: str, tag: int) -> None:
    """Tags of one to nine digits are read as numbers; fields may be
    separated by runs of spaces or tabs and a trailing CRLF is ignored."""
    assert parse_crypto(value).tag == tag


def test_value_round_trips() -> None:
    """:meth:`CryptoAttribute.value` writes a line that parses back to the same
    attribute, with padded base64, its lifetime and its session parameters."""
    attribute = parse_crypto(line("AEAD_AES_256_GCM", raw_key(Suite.AEAD_AES_256_GCM), 4))
    assert attribute.value().endswith("=")
    assert parse_crypto(attribute.value()) == attribute
    with_params = parse_crypto(GOOD_128.replace(KEY_128_B64, KEY_128_B64 + "|2^31") + " WSH=99")
    assert (
        with_params.value() == f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY_128_B64}|2147483648 WSH=99"
    )
    assert parse_crypto(with_params.value()) == with_params


# Parsing: refused forms, each with its reason


KEY_256_CM = raw_key(Suite.AES_256_CM_HMAC_SHA1_80)


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (line("NULL_HMAC_SHA1_80", KEY_128), "NULL suites give no confidentiality"),
        (line("NULL_HMAC_SHA1_32", KEY_128), "NULL suites give no confidentiality"),
        (line("F8_128_HMAC_SHA1_80", KEY_128), "F8 suites are not supported"),
        (line("F8_128_HMAC_SHA1_32", KEY_128), "F8 suites are not supported"),
        (line("AES_192_CM_HMAC_SHA1_80", raw_key(Suite.AES_CM_128_HMAC_SHA1_80)), "AES-192"),
        (line("AES_192_CM_HMAC_SHA1_32", KEY_128), "AES-192"),
        (line("AEAD_AES_192_GCM", KEY_128), "AES-192"),
        (line("AES_CM_128_HMAC_SHA1_80", KEY_128, extra="|1:4"), "an MKI is not supported"),
        (line("AES_CM_128_HMAC_SHA1_80", KEY_128, extra="|2^31|1:4"), "MKI"),
        (line("AES_CM_128_HMAC_SHA1_80", KEY_128, extra="|2^20|1:4"), "MKI"),
        (GOOD_128 + "|1:4;inline:" + KEY_128_B64 + "|2:4", "more than one key"),
        (GOOD_128 + ";inline:" + KEY_128_B64, "more than one key"),
        (GOOD_128 + " KDR=1", "key derivation rate (KDR)"),
        (GOOD_128 + " KDR=0", "key derivation rate (KDR)"),
        (GOOD_128 + " UNENCRYPTED_SRTP", "UNENCRYPTED_SRTP is refused"),
        (GOOD_128 + " UNENCRYPTED_SRTCP", "UNENCRYPTED_SRTCP is refused"),
        (GOOD_128 + " UNAUTHENTICATED_SRTP", "UNAUTHENTICATED_SRTP is refused"),
        (GOOD_128 + " WSH=128 UNENCRYPTED_SRTP", "UNENCRYPTED_SRTP is refused"),
        (GOOD_128 + " FEC_ORDER=FEC_SRTP", "FEC parameters"),
        (GOOD_128 + " FEC_KEY=inline:" + KEY_128_B64, "FEC parameters"),
        (GOOD_128 + " FOO=1", "unknown session parameter"),
        (GOOD_128 + " unencrypted_srtp", "unknown session parameter"),
        (GOOD_128 + " WSH=32", "WSH"),
        (GOOD_128 + " WSH=x", "WSH"),
        (GOOD_128 + " WSH=64 WSH=64", "repeated session parameter"),
        (GOOD_128 + " WSH=64" * 9, "too many session parameters"),
        (line("AES_CM_128_HMAC_SHA1_80", KEY_128, extra="|2^30"), "below 2^31"),
        (line("AES_CM_128_HMAC_SHA1_80", KEY_128, extra="|2^20"), "below 2^31"),
        (line("AES_CM_128_HMAC_SHA1_80", KEY_128, extra="|1048576"), "below 2^31"),
        (line("AES_CM_128_HMAC_SHA1_80", KEY_128, extra="|2^49"), "above the SRTP maximum"),
        (line("AES_CM_128_HMAC_SHA1_80", KEY_128, extra="|281474976710657"), "above the SRTP"),
        (line("AES_CM_128_HMAC_SHA1_80", KEY_128, extra="|2^x"), "malformed key lifetime"),
        (line("AES_CM_128_HMAC_SHA1_80", KEY_128, extra="|"), "malformed key lifetime"),
        (line("AES_CM_128_HMAC_SHA1_80", KEY_128, extra="|2^31|"), "malformed key parameters"),
        (
            line("AES_CM_128_HMAC_SHA1_80", KEY_128[:29]),
            "29 bytes; AES_CM_128_HMAC_SHA1_80 needs 30",
        ),
        (line("AES_CM_128_HMAC_SHA1_80", KEY_128 + b"x"), "31 bytes"),
        (line("AES_256_CM_HMAC_SHA1_80", KEY_128), "30 bytes; AES_256_CM_HMAC_SHA1_80 needs 46"),
        (line("AES_CM_128_HMAC_SHA1_80", KEY_256_CM), "46 bytes"),
        (line("AEAD_AES_128_GCM", KEY_128), "30 bytes; AEAD_AES_128_GCM needs 28"),
        (line("AEAD_AES_256_GCM", KEY_256_CM), "46 bytes; AEAD_AES_256_GCM needs 44"),
        ("1 AES_CM_128_HMAC_SHA1_80 inline:" + KEY_128_B64[:-1] + "!", "key is not base64"),
        ("1 AES_CM_128_HMAC_SHA1_80 inline:" + KEY_128_B64[:-3], "key is not base64"),
        (
            "1 AES_CM_128_HMAC_SHA1_80 inline:" + KEY_128_B64[:5] + "-" + KEY_128_B64[6:],
            "not base64",
        ),
        (
            "1 AES_CM_128_HMAC_SHA1_80 inline:" + KEY_128_B64[:20] + "=" + KEY_128_B64[21:],
            "base64",
        ),
        ("1 AES_CM_128_HMAC_SHA1_80 inline:" + KEY_128_B64 + "===", "key is not base64"),
        ("1 AES_CM_128_HMAC_SHA1_80 inline:", "key is not base64"),
        ("x " + GOOD_128[2:], "crypto tag must be one to nine digits"),
        ("-1 " + GOOD_128[2:], "crypto tag"),
        ("1234567890 " + GOOD_128[2:], "crypto tag"),
        (line("AES_CM_128_HMAC_SHA1_81", KEY_128), "unknown crypto suite"),
        (line("aes_cm_128_hmac_sha1_80", KEY_128), "unknown crypto suite"),
        (f"1 {KEY_128_B64} inline:{KEY_128_B64}", "unknown crypto suite"),
        ("1 AES_CM_128_HMAC_SHA1_80 uri:" + KEY_128_B64, "key method must be inline"),
        ("1 AES_CM_128_HMAC_SHA1_80 " + KEY_128_B64, "key method must be inline"),
        ("1 AES_CM_128_HMAC_SHA1_80", "needs a tag, a suite and key parameters"),
        (f"1 inline:{KEY_128_B64}", "needs a tag, a suite and key parameters"),
        ("", "needs a tag"),
        (GOOD_128 + " " * 500, "crypto attribute too long"),
    ],
)
def test_refused_forms_name_their_reason(value: str, reason: str) -> None:
    """Every refused form raises :class:`SdesError` whose reason says why, and
    the reason quotes no key material (not even a key put in the wrong field)."""
    with pytest.raises(SdesError) as caught:
        parse_crypto(value)
    assert reason in caught.value.reason
    assert str(caught.value) == caught.value.reason
    for key in (KEY_128, KEY_256_CM):
        assert_no_key(caught.value.reason, key)


# Key material and repr


def test_repr_and_str_never_show_keys() -> None:
    """``repr`` and ``str`` of a parsed attribute, a generated one and key
    material name the tag and suite but never the key, in any encoding."""
    parsed = parse_crypto(GOOD_128)
    material = KeyMaterial.generate(Suite.AEAD_AES_256_GCM)
    made = new_attribute(3, Suite.AES_256_CM_HMAC_SHA1_80)
    for obj, key in (
        (parsed, KEY_128),
        (material, material.key + material.salt),
        (made, made.key_salt),
    ):
        for text in (repr(obj), str(obj), f"{obj}", f"{obj!r}", repr([obj])):
            assert_no_key(text, key)
            assert KEY_128_B64 not in text
    assert "AES_CM_128_HMAC_SHA1_80" in repr(parsed)
    assert "tag=1" in repr(parsed)


@pytest.mark.parametrize("suite", list(Suite), ids=str)
def test_key_material_is_drawn_fresh_with_the_right_length(suite: Suite) -> None:
    """Key material takes key+salt bytes from the injected source in one call,
    split at the key length; each call draws new bytes."""
    source = CountingSource()
    first = KeyMaterial.generate(suite, source)
    second = KeyMaterial.generate(suite, source)
    assert source.requests == [suite.key_salt_length] * 2
    assert (len(first.key), len(first.salt)) == (suite.key_length, suite.salt_length)
    assert first.key + first.salt != second.key + second.salt


def test_a_short_random_source_is_refused() -> None:
    """A random source that returns the wrong number of bytes is an error,
    never a short key."""
    with pytest.raises(ValueError, match="wrong number of bytes"):
        KeyMaterial.generate(Suite.AES_CM_128_HMAC_SHA1_80, lambda n: b"\x01" * (n - 1))


def test_attributes_are_validated() -> None:
    """An attribute with a tag out of range or key/salt of the wrong length
    cannot be built, so it cannot be sent."""
    with pytest.raises(ValueError, match="tag"):
        CryptoAttribute(10**9, Suite.AES_CM_128_HMAC_SHA1_80, KEY_128[:16], KEY_128[16:])
    with pytest.raises(ValueError, match="wrong length"):
        CryptoAttribute(1, Suite.AES_CM_128_HMAC_SHA1_80, KEY_128[:15], KEY_128[16:])
    with pytest.raises(ValueError, match="wrong length"):
        KeyMaterial(Suite.AEAD_AES_128_GCM, KEY_128[:16], KEY_128[16:])


# Offers


def test_offer_has_unique_tags_strongest_first_and_fresh_keys() -> None:
    """Our offer has tags 1..5 in :data:`OFFER_ORDER`, one fresh draw per line,
    and each value parses back to the attribute it came with."""
    source = CountingSource()
    offer = offer_lines(source)
    assert [a.tag for a, _ in offer] == [1, 2, 3, 4, 5]
    assert [a.suite for a, _ in offer] == list(OFFER_ORDER)
    assert source.requests == [s.key_salt_length for s in OFFER_ORDER]
    for attribute, value in offer:
        assert parse_crypto(value) == attribute
    assert len({a.key_salt for a, _ in offer}) == len(offer)


def test_every_offer_draws_new_keys() -> None:
    """Two offers (two legs, or a re-INVITE) from the same source share no key."""
    source = CountingSource()
    first = {a.key_salt for a, _ in offer_lines(source)}
    second = {a.key_salt for a, _ in offer_lines(source)}
    assert first.isdisjoint(second)
    assert len(source.requests) == 2 * len(OFFER_ORDER)


def test_offers_from_the_real_source_never_share_key_bytes() -> None:
    """With the default (``secrets``) source, a hundred offers share no key
    and no salt, and no line ever reappears."""
    keys: set[bytes] = set()
    salts: set[bytes] = set()
    values: set[str] = set()
    for _ in range(100):
        for attribute, value in offer_lines():
            assert attribute.key not in keys and attribute.salt not in salts
            keys.add(attribute.key)
            salts.add(attribute.salt)
            values.add(value)
    assert len(values) == 100 * len(OFFER_ORDER)


def test_offer_suites_can_be_narrowed() -> None:
    """A leg may be offered fewer suites (duplicates collapse); tags still run
    1, 2, ...; an empty list is an error, not an SRTP offer without keys."""
    offer = offer_lines(
        CountingSource(), [Suite.AES_CM_128_HMAC_SHA1_80] * 2 + [Suite.AEAD_AES_128_GCM]
    )
    assert [(a.tag, a.suite) for a, _ in offer] == [
        (1, Suite.AES_CM_128_HMAC_SHA1_80),
        (2, Suite.AEAD_AES_128_GCM),
    ]
    with pytest.raises(ValueError, match="at least one suite"):
        offer_lines(CountingSource(), [])


# Answers to a peer's offer


BARESIP_LINE = line("AES_CM_128_HMAC_SHA1_80", KEY_128, tag=1)


def test_answer_echoes_the_tag_of_the_first_acceptable_line() -> None:
    """Refused lines are skipped; the first acceptable one in the offerer's
    order wins, even when a stronger one follows; our line carries its tag and
    suite with a fresh key of our own."""
    offered = [
        line("NULL_HMAC_SHA1_80", KEY_128, tag=1),
        line("F8_128_HMAC_SHA1_80", KEY_128, tag=2),
        line("AES_CM_128_HMAC_SHA1_80", KEY_128, tag=7, extra="|1:4"),
        line("AES_CM_128_HMAC_SHA1_32", raw_key(Suite.AES_CM_128_HMAC_SHA1_32), tag=9),
        line("AEAD_AES_256_GCM", raw_key(Suite.AEAD_AES_256_GCM), tag=3),
    ]
    source = CountingSource()
    answer = answer_for(offered, source)
    assert answer is not None
    theirs, ours, value = answer
    assert (theirs.tag, theirs.suite) == (9, Suite.AES_CM_128_HMAC_SHA1_32)
    assert (ours.tag, ours.suite) == (9, Suite.AES_CM_128_HMAC_SHA1_32)
    assert theirs.key_salt == raw_key(Suite.AES_CM_128_HMAC_SHA1_32)
    assert ours.key_salt != theirs.key_salt
    assert source.requests == [30]
    assert parse_crypto(value) == ours
    assert value.startswith("9 AES_CM_128_HMAC_SHA1_32 inline:")
    assert b64(theirs.key_salt) not in value


def test_answer_to_a_baresip_offer() -> None:
    """baresip offers one AES_CM_128_HMAC_SHA1_80 line, tag 1: we answer tag 1."""
    answer = answer_for([BARESIP_LINE], CountingSource())
    assert answer is not None
    assert answer[1].tag == 1 and answer[1].suite is Suite.AES_CM_128_HMAC_SHA1_80


def test_every_answer_draws_a_new_key() -> None:
    """Answering the same offer twice (two calls, or a re-INVITE) gives two
    different keys, neither of them the offerer's."""
    source = CountingSource()
    first, second = answer_for([BARESIP_LINE], source), answer_for([BARESIP_LINE], source)
    assert first is not None and second is not None
    assert first[1].key_salt != second[1].key_salt
    assert KEY_128 not in (first[1].key_salt, second[1].key_salt)


@pytest.mark.parametrize(
    "offered",
    [
        [],
        [line("NULL_HMAC_SHA1_80", KEY_128)],
        [line("AES_CM_128_HMAC_SHA1_80", KEY_128, extra="|1:4"), GOOD_128 + " KDR=2"],
        [GOOD_128, GOOD_128.replace("HMAC_SHA1_80", "HMAC_SHA1_32")],
        [GOOD_128, "01" + GOOD_128[1:]],
        [line("AES_CM_128_HMAC_SHA1_80", KEY_128, tag=n) for n in range(MAX_CRYPTO_LINES + 1)],
    ],
    ids=["none", "null", "mki-kdr", "duplicate-tag", "duplicate-tag-01", "too-many"],
)
def test_no_answer_when_nothing_is_acceptable(offered: list[str]) -> None:
    """No line acceptable, an offer that repeats a tag (our answer could not
    say which key it took), or too many lines: no SRTP answer, no key drawn."""
    source = CountingSource()
    assert answer_for(offered, source) is None
    assert choose_offered(offered) is None
    assert source.requests == []


def test_a_random_source_repeating_the_peer_key_is_refused() -> None:
    """Our key is never the offerer's: a source that returns it is an error."""
    with pytest.raises(ValueError, match="peer's key"):
        answer_for([BARESIP_LINE], lambda n: KEY_128[:n])


# Answers to our offer


def our_offer() -> list[CryptoAttribute]:
    """Our default offer made with a deterministic source."""
    return [attribute for attribute, _ in offer_lines(CountingSource())]


def test_select_answer_accepts_a_matching_line() -> None:
    """An answer with one line naming one of our tags with that tag's suite
    gives the peer's key; our key is the offer line with that tag."""
    offer = our_offer()
    reply = line("AES_CM_128_HMAC_SHA1_80", KEY_128, tag=4)
    theirs = select_answer(offer, [reply])
    assert theirs is not None
    assert (theirs.tag, theirs.suite, theirs.key_salt) == (
        4,
        Suite.AES_CM_128_HMAC_SHA1_80,
        KEY_128,
    )
    assert next(a for a in offer if a.tag == 4).suite is theirs.suite


@pytest.mark.parametrize(
    "reply",
    [
        [],
        [line("AES_CM_128_HMAC_SHA1_80", KEY_128, tag=6)],
        [line("AES_CM_128_HMAC_SHA1_80", KEY_128, tag=1)],
        [line("AES_CM_128_HMAC_SHA1_80", KEY_128, tag=4, extra="|1:4")],
        [line("AES_CM_128_HMAC_SHA1_80", KEY_128, tag=4, params="UNENCRYPTED_SRTP")],
        [
            line("AES_CM_128_HMAC_SHA1_80", KEY_128, tag=4),
            line("AES_CM_128_HMAC_SHA1_80", KEY_128, tag=4),
        ],
        ["4 AES_CM_128_HMAC_SHA1_80 inline:!!!"],
    ],
    ids=["none", "unknown-tag", "suite-mismatch", "mki", "unencrypted", "two-lines", "bad-base64"],
)
def test_select_answer_refuses_mismatches(reply: list[str]) -> None:
    """No line, a tag we did not offer, another suite than the tag's, a
    refused parameter, more than one line or a malformed line: refused."""
    assert select_answer(our_offer(), reply) is None


def test_select_answer_refuses_our_own_key_echoed() -> None:
    """A peer answering with the very key we offered would share one keystream
    in both directions: refused."""
    offer = our_offer()
    assert select_answer(offer, [offer[3].value()]) is None
