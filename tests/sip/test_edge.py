"""The SIP edge end to end in memory: REGISTER with Digest, the brute-force
rule, retransmissions, OPTIONS and malformed input."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from appliance.media.relay import PortPool, Relay
from appliance.sip import digest
from appliance.sip.actions import BindingsChanged, BlockChanged, CloseConnections, Send
from appliance.sip.blocklist import Blocklist
from appliance.sip.directory import ExtensionEntry, SipDirectory, TenantEntry
from appliance.sip.edge import SipEdge
from appliance.sip.message import Message, parse_datagram
from appliance.sip.registrar import Flow, Registrar
from appliance.testing.sipclient import SipTestClient

DOMAIN = "acme.example"
PASSWORD = "correct horse battery"
CORPUS = Path(__file__).resolve().parents[3] / "shared" / "corpus" / "rfc4475"
PHONE = Flow("udp", ("127.0.0.10", 5062))
NOW = 1_800_000_000.0


def _edge(**blocklist: float) -> SipEdge:
    tenant = TenantEntry(1, DOMAIN, "active", 10, 5)
    extension = ExtensionEntry(
        7, 1, "1001", {alg: digest.ha1(alg, "1001", DOMAIN, PASSWORD) for alg in digest.ALGORITHMS}
    )
    verifier = digest.DigestVerifier(digest.NonceFactory(b"k" * 32, 300))
    return SipEdge(
        SipDirectory([tenant], [extension]),
        verifier,
        Registrar(min_expires=60),
        Blocklist(**blocklist),  # type: ignore[arg-type]
        media=Relay(PortPool()),
        media_address="127.0.0.1",
    )


def _reply(actions: Sequence[object]) -> Message:
    sends = [a for a in actions if isinstance(a, Send)]
    assert len(sends) == 1, actions
    return parse_datagram(sends[0].data)


def _register(
    edge: SipEdge, phone: SipTestClient, now: float = NOW, algorithm: str = digest.SHA256
) -> Message:
    """Register through a challenge; return the final answer."""
    challenge = _reply(edge.datagram_received(phone.register(), PHONE, now))
    assert challenge.status == 401
    authorization = phone.authorization(challenge, algorithm=algorithm)
    return _reply(edge.datagram_received(phone.register(authorization=authorization), PHONE, now))


def test_unauthenticated_register_is_challenged_sha256_first() -> None:
    """The first REGISTER gets 401 with a SHA-256 then an MD5 challenge, qop=auth."""
    edge = _edge()
    phone = SipTestClient("1001", DOMAIN, PASSWORD)
    answer = _reply(edge.datagram_received(phone.register(), PHONE, NOW))
    values = [f.value for f in answer.all("www-authenticate")]
    assert answer.status == 401 and len(values) == 2
    assert "algorithm=SHA-256" in values[0] and "algorithm=MD5" in values[1]
    assert all('qop="auth"' in v and f'realm="{DOMAIN}"' in v for v in values)
    assert answer.to.tag and answer.vias[0].params.get("received") == "127.0.0.10"
    assert answer.vias[0].params.get("rport") == "5062"


@pytest.mark.parametrize("algorithm", [digest.SHA256, digest.MD5])
def test_register_with_correct_credentials_binds(algorithm: str) -> None:
    """Correct SHA-256 or MD5 credentials register the contact, remembering the flow."""
    edge = _edge()
    phone = SipTestClient("1001", DOMAIN, PASSWORD)
    answer = _register(edge, phone, algorithm=algorithm)
    assert answer.status == 200
    assert answer.first("contact") == "<sip:1001@127.0.0.1:5062;transport=udp>;expires=600"
    (binding,) = edge.registrar.bindings(7, NOW)
    assert binding.flow == PHONE and binding.expires_at == NOW + 600


def test_binding_changes_are_reported_for_the_store() -> None:
    """A successful REGISTER yields the binding to persist; expiry yields its removal."""
    edge = _edge()
    phone = SipTestClient("1001", DOMAIN, PASSWORD)
    challenge = _reply(edge.datagram_received(phone.register(expires=60), PHONE, NOW))
    auth = phone.authorization(challenge)
    actions = edge.datagram_received(phone.register(expires=60, authorization=auth), PHONE, NOW)
    (changed,) = [a for a in actions if isinstance(a, BindingsChanged)]
    assert [b.contact for b in changed.saved] == ["sip:1001@127.0.0.1:5062;transport=udp"]
    assert edge.next_timer() is not None
    expired = [a for a in edge.handle_timer(NOW + 61) if isinstance(a, BindingsChanged)]
    assert [b.contact for b in expired[0].removed] == [changed.saved[0].contact]
    assert edge.registrar.bindings(7, NOW + 61) == []


def test_wrong_password_and_unknown_user_look_the_same() -> None:
    """A wrong password and an unknown extension get identical answers (but the nonce)."""
    edge = _edge()
    answers = []
    for user, password in (("1001", "wrong password!"), ("9999", PASSWORD)):
        phone = SipTestClient(user, DOMAIN, password)
        challenge = _reply(edge.datagram_received(phone.register(), PHONE, NOW))
        auth = phone.authorization(challenge)
        answer = _reply(edge.datagram_received(phone.register(authorization=auth), PHONE, NOW))
        answers.append(answer)
    first, second = answers
    assert (first.status, first.reason) == (second.status, second.reason) == (401, "Unauthorized")
    assert [f.name for f in first.fields] == [f.name for f in second.fields]


def test_five_failures_block_the_source_and_nothing_else() -> None:
    """Failures 1-4 are answered 401; the 5th blocks the address without an answer and
    closes its connections; then it gets nothing, while another address still registers."""
    edge = _edge()
    attacker = SipTestClient("1001", DOMAIN, "guess")
    for attempt in range(1, 6):
        challenge = _reply(edge.datagram_received(attacker.register(), PHONE, NOW))
        auth = attacker.authorization(challenge, password=f"guess-{attempt}")
        actions = edge.datagram_received(attacker.register(authorization=auth), PHONE, NOW)
        if attempt < 5:
            assert _reply(actions).status == 401
    assert not [a for a in actions if isinstance(a, Send)]
    assert any(isinstance(a, CloseConnections) and a.ip == "127.0.0.10" for a in actions)
    assert any(isinstance(a, BlockChanged) for a in actions)
    assert edge.datagram_received(attacker.register(), PHONE, NOW + 1) == []
    assert edge.is_blocked("127.0.0.10", NOW + 899) and not edge.is_blocked(
        "127.0.0.10", NOW + 900
    )
    other = Flow("udp", ("127.0.0.11", 5062))
    phone = SipTestClient("1001", DOMAIN, PASSWORD)
    challenge = _reply(edge.datagram_received(phone.register(), other, NOW))
    auth = phone.authorization(challenge)
    assert (
        _reply(edge.datagram_received(phone.register(authorization=auth), other, NOW)).status
        == 200
    )


def test_challenges_stale_nonces_and_foreign_nonces_do_not_count() -> None:
    """Unauthenticated REGISTERs, stale nonces and nonces bound to another address are
    answered 401 but never move the brute-force counter."""
    edge = _edge()
    phone = SipTestClient("1001", DOMAIN, PASSWORD)
    for _ in range(6):
        assert _reply(edge.datagram_received(phone.register(), PHONE, NOW)).status == 401
    challenge = _reply(edge.datagram_received(phone.register(), PHONE, NOW))
    late = phone.authorization(challenge)
    for _ in range(6):
        stale = _reply(
            edge.datagram_received(phone.register(authorization=late), PHONE, NOW + 400)
        )
        assert stale.status == 401 and "stale=true" in stale.all("www-authenticate")[0].value
    moved = Flow("udp", ("127.0.0.12", 5062))
    for _ in range(6):
        answer = _reply(edge.datagram_received(phone.register(authorization=late), moved, NOW))
        assert answer.status == 401
    assert edge.blocklist.failure_count("127.0.0.10", NOW) == 0
    assert edge.blocklist.failure_count("127.0.0.12", NOW) == 0


def test_success_resets_the_count() -> None:
    """Four failures, a success, four more failures: still not blocked."""
    edge = _edge()
    phone = SipTestClient("1001", DOMAIN, PASSWORD)
    for round_ in range(2):
        for attempt in range(4):
            challenge = _reply(edge.datagram_received(phone.register(), PHONE, NOW))
            auth = phone.authorization(challenge, password=f"bad-{round_}-{attempt}")
            assert (
                _reply(
                    edge.datagram_received(phone.register(authorization=auth), PHONE, NOW)
                ).status
                == 401
            )
        assert _register(edge, phone).status == 200
    assert not edge.is_blocked("127.0.0.10", NOW)


def test_udp_retransmission_is_absorbed() -> None:
    """The same REGISTER datagram twice gets the same answer, and the registrar (and
    the nonce-count check) runs once."""
    edge = _edge()
    phone = SipTestClient("1001", DOMAIN, PASSWORD)
    challenge = _reply(edge.datagram_received(phone.register(), PHONE, NOW))
    request = phone.register(authorization=phone.authorization(challenge))
    first = edge.datagram_received(request, PHONE, NOW)
    second = edge.datagram_received(request, PHONE, NOW + 0.5)
    assert _reply(first).status == 200 and [a for a in second if isinstance(a, Send)] == [
        a for a in first if isinstance(a, Send)
    ]
    assert edge.counters["retransmissions"] == 1 and edge.counters["registers_ok"] == 1


def test_expires_rules() -> None:
    """Too brief is 423 with Min-Expires; Expires: 0 removes; Contact: * removes all."""
    edge = _edge()
    phone = SipTestClient("1001", DOMAIN, PASSWORD)
    challenge = _reply(edge.datagram_received(phone.register(), PHONE, NOW))
    brief = phone.register(expires=10, authorization=phone.authorization(challenge))
    answer = _reply(edge.datagram_received(brief, PHONE, NOW))
    assert (answer.status, answer.first("min-expires")) == (423, "60")
    assert _register(edge, phone).status == 200
    second = SipTestClient("1001", DOMAIN, PASSWORD, local=("127.0.0.1", 5070))
    assert _register(edge, second).status == 200
    assert len(edge.registrar.bindings(7, NOW)) == 2
    challenge = _reply(edge.datagram_received(phone.register(), PHONE, NOW))
    star = phone.register(expires=0, contact="*", authorization=phone.authorization(challenge))
    assert _reply(edge.datagram_received(star, PHONE, NOW)).status == 200
    assert edge.registrar.bindings(7, NOW) == []


def test_credentials_for_another_extension_are_refused() -> None:
    """Valid credentials of 1001 cannot register 1002's address of record."""
    edge = _edge()
    phone = SipTestClient("1001", DOMAIN, PASSWORD)
    challenge = _reply(edge.datagram_received(phone.register(user="1002"), PHONE, NOW))
    auth = phone.authorization(challenge)
    answer = _reply(
        edge.datagram_received(phone.register(user="1002", authorization=auth), PHONE, NOW)
    )
    assert answer.status == 403


def test_foreign_domain_is_refused() -> None:
    """A REGISTER for a domain we do not serve is 403: no open registrar."""
    edge = _edge()
    phone = SipTestClient("1001", "other.example", PASSWORD)
    assert _reply(edge.datagram_received(phone.register(), PHONE, NOW)).status == 403


def test_unknown_authorization_scheme_is_challenged() -> None:
    """RFC 4475 regaut01: an unknown scheme gets 401, never 500."""
    edge = _edge()
    data = (CORPUS / "regaut01.dat").read_bytes().replace(b"example.com", DOMAIN.encode())
    assert _reply(edge.datagram_received(data, PHONE, NOW)).status == 401


@pytest.mark.parametrize(("name", "status"), [("badinv01", 400), ("insuf", 400), ("bext01", 420)])
def test_malformed_requests_are_answered(name: str, status: int) -> None:
    """Corpus rejects are answered with their status, to the packet's source."""
    edge = _edge()
    answer = _reply(edge.datagram_received((CORPUS / f"{name}.dat").read_bytes(), PHONE, NOW))
    assert answer.status == status


def test_options_for_us_and_unauthenticated_invite() -> None:
    """OPTIONS to a served domain is 200 with Allow; an INVITE without credentials is
    challenged with 407, and the ACK for that 407 is absorbed without an answer."""
    edge = _edge()
    options = SipTestClient("1001", DOMAIN, PASSWORD).register().replace(b"REGISTER", b"OPTIONS")
    answer = _reply(edge.datagram_received(options, PHONE, NOW))
    assert answer.status == 200 and "INVITE" in (answer.first("allow") or "")
    invite = options.replace(b"OPTIONS", b"INVITE").replace(
        b"sip:acme.example SIP", b"sip:1002@acme.example SIP"
    )
    challenge = _reply(edge.datagram_received(invite, PHONE, NOW))
    assert challenge.status == 407 and challenge.all("proxy-authenticate")
    ack = invite.replace(b"INVITE", b"ACK")
    assert edge.datagram_received(ack, PHONE, NOW) == []


def test_transactions_end_on_their_timers() -> None:
    """A UDP non-INVITE transaction lives Timer J (32 s), then is forgotten."""
    edge = _edge()
    phone = SipTestClient("1001", DOMAIN, PASSWORD)
    request = phone.register()
    edge.datagram_received(request, PHONE, NOW)
    assert edge.next_timer() == NOW + 32
    edge.handle_timer(NOW + 32)
    edge.datagram_received(request, PHONE, NOW + 33)
    assert edge.counters.get("retransmissions", 0) == 0


def test_md5_only_instances_offer_and_accept_md5_only() -> None:
    """With digest_algorithms = ["MD5"] (for phones that stop at a SHA-256 challenge,
    like baresip 1.0 and sipp 3.6), only MD5 is offered; with ["SHA-256"], an MD5
    answer is refused: turning an algorithm off also refuses it."""
    edge = _edge()
    edge.verifier = digest.DigestVerifier(
        digest.NonceFactory(b"k" * 32, 300), algorithms=[digest.MD5]
    )
    phone = SipTestClient("1001", DOMAIN, PASSWORD)
    challenge = _reply(edge.datagram_received(phone.register(), PHONE, NOW))
    assert [f.value.count("algorithm=MD5") for f in challenge.all("www-authenticate")] == [1]
    auth = phone.authorization(challenge, algorithm=digest.MD5)
    assert (
        _reply(edge.datagram_received(phone.register(authorization=auth), PHONE, NOW)).status
        == 200
    )
    strict = _edge()
    strict.verifier = digest.DigestVerifier(
        digest.NonceFactory(b"k" * 32, 300), algorithms=[digest.SHA256]
    )
    challenge = _reply(strict.datagram_received(phone.register(), PHONE, NOW))
    forced = phone.authorization(challenge, algorithm=digest.SHA256).replace(
        "algorithm=SHA-256", "algorithm=MD5"
    )
    answer = _reply(strict.datagram_received(phone.register(authorization=forced), PHONE, NOW))
    assert answer.status == 401


def test_transaction_table_is_bounded() -> None:
    """At the cap the oldest server transaction is forgotten, so a flood of distinct
    requests cannot grow memory; the newest ones still absorb retransmissions."""
    edge = _edge()
    edge.max_transactions = 3
    phone = SipTestClient("1001", DOMAIN, PASSWORD)
    requests = [phone.register() for _ in range(5)]
    for request in requests:
        edge.datagram_received(request, PHONE, NOW)
    assert edge.counters["transactions_evicted"] == 2
    edge.datagram_received(requests[-1], PHONE, NOW)
    assert edge.counters["retransmissions"] == 1
    edge.datagram_received(requests[0], PHONE, NOW)
    assert edge.counters["retransmissions"] == 1
