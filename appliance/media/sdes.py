"""SDES key exchange (RFC 4568 ``a=crypto``) for SRTP, sans-I/O.

Design choices, and why:

- Every leg and every direction gets fresh keys from ``random_bytes``
  (:func:`secrets.token_bytes` unless a test injects a source): our offer
  lines, our answer line and each re-INVITE draw new key material, and a
  peer's key is only ever used to unprotect what that peer sends. Nothing here
  can put a received key into a line we send; :func:`answer_for` even refuses
  a random source that hands back the peer's key.
- Accepted suites (:data:`ACCEPTED_SUITES`): AES_CM_128_HMAC_SHA1_80/32
  (RFC 4568), AES_256_CM_HMAC_SHA1_80/32 (RFC 6188) and AEAD_AES_128_GCM /
  AEAD_AES_256_GCM (RFC 7714). NULL and F8 suites, AES-192 and anything
  unknown are refused: NULL gives no confidentiality, F8 and AES-192 have no
  implementation in the relay, and an unknown name cannot be keyed.
- Our offer lists :data:`OFFER_ORDER`, strongest first, as the issue asks:
  256-bit keys before 128-bit ones, and at each key size AEAD (RFC 7714:
  encryption and a full 128-bit tag in one pass) before CM with HMAC-SHA1;
  80-bit HMAC tags before 32-bit ones. Interop does not suffer: answerers pick
  any line they support (RFC 4568 §6.1), and every SDES phone we know of
  supports AES_CM_128_HMAC_SHA1_80 (baresip offers it and, as callee, takes
  AEAD_AES_256_GCM). AES_256_CM_HMAC_SHA1_32 is accepted from peers but not
  offered: it is no stronger than its 80-bit sibling and nobody needs it.
- As answerer we take the first offered line whose suite and parameters we
  accept, in the offerer's order (RFC 4568 §6.1 lets the answerer choose; the
  offerer's order is its preference, and honouring it keeps a call's suite
  predictable). An offer that repeats a tag is refused as a whole: the tag in
  our answer would not say which key we accepted.
- Refused parameters, each for a reason:

  * an MKI (``|n:m``) or several keys: the relay keys one context per
    direction and does no MKI (pylibsrtp 1.0 cannot);
  * a key lifetime below 2^31 packets: we never rekey within a call, so we
    would break the peer's limit; 2^31 packets (≈ 1.4 years of 20 ms audio) or
    more, up to the SRTP maximum of 2^48, or no lifetime at all, is harmless
    and accepted, in decimal or ``2^n`` form;
  * ``KDR``: no key derivation rate other than the default (derive once);
  * ``UNENCRYPTED_SRTP``, ``UNENCRYPTED_SRTCP``, ``UNAUTHENTICATED_SRTP``:
    each switches off half of what SRTP is for;
  * ``FEC_ORDER``, ``FEC_KEY`` and any unknown session parameter: an answerer
    must not accept an attribute whose parameters it does not honour. Only
    ``WSH`` (a replay window size hint, RFC 4568 §6.3.8) is accepted and
    ignored.

- Keys are accepted with or without base64 padding (implementations differ),
  and key plus salt must have exactly the suite's length. We send padded
  standard base64 (RFC 4648 §4, which RFC 4568 names).

Nothing here logs. :class:`CryptoAttribute` and :class:`KeyMaterial` leave
their keys out of ``repr``, and no :class:`SdesError` reason quotes any part
of a line (a garbled line can carry its key anywhere): reasons name the
problem, a known suite name at most.
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType


class Suite(StrEnum):
    """An SRTP crypto suite we can key; the value is its SDP name."""

    AES_CM_128_HMAC_SHA1_80 = "AES_CM_128_HMAC_SHA1_80"
    AES_CM_128_HMAC_SHA1_32 = "AES_CM_128_HMAC_SHA1_32"
    AES_256_CM_HMAC_SHA1_80 = "AES_256_CM_HMAC_SHA1_80"
    AES_256_CM_HMAC_SHA1_32 = "AES_256_CM_HMAC_SHA1_32"
    AEAD_AES_128_GCM = "AEAD_AES_128_GCM"
    AEAD_AES_256_GCM = "AEAD_AES_256_GCM"

    @property
    def key_length(self) -> int:
        """Master key length in bytes."""
        return _SPECS[self][0]

    @property
    def salt_length(self) -> int:
        """Master salt length in bytes (112 bits for CM, 96 bits for GCM)."""
        return _SPECS[self][1]

    @property
    def key_salt_length(self) -> int:
        """Length of the decoded ``inline:`` value: key then salt."""
        return self.key_length + self.salt_length

    @property
    def auth_tag_length(self) -> int:
        """Authentication tag on each SRTP packet, in bytes."""
        return _SPECS[self][2]

    @property
    def aead(self) -> bool:
        """True for the RFC 7714 GCM suites (encryption and tag in one pass)."""
        return _SPECS[self][3]


#: key length, salt length, SRTP auth tag length (bytes), AEAD.
_SPECS: Mapping[Suite, tuple[int, int, int, bool]] = MappingProxyType(
    {
        Suite.AES_CM_128_HMAC_SHA1_80: (16, 14, 10, False),
        Suite.AES_CM_128_HMAC_SHA1_32: (16, 14, 4, False),
        Suite.AES_256_CM_HMAC_SHA1_80: (32, 14, 10, False),
        Suite.AES_256_CM_HMAC_SHA1_32: (32, 14, 4, False),
        Suite.AEAD_AES_128_GCM: (16, 12, 16, True),
        Suite.AEAD_AES_256_GCM: (32, 12, 16, True),
    }
)

#: What we offer, strongest first (see the module docstring for the order).
OFFER_ORDER: tuple[Suite, ...] = (
    Suite.AEAD_AES_256_GCM,
    Suite.AES_256_CM_HMAC_SHA1_80,
    Suite.AEAD_AES_128_GCM,
    Suite.AES_CM_128_HMAC_SHA1_80,
    Suite.AES_CM_128_HMAC_SHA1_32,
)
#: Every suite accepted in a peer's offer or answer.
ACCEPTED_SUITES: frozenset[Suite] = frozenset(Suite)

#: Known suite names refused on purpose, with why (no key material: our text).
REFUSED_SUITES: Mapping[str, str] = MappingProxyType(
    {
        "NULL_HMAC_SHA1_80": "NULL suites give no confidentiality",
        "NULL_HMAC_SHA1_32": "NULL suites give no confidentiality",
        "F8_128_HMAC_SHA1_80": "F8 suites are not supported",
        "F8_128_HMAC_SHA1_32": "F8 suites are not supported",
        "AES_192_CM_HMAC_SHA1_80": "AES-192 suites are not supported",
        "AES_192_CM_HMAC_SHA1_32": "AES-192 suites are not supported",
        "AEAD_AES_192_GCM": "AES-192 suites are not supported",
    }
)

#: The shortest key lifetime accepted, in packets (we never rekey in a call).
MIN_LIFETIME = 2**31
#: The longest lifetime any SRTP suite allows (RFC 3711 §9.2, RFC 7714 §14.2).
MAX_LIFETIME = 2**48
#: The longest ``a=crypto`` value read; past it the line is refused unread.
MAX_CRYPTO_LENGTH = 512
#: The most ``a=crypto`` lines read from one media description.
MAX_CRYPTO_LINES = 32
#: The most session parameters on one line.
MAX_SESSION_PARAMS = 8
#: RFC 4568 §6.3.8: a window size hint is at least 64.
MIN_WSH = 64
_REFUSED_PARAMS: Mapping[str, str] = MappingProxyType(
    {
        "KDR": "a key derivation rate (KDR) is not supported",
        "UNENCRYPTED_SRTP": "UNENCRYPTED_SRTP is refused",
        "UNENCRYPTED_SRTCP": "UNENCRYPTED_SRTCP is refused",
        "UNAUTHENTICATED_SRTP": "UNAUTHENTICATED_SRTP is refused",
        "FEC_ORDER": "FEC parameters are not supported",
        "FEC_KEY": "FEC parameters are not supported",
    }
)

_TAG_RE = re.compile(r"[0-9]{1,9}")
_SPLIT_RE = re.compile(r"[ \t]+")
_BASE64_RE = re.compile(r"[A-Za-z0-9+/]+={0,2}")
_LIFETIME_RE = re.compile(r"(2\^)?([0-9]{1,15})")
_WSH_RE = re.compile(r"WSH=([0-9]{2,9})")
_PARAM_NAME_RE = re.compile(r"[A-Z_]{1,32}(?==|\Z)")

#: A source of random bytes: ``random_bytes(n)`` returns ``n`` bytes.
RandomBytes = Callable[[int], bytes]


class SdesError(ValueError):
    """An ``a=crypto`` line we refuse; ``reason`` says why without quoting it."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class KeyMaterial:
    """A master key and salt for one suite, one leg and one direction."""

    suite: Suite
    key: bytes = field(repr=False)
    salt: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if len(self.key) != self.suite.key_length or len(self.salt) != self.suite.salt_length:
            raise ValueError(f"key or salt of the wrong length for {self.suite}")

    @classmethod
    def generate(
        cls, suite: Suite, random_bytes: RandomBytes = secrets.token_bytes
    ) -> KeyMaterial:
        """Fresh key and salt for ``suite``, drawn in one call to ``random_bytes``."""
        raw = random_bytes(suite.key_salt_length)
        if len(raw) != suite.key_salt_length:
            raise ValueError("random source returned the wrong number of bytes")
        return cls(suite, raw[: suite.key_length], raw[suite.key_length :])


@dataclass(frozen=True)
class CryptoAttribute:
    """One ``a=crypto`` line: its tag, suite, key and salt.

    ``lifetime`` is the line's key lifetime in packets (``None`` when absent),
    ``session_params`` the accepted session parameters as sent (only ``WSH``).
    The key and salt are left out of ``repr``; :meth:`value` is the only way
    they are turned back into text.
    """

    tag: int
    suite: Suite
    key: bytes = field(repr=False)
    salt: bytes = field(repr=False)
    lifetime: int | None = None
    session_params: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not 0 <= self.tag <= 999_999_999:
            raise ValueError("a crypto tag has one to nine digits")
        KeyMaterial(self.suite, self.key, self.salt)

    @property
    def key_salt(self) -> bytes:
        """Key then salt: the master key input SRTP libraries take."""
        return self.key + self.salt

    def value(self) -> str:
        """The ``a=crypto`` value (after ``a=crypto:``), carrying the key.

        Only for the SDP we send on a TLS-signalled leg; never for logs.
        """
        inline = base64.b64encode(self.key_salt).decode("ascii")
        params = "".join(" " + p for p in self.session_params)
        lifetime = "" if self.lifetime is None else f"|{self.lifetime}"
        return f"{self.tag} {self.suite.value} inline:{inline}{lifetime}{params}"


def parse_crypto(value: str) -> CryptoAttribute:
    """Parse and vet one ``a=crypto`` value (the text after ``a=crypto:``).

    Grammar (RFC 4568 §9.1): ``tag SP suite SP key-params *(SP session-param)``
    with ``key-params = "inline:" key-salt ["|" lifetime] ["|" mki]``.
    Raises :class:`SdesError` for anything we do not accept (module docstring).
    """
    if len(value) > MAX_CRYPTO_LENGTH:
        raise SdesError("crypto attribute too long")
    fields = _SPLIT_RE.split(value.strip(" \t\r\n"))
    if len(fields) < 3:
        raise SdesError("crypto attribute needs a tag, a suite and key parameters")
    tag_text, suite_name, key_params, *params = fields
    if not _TAG_RE.fullmatch(tag_text):
        raise SdesError("crypto tag must be one to nine digits")
    suite = _suite(suite_name)
    if len(params) > MAX_SESSION_PARAMS:
        raise SdesError("too many session parameters")
    key_salt, lifetime = _key_params(key_params, suite)
    return CryptoAttribute(
        int(tag_text),
        suite,
        key_salt[: suite.key_length],
        key_salt[suite.key_length :],
        lifetime,
        _session_params(params),
    )


def _suite(name: str) -> Suite:
    if name in REFUSED_SUITES:
        raise SdesError(f"{REFUSED_SUITES[name]} ({name})")
    try:
        return Suite(name)
    except ValueError:
        raise SdesError("unknown crypto suite") from None


def _key_params(text: str, suite: Suite) -> tuple[bytes, int | None]:
    """The decoded key and salt, and the lifetime, of ``inline:...``."""
    if ";" in text:
        raise SdesError("more than one key (keys without an MKI cannot be told apart)")
    method, colon, info = text.partition(":")
    if not colon or method != "inline":
        raise SdesError("key method must be inline")
    inline, *extra = info.split("|")
    if any(":" in part for part in extra):
        raise SdesError("an MKI is not supported")
    if len(extra) > 1:
        raise SdesError("malformed key parameters")
    lifetime = _lifetime(extra[0]) if extra else None
    if not _BASE64_RE.fullmatch(inline) or len(inline) % 4 == 1:
        raise SdesError("key is not base64")
    try:
        key_salt = base64.b64decode(inline + "=" * (-len(inline) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise SdesError("key is not base64") from None
    if len(key_salt) != suite.key_salt_length:
        raise SdesError(
            f"key and salt are {len(key_salt)} bytes; {suite.value} needs {suite.key_salt_length}"
        )
    return key_salt, lifetime


def _lifetime(text: str) -> int:
    match = _LIFETIME_RE.fullmatch(text)
    if match is None:
        raise SdesError("malformed key lifetime")
    power, digits = match.groups()
    if power:
        exponent = int(digits)
        if exponent > 48:
            raise SdesError("key lifetime above the SRTP maximum of 2^48")
        lifetime = 1 << exponent
    else:
        lifetime = int(digits)
    if lifetime < MIN_LIFETIME:
        raise SdesError("key lifetime below 2^31 packets (we do not rekey)")
    if lifetime > MAX_LIFETIME:
        raise SdesError("key lifetime above the SRTP maximum of 2^48")
    return lifetime


def _session_params(params: Sequence[str]) -> tuple[str, ...]:
    seen: set[str] = set()
    for param in params:
        named = _PARAM_NAME_RE.match(param)
        name = named.group() if named else ""
        if name in _REFUSED_PARAMS:
            raise SdesError(_REFUSED_PARAMS[name])
        if name != "WSH":
            raise SdesError("unknown session parameter")
        if name in seen:
            raise SdesError("repeated session parameter")
        seen.add(name)
        wsh = _WSH_RE.fullmatch(param)
        if wsh is None or int(wsh.group(1)) < MIN_WSH:
            raise SdesError("malformed WSH (window size hint of at least 64)")
    return tuple(params)


def new_attribute(
    tag: int, suite: Suite, random_bytes: RandomBytes = secrets.token_bytes
) -> CryptoAttribute:
    """Our own line: ``tag``, ``suite`` and freshly drawn key material."""
    material = KeyMaterial.generate(suite, random_bytes)
    return CryptoAttribute(tag, suite, material.key, material.salt)


def offer_lines(
    random_bytes: RandomBytes = secrets.token_bytes, suites: Iterable[Suite] = OFFER_ORDER
) -> list[tuple[CryptoAttribute, str]]:
    """Our offer: one line per suite, tags 1, 2, 3..., each with a fresh key.

    Returns each attribute (keep it: it keys what we send, and checks the
    answer) with its ``a=crypto`` value. Call once per leg and per offer.
    """
    lines = []
    for tag, suite in enumerate(dict.fromkeys(suites), start=1):
        attribute = new_attribute(tag, suite, random_bytes)
        lines.append((attribute, attribute.value()))
    if not lines:
        raise ValueError("an SRTP offer needs at least one suite")
    return lines


def choose_offered(offered: Sequence[str]) -> CryptoAttribute | None:
    """The first offered line we accept, in the offerer's order, or ``None``.

    ``None`` also when the offer repeats a tag or has too many lines. Lines we
    refuse are skipped: the offerer listed alternatives, any one will do.
    """
    if len(offered) > MAX_CRYPTO_LINES:
        return None
    tags = [_SPLIT_RE.split(line.strip(" \t\r\n"), 1)[0] for line in offered]
    if len({int(t) if _TAG_RE.fullmatch(t) else t for t in tags}) != len(tags):
        return None
    for line in offered:
        try:
            return parse_crypto(line)
        except SdesError:
            continue
    return None


def answer_for(
    offered: Sequence[str], random_bytes: RandomBytes = secrets.token_bytes
) -> tuple[CryptoAttribute, CryptoAttribute, str] | None:
    """Answer an offer's ``a=crypto`` values (RFC 4568 §6.1).

    Returns the offer line we accepted (the peer's key: it unprotects what the
    peer sends), our own line with the same tag and suite and a fresh key (it
    protects what we send) and our line's ``a=crypto`` value: the answer's one
    and only crypto line. ``None`` when no offered line is acceptable.
    """
    theirs = choose_offered(offered)
    if theirs is None:
        return None
    ours = new_attribute(theirs.tag, theirs.suite, random_bytes)
    if secrets.compare_digest(ours.key_salt, theirs.key_salt):
        raise ValueError("random source repeated the peer's key")
    return theirs, ours, ours.value()


def select_answer(
    our_offer: Sequence[CryptoAttribute], their_answer: Sequence[str]
) -> CryptoAttribute | None:
    """The peer's key from an answer to our offer, or ``None`` if unacceptable.

    The answer must carry exactly one line, acceptable on its own, whose tag
    names one of our offer's lines and whose suite is that line's suite. Our
    key for the leg is then the offer line with that tag.
    """
    if len(their_answer) != 1:
        return None
    try:
        theirs = parse_crypto(their_answer[0])
    except SdesError:
        return None
    for ours in our_offer:
        if ours.tag == theirs.tag:
            if ours.suite is not theirs.suite:
                return None
            # A peer that echoes our key back would have both directions share
            # one keystream: refused like any other unusable answer.
            if secrets.compare_digest(ours.key_salt, theirs.key_salt):
                return None
            return theirs
    return None
