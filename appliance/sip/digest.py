"""SIP Digest authentication (RFC 3261 §22, RFC 7616, RFC 8760), sans-I/O.

Design choices, and why:

- Only HA1 values (``H(username:realm:password)``, one per algorithm) are
  stored and handed to :meth:`DigestVerifier.verify`; no password reaches this
  module after provisioning. SHA-256 is offered before MD5 (RFC 8760 §2.4), and
  only ``qop=auth`` is accepted: RFC 2069 responses without ``qop`` have no
  client nonce or counter and are trivially replayable, ``auth-int`` would need
  the body here, and ``-sess`` variants buy nothing for SIP.
- Nonces are stateless: issue time, a random salt and an HMAC-SHA256 over
  them, the source IP and the realm. A flood of unauthenticated requests, each
  of which earns a challenge, therefore costs no memory, a forged nonce costs
  one HMAC to refuse, and a nonce captured on one address is useless from
  another. Genuine but old nonces are *stale*, which asks the phone to retry
  without prompting anyone (RFC 7616 §3.3).
- An unknown user is verified against a random dummy HA1 through the same code
  path as a known one (same hashes, same comparison) and yields a result equal
  to a wrong password's, so a scanner cannot enumerate extensions by the answer
  or its timing.
- Replays are caught by remembering, per nonce, the highest ``nc`` that
  verified. The table is updated only after the response checks out (so
  attackers cannot fill it with garbage), is pruned by age (a nonce older than
  its lifetime is stale anyway) and is capped: when full it fails closed by
  answering *stale* rather than growing without bound or forgetting a counter.

Nothing here logs, and no exception message carries a response, HA1 or
password.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import re
import secrets
import struct
from collections.abc import Callable, Mapping, Sequence
from enum import Enum
from hmac import compare_digest
from types import MappingProxyType
from typing import NamedTuple, NoReturn

SHA256 = "SHA-256"
MD5 = "MD5"
#: Supported algorithms in order of preference: challenges are sent in this order.
ALGORITHMS: tuple[str, ...] = (SHA256, MD5)
QOP_AUTH = "auth"
REQUIRED_PARAMS = ("username", "realm", "nonce", "uri", "response", "qop", "nc", "cnonce")

#: Nonces younger than this many seconds past the verifier's clock are still
#: accepted (a clock stepped back by NTP); further in the future they are forged.
NONCE_CLOCK_SKEW_SECONDS = 5.0
#: Shortest nonce key accepted: a full SHA-256 block of secret.
MIN_NONCE_KEY_BYTES = 32
#: Default cap on nonces whose ``nc`` is remembered; past it verification fails closed.
MAX_TRACKED_NONCES = 20_000
#: Limits on what the parser will read before answering 400.
MAX_CREDENTIALS_LENGTH = 4096
MAX_AUTH_PARAMS = 32

#: Protocol algorithm names mapped to their :mod:`hashlib` constructors.
_HASHES: Mapping[str, Callable[[bytes], hashlib._Hash]] = {
    SHA256: hashlib.sha256,
    MD5: hashlib.md5,
}
#: BLAKE2b personalization (16 bytes at most) for nonce MACs.
_NONCE_PERSON = b"telemancer nonce"
_BLAKE2B_KEY_BYTES = 64
_TIME_BYTES, _SALT_BYTES, _MAC_BYTES = 8, 8, 32
_NONCE_CHARS = 4 * (_TIME_BYTES + _SALT_BYTES + _MAC_BYTES) // 3
_NONCE_RE = re.compile(f"[A-Za-z0-9_-]{{{_NONCE_CHARS}}}")
_NC_RE = re.compile(r"[0-9A-Fa-f]{8}")
_TOKEN_RE = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+")
_FOLD_RE = re.compile(r"\r?\n[ \t]+")
_WS = " \t"
#: A quoted-string with backslash escapes; no CR, LF or other control characters.
_ESCAPE_RE = re.compile(r"\\(.)", re.DOTALL)
_NAME_RE = re.compile(r"[ \t]*([A-Za-z0-9\-.!%*_+`'~]+)")
#: A quoted-string's content: backslash escapes, no CR, LF or other control
#: characters. Written as an unrolled loop, which the regex engine runs far
#: faster than an alternation per character.
_QUOTED_CONTENT = (
    r'[^"\\\x00-\x08\x0a-\x1f\x7f]*'
    r'(?:\\[^\x00-\x08\x0a-\x1f\x7f][^"\\\x00-\x08\x0a-\x1f\x7f]*)*'
)
#: One auth-param: ``name = token`` or ``name = "quoted"``, with LWS around.
_PARAM = (
    r"[ \t]*([A-Za-z0-9\-.!%*_+`'~]+)[ \t]*=[ \t]*"
    f'(?:"({_QUOTED_CONTENT})"|'
    r"([A-Za-z0-9\-.!%*_+`'~]+))[ \t]*"
)
_PARAM_RE = re.compile(_PARAM)
#: The whole comma-separated list, checked in one pass before it is split.
_PARAM_LIST_RE = re.compile(rf"{_PARAM}(?:,{_PARAM})*")
#: One auth-param and the comma or end after it, to say where a list breaks.
_PARAM_THEN_SEPARATOR_RE = re.compile(rf"{_PARAM}(?:(,)|\Z)")


def hash_hex(algorithm: str, text: str) -> str:
    """``H(text)`` of RFC 7616 §3.4.1: lowercase hex of the UTF-8 digest.

    Every digest computation goes through here, which lets tests count the work
    done on each path.
    """
    try:
        hash_function = _HASHES[algorithm]
    except KeyError:
        raise ValueError(f"unsupported digest algorithm {algorithm!r}") from None
    return hash_function(text.encode("utf-8")).hexdigest()


def ha1(algorithm: str, username: str, realm: str, password: str) -> str:
    """The value to store for a user: ``H(username:realm:password)``."""
    return hash_hex(algorithm, f"{username}:{realm}:{password}")


def response(
    algorithm: str,
    ha1_hex: str,
    *,
    nonce: str,
    nc: str,
    cnonce: str,
    qop: str,
    method: str,
    uri: str,
) -> str:
    """The expected ``response`` for ``qop=auth``: ``H(HA1:nonce:nc:cnonce:qop:HA2)``.

    ``HA2`` is ``H(method:uri)``. Clients (and tests) compute the same value.
    """
    ha2 = hash_hex(algorithm, f"{method}:{uri}")
    return hash_hex(algorithm, f"{ha1_hex}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")


#: Characters a realm may not hold (it is sent inside a quoted string).
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def challenges(
    realm: str, nonce: str, *, stale: bool = False, algorithms: Sequence[str] = ALGORITHMS
) -> list[str]:
    """``WWW-Authenticate`` / ``Proxy-Authenticate`` values, one per algorithm.

    Sent as separate header fields in the given order (SHA-256 first by
    default), so a client picks the first it supports (RFC 8760 §2.4).
    """
    if not realm or _CONTROL.search(realm):
        raise ValueError("realm must be non-empty and free of control characters")
    values = []
    for algorithm in algorithms:
        if algorithm not in _HASHES:
            raise ValueError(f"unsupported digest algorithm {algorithm!r}")
        value = (
            f"Digest realm={_quote(realm)}, nonce={_quote(nonce)},"
            f' qop="{QOP_AUTH}", algorithm={algorithm}'
        )
        values.append(value + (", stale=true" if stale else ""))
    return values


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


class NonceState(Enum):
    """What :meth:`NonceFactory.check` found."""

    VALID = "valid"
    #: Genuine, issued to this address for this realm, but older than its lifetime.
    STALE = "stale"
    #: Forged, malformed, issued to another address or realm, or from the future.
    INVALID = "invalid"


class NonceFactory:
    """Makes and checks stateless nonces bound to a source IP and a realm.

    A nonce is base64url (unpadded) of: issue time in milliseconds (8 bytes),
    a random salt (8 bytes, so two phones behind one NAT never share a nonce and
    its ``nc`` sequence), and a 32-byte MAC over time | salt | IP | realm.

    The MAC is keyed BLAKE2b (RFC 7693's keyed mode is a MAC; its
    personalization separates this use of the key from any other). It costs a
    third of HMAC-SHA256, and one is computed for every challenge and every
    authenticated request.
    """

    def __init__(
        self,
        key: bytes,
        lifetime_seconds: float,
        *,
        random_bytes: Callable[[int], bytes] | None = None,
    ) -> None:
        if len(key) < MIN_NONCE_KEY_BYTES:
            raise ValueError(f"nonce key must be at least {MIN_NONCE_KEY_BYTES} bytes")
        if not lifetime_seconds > 0:
            raise ValueError("nonce lifetime must be positive")
        # BLAKE2b takes keys of up to 64 bytes; a longer one is hashed down to that.
        self._key = key if len(key) <= _BLAKE2B_KEY_BYTES else hashlib.blake2b(key).digest()
        self.lifetime_seconds = lifetime_seconds
        self._random_bytes = random_bytes or _unique_salts()

    def make(self, now: float, source_ip: str, realm: str) -> str:
        """A fresh nonce for a challenge sent to ``source_ip`` in ``realm``."""
        stamp = struct.pack(">q", int(now * 1000))
        salt = self._random_bytes(_SALT_BYTES)
        if len(salt) != _SALT_BYTES:
            raise ValueError("random source returned the wrong number of bytes")
        raw = stamp + salt + self._mac(stamp, salt, source_ip, realm)
        return base64.urlsafe_b64encode(raw).decode("ascii")

    def check(self, nonce: str, now: float, source_ip: str, realm: str) -> NonceState:
        """Whether ``nonce`` is one of ours, for this address and realm, and fresh."""
        if not _NONCE_RE.fullmatch(nonce):
            return NonceState.INVALID
        # 48 bytes fill 64 characters exactly: every spelling decodes to distinct bytes.
        raw = base64.urlsafe_b64decode(nonce)
        stamp = raw[:_TIME_BYTES]
        salt = raw[_TIME_BYTES : _TIME_BYTES + _SALT_BYTES]
        mac = raw[_TIME_BYTES + _SALT_BYTES :]
        if not compare_digest(mac, self._mac(stamp, salt, source_ip, realm)):
            return NonceState.INVALID
        issued = struct.unpack(">q", stamp)[0] / 1000
        if issued > now + NONCE_CLOCK_SKEW_SECONDS:
            return NonceState.INVALID
        if now - issued > self.lifetime_seconds:
            return NonceState.STALE
        return NonceState.VALID

    def _mac(self, stamp: bytes, salt: bytes, source_ip: str, realm: str) -> bytes:
        # Time and salt have fixed lengths and the realm comes last, so only the
        # address needs a length prefix for the encoding to be unambiguous.
        address = source_ip.encode("utf-8")
        message = stamp + salt + len(address).to_bytes(2, "big") + address + realm.encode("utf-8")
        return hashlib.blake2b(
            message, key=self._key, digest_size=_MAC_BYTES, person=_NONCE_PERSON
        ).digest()


class DigestParseError(ValueError):
    """A malformed credentials header: answer ``400 Bad Request``.

    The message names the problem and at most a parameter name, never a value.
    """

    status_code = 400
    reason_phrase = "Bad Request"


class Credentials(NamedTuple):
    """A parsed ``Digest`` credentials header; parameter names are lowercased."""

    scheme: str
    params: Mapping[str, str]

    @property
    def username(self) -> str | None:
        """The ``username`` parameter, for looking up the user's HA1s."""
        return self.params.get("username")


class UnsupportedScheme(NamedTuple):
    """Credentials in a scheme other than Digest: re-challenge, never an error."""

    scheme: str


def parse_credentials(value: str) -> Credentials | UnsupportedScheme:
    """Parse an ``Authorization`` / ``Proxy-Authorization`` header value.

    Grammar: RFC 3261 §25.1 ``credentials``: a scheme token, LWS, then
    comma-separated ``name=token`` or ``name="quoted-string"`` parameters.
    Folded lines are tolerated; duplicate parameters are malformed. Values
    keep their unescaped text; token or quoted form is accepted for every
    parameter because phones differ on which they quote.
    """
    if len(value) > MAX_CREDENTIALS_LENGTH:
        raise DigestParseError("credentials header too long")
    # A header from a parsed message is unfolded already; only a raw value folds.
    text = (_FOLD_RE.sub(" ", value) if "\n" in value else value).strip(_WS)
    scheme_match = _TOKEN_RE.match(text)
    if scheme_match is None:
        raise DigestParseError("credentials do not start with a scheme")
    scheme = scheme_match.group()
    if scheme.lower() != "digest":
        return UnsupportedScheme(scheme)
    pos = scheme_match.end()
    if pos == len(text) or text[pos] not in _WS:
        raise DigestParseError("Digest scheme must be followed by whitespace and parameters")
    pairs = _PARAM_RE.findall(text, pos) if _PARAM_LIST_RE.fullmatch(text, pos) else None
    if pairs is not None and len(pairs) > MAX_AUTH_PARAMS:
        raise DigestParseError("too many parameters")
    params = {
        name.lower(): token or (_ESCAPE_RE.sub(r"\1", quoted) if "\\" in quoted else quoted)
        for name, quoted, token in pairs or ()
    }
    if pairs is None or len(params) != len(pairs):
        _raise_malformed(text, pos)
    return Credentials(scheme, MappingProxyType(params))


def _raise_malformed(text: str, pos: int) -> NoReturn:
    """Say what is wrong with a parameter list that failed the one-pass check:
    walk it one parameter at a time, naming at most a parameter, never a value."""
    seen: set[str] = set()
    end = len(text)
    while True:
        match = _PARAM_THEN_SEPARATOR_RE.match(text, pos)
        if match is None:
            named = _NAME_RE.match(text, pos)
            what = f"parameter {named.group(1).lower()!r}" if named else f"offset {pos}"
            raise DigestParseError(f"malformed {what}: no '=', bad value or missing ','")
        name = match.group(1).lower()
        if name in seen:
            raise DigestParseError(f"duplicate parameter {name!r}")
        seen.add(name)
        pos = match.end()
        if not match.group(4) or pos == end:
            break
    if match.group(4):
        raise DigestParseError("stray ',' after the last parameter")
    raise DigestParseError("malformed parameters")


class AuthOutcome(Enum):
    """The verdict on one set of credentials."""

    OK = "ok"
    #: Right password, stale nonce: re-challenge with ``stale=true``; not a failure.
    STALE = "stale"
    FAILED = "failed"


class FailureReason(Enum):
    """Why verification failed, for logs and counters; never sent to the client.

    Unknown user and wrong password share :attr:`CREDENTIALS` on purpose.
    """

    MISSING_PARAM = "missing-param"
    REALM = "realm-mismatch"
    ALGORITHM = "unsupported-algorithm"
    QOP = "unsupported-qop"
    NONCE_COUNT = "malformed-nc"
    NONCE = "invalid-nonce"
    CREDENTIALS = "bad-credentials"
    REPLAY = "replayed-nc"


class AuthResult(NamedTuple):
    """The outcome, the claimed username (``None`` if absent) and, on failure, why."""

    outcome: AuthOutcome
    username: str | None
    reason: FailureReason | None = None

    @property
    def ok(self) -> bool:
        """True only when the request is authenticated."""
        return self.outcome is AuthOutcome.OK


class DigestVerifier:
    """Issues challenges and verifies credentials; holds the bounded ``nc`` table.

    One instance serves every realm: nonces are bound to the realm they were
    issued for, and the realm is a parameter of each call.
    """

    def __init__(
        self,
        nonces: NonceFactory,
        *,
        algorithms: Sequence[str] = ALGORITHMS,
        max_tracked_nonces: int = MAX_TRACKED_NONCES,
    ) -> None:
        unknown = [a for a in algorithms if a not in ALGORITHMS]
        if unknown or not algorithms:
            raise ValueError(f"algorithms must be a non-empty subset of {ALGORITHMS}")
        #: Offered in this order, and the only ones accepted: an operator who
        #: turns MD5 off gets no MD5 answers through.
        self.algorithms = tuple(algorithms)
        self.nonces = nonces
        self.max_tracked_nonces = max_tracked_nonces
        # nonce -> (highest verified nc, when issued); insertion order is
        # (nearly) age order, so pruning reads from the front.
        self._counters: dict[str, tuple[int, float]] = {}
        # Nonces issued at or before this were evicted from a full table: stale.
        self._stale_floor = float("-inf")
        # Random, so no response can match it; right length, so hashing costs the same.
        self._dummy_ha1 = {
            algorithm: secrets.token_hex(hash_function(b"").digest_size)
            for algorithm, hash_function in _HASHES.items()
        }

    @property
    def tracked_nonces(self) -> int:
        """How many nonces have a remembered ``nc`` (for metrics and tests)."""
        return len(self._counters)

    def challenge(
        self, realm: str, *, now: float, source_ip: str, stale: bool = False
    ) -> list[str]:
        """Challenge header values carrying a fresh nonce for ``source_ip``."""
        nonce = self.nonces.make(now, source_ip, realm)
        return challenges(realm, nonce, stale=stale, algorithms=self.algorithms)

    def verify(
        self,
        credentials: Credentials,
        method: str,
        ha1_by_algorithm: Mapping[str, str] | None,
        realm: str,
        *,
        now: float,
        source_ip: str,
    ) -> AuthResult:
        """Check ``credentials`` for a ``method`` request from ``source_ip``.

        ``ha1_by_algorithm`` is the user's stored HA1s keyed by algorithm name,
        or ``None`` for an unknown user, who is refused exactly like a wrong
        password. The ``uri`` parameter must be present and is bound into the
        response, but is not compared with the Request-URI: phones differ.
        """
        params = credentials.params
        username = params.get("username")
        if any(not params.get(name) for name in REQUIRED_PARAMS):
            return AuthResult(AuthOutcome.FAILED, username, FailureReason.MISSING_PARAM)
        if params["realm"] != realm:
            return AuthResult(AuthOutcome.FAILED, username, FailureReason.REALM)
        algorithm = params.get("algorithm", MD5).upper()
        if algorithm not in self.algorithms:
            return AuthResult(AuthOutcome.FAILED, username, FailureReason.ALGORITHM)
        if params["qop"].lower() != QOP_AUTH:
            return AuthResult(AuthOutcome.FAILED, username, FailureReason.QOP)
        if not _NC_RE.fullmatch(params["nc"]) or int(params["nc"], 16) == 0:
            return AuthResult(AuthOutcome.FAILED, username, FailureReason.NONCE_COUNT)
        nonce = params["nonce"]
        # Refused before any hashing: forged nonces are free to send, so cheap to refuse.
        state = self.nonces.check(nonce, now, source_ip, realm)
        if state is NonceState.INVALID:
            return AuthResult(AuthOutcome.FAILED, username, FailureReason.NONCE)

        stored = ha1_by_algorithm.get(algorithm) if ha1_by_algorithm is not None else None
        known = stored is not None
        expected = response(
            algorithm,
            stored if stored is not None else self._dummy_ha1[algorithm],
            nonce=nonce,
            nc=params["nc"],
            cnonce=params["cnonce"],
            qop=params["qop"],
            method=method,
            uri=params["uri"],
        )
        matches = compare_digest(expected.encode(), params["response"].lower().encode("utf-8"))
        if not (matches & known):
            return AuthResult(AuthOutcome.FAILED, username, FailureReason.CREDENTIALS)
        # Stale only once the digest is right (RFC 7616 §3.3), so it reveals nothing.
        if state is NonceState.STALE:
            return AuthResult(AuthOutcome.STALE, username)
        return self._count(nonce, int(params["nc"], 16), now, username)

    def _count(self, nonce: str, nc: int, now: float, username: str | None) -> AuthResult:
        """Accept ``nc`` only if above the highest seen for ``nonce``; bounded table.

        When the table is full the oldest entry is forgotten and everything
        issued up to it is treated as stale from then on (its counter is gone,
        so a replay could not be told apart): the phone is re-challenged with a
        fresh nonce, which is newer than the floor and fits. Registration keeps
        working at any rate; memory stays bounded.
        """
        self._prune(now)
        entry = self._counters.get(nonce)
        if entry is None:
            issued = _issued_at(nonce)
            if issued <= self._stale_floor:
                return AuthResult(AuthOutcome.STALE, username)
            while len(self._counters) >= self.max_tracked_nonces:
                oldest = next(iter(self._counters))
                self._stale_floor = max(self._stale_floor, self._counters.pop(oldest)[1])
            if issued <= self._stale_floor:
                return AuthResult(AuthOutcome.STALE, username)
            entry = (0, issued)
        if nc <= entry[0]:
            return AuthResult(AuthOutcome.FAILED, username, FailureReason.REPLAY)
        self._counters[nonce] = (nc, entry[1])
        return AuthResult(AuthOutcome.OK, username)

    def _prune(self, now: float) -> None:
        """Forget nonces that are stale by now: issued more than a lifetime ago
        (plus the clock skew), so they check as stale and never reach the table."""
        horizon = self.nonces.lifetime_seconds + NONCE_CLOCK_SKEW_SECONDS
        while self._counters:
            oldest = next(iter(self._counters))
            if now - self._counters[oldest][1] <= horizon:
                return
            del self._counters[oldest]


def _issued_at(nonce: str) -> float:
    """When one of our (already checked) nonces was issued."""
    stamp = base64.urlsafe_b64decode(nonce)[:_TIME_BYTES]
    return float(struct.unpack(">q", stamp)[0] / 1000)


def _unique_salts() -> Callable[[int], bytes]:
    """Salts that never repeat: a counter from a random start.

    The salt only has to be unique (the HMAC makes the nonce unforgeable), so a
    counter serves, without a getrandom() system call for every challenge.
    """
    counter = itertools.count(int.from_bytes(secrets.token_bytes(8), "big"))

    def salt(size: int) -> bytes:
        return (next(counter) % (1 << (8 * size))).to_bytes(size, "big")

    return salt
