"""Media through the relay with real peers over loopback.

Real baresip phones (SDES SRTP with ``srtp.so``) call each other through the
appliance: a tone the caller plays (``aufile``) must be heard at the callee
(``sndfile`` records what it decoded), which only happens if the relay
unprotected it with the caller's key and protected it again with the key it
gave the callee. The SRTP policy is checked the same way: a plain phone
toward a ``required`` tenant gets 488; a phone that would accept plain RTP
(``mediaenc=srtp``) still ends up on SRTP. RTP bleed is checked with the
project's own test phone and raw UDP sockets, one of them on another
loopback address. Everything stays on 127.0.0.0/8.
"""

from __future__ import annotations

import secrets
import socket
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from appliance.media.sdp import parse_sdp
from appliance.sip.message import Message
from appliance.testing.sipclient import SipTestClient
from appliance.testing.sipsocket import StreamPhone
from tests.integration.audio import find_tone, sndfile_recordings, write_tone
from tests.integration.conftest import Running, SipInstance, free_port
from tests.integration.peers import (
    BaresipCalls,
    BaresipControl,
    PeerProcess,
    StoredCdr,
    baresip,
    negotiated_suite,
    poll_until,
    set_sip_option,
    stored_cdrs,
)
from tests.integration.test_calls import MD5_ONLY, _cli, _reports_registration

#: The caller's tone and the callee's: each must be found at the other end.
CALLER_HZ, CALLEE_HZ = 1000, 440
#: Held this long once established: sndfile then holds ~2.5 s of audio.
HOLD_SECONDS = 3.0
#: aufile hangs up when its file ends: it must outlast the call.
AUDIO_SECONDS = 60.0
PASSWORDS = {"1001": "baresip-secret-1001", "1002": "baresip-secret-1002"}


@dataclass
class BaresipPhone:
    process: PeerProcess
    control: BaresipControl
    recordings: Path


@contextmanager
def _appliance_and_phones(
    instance: SipInstance,
    env: dict[str, str],
    tmp_path: Path,
    *,
    caller_mediaenc: str | None,
    callee_mediaenc: str | None,
) -> Iterator[tuple[BaresipPhone, BaresipPhone]]:
    """The appliance running and two registered baresip phones: 1001 (calls,
    plays 1000 Hz) and 1002 (answers by itself, plays 440 Hz), both recording."""
    set_sip_option(instance.config, "digest_algorithms", MD5_ONLY)
    domain = instance.domain
    _cli(instance, "extension", "passwd", domain, "1001", stdin=PASSWORDS["1001"] + "\n")
    _cli(instance, "extension", "add", domain, "1002", stdin=PASSWORDS["1002"] + "\n")
    running = Running(instance.config, env)
    phones: dict[str, BaresipPhone] = {}
    with ExitStack() as stack:
        stack.callback(running.stop)
        running.wait_for("listening on")
        plan = (
            ("1002", "auto", CALLEE_HZ, callee_mediaenc),
            ("1001", "manual", CALLER_HZ, caller_mediaenc),
        )
        for number, answermode, hz, mediaenc in plan:
            tone = write_tone(tmp_path / f"tone-{number}.wav", hz, AUDIO_SECONDS)
            calls = BaresipCalls(
                free_port(), tone, answermode, mediaenc, record_dir=tmp_path / f"rec-{number}"
            )
            process = baresip(
                tmp_path / f"baresip-{number}",
                aor=f"{number}@{domain}",
                password=PASSWORDS[number],
                proxy_port=instance.tls_port,
                ca=instance.ca,
                regint=600,
                env=env,
                calls=calls,
            )
            stack.callback(process.stop)
            control = BaresipControl(calls.control_port)
            stack.callback(control.close)
            assert calls.record_dir is not None
            phones[number] = BaresipPhone(process, control, calls.record_dir)
        for number, phone in phones.items():
            phone.process.wait_for(
                _reports_registration(f"{number}@{domain}"),
                f"{number} reported its registration",
                fail=lambda x: ": Register: " in x or "403 Forbidden" in x,
            )
        try:
            yield phones["1001"], phones["1002"]
        except BaseException:
            for number, phone in phones.items():  # shown by pytest with the failure
                print(f"--- baresip {number}\n{phone.process.tail(80)}")
            raise


def _talk(caller: BaresipPhone, callee: BaresipPhone, domain: str) -> None:
    """Call 1002, hold the call up while the tones play, hang up."""
    caller.control.command("dial", f"sip:1002@{domain}")
    caller.control.wait_for_event("CALL_ESTABLISHED")
    callee.control.wait_for_event("CALL_ESTABLISHED")
    time.sleep(HOLD_SECONDS)
    caller.control.command("hangup")
    caller.control.wait_for_event("CALL_CLOSED")
    callee.control.wait_for_event("CALL_CLOSED")


def _heard(phone: BaresipPhone, hz: int) -> None:
    """The phone decoded the other side's tone (not silence, not noise)."""
    (recording,) = sndfile_recordings(phone.recordings, "dec")
    result = find_tone(recording, hz)
    assert result.found, result


def _record(instance: SipInstance) -> StoredCdr:
    (record,) = poll_until(
        lambda: stored_cdrs(instance.config, instance.domain) or None, "the call detail record"
    )
    return record


def test_srtp_call_with_audio_and_aes_256_toward_the_callee(
    sip_instance: SipInstance, child_env: dict[str, str], tmp_path: Path
) -> None:
    """Tenant policy ``required``; both phones ``mediaenc=srtp-mand``. The caller
    offers AES_CM_128_HMAC_SHA1_80 and gets our own key back for it; the callee
    is offered our lines strongest first and takes AEAD_AES_256_GCM (baresip
    skips AES_256_CM_HMAC_SHA1_80, which it does not know). Each hears the
    other's tone, so the relay re-keyed every packet between the two suites.
    The CDR shows both suites and the packets of both legs."""
    _cli(sip_instance, "tenant", "srtp", sip_instance.domain, "required")
    with _appliance_and_phones(
        sip_instance,
        child_env,
        tmp_path,
        caller_mediaenc="srtp-mand",
        callee_mediaenc="srtp-mand",
    ) as (caller, callee):
        _talk(caller, callee, sip_instance.domain)
        assert negotiated_suite(caller.control) == "AES_CM_128_HMAC_SHA1_80"
        assert negotiated_suite(callee.control) == "AEAD_AES_256_GCM"
        _heard(callee, CALLER_HZ)
        _heard(caller, CALLEE_HZ)
        record = _record(sip_instance)
        legs = record.media
        assert legs["caller"]["suite"] == "AES_CM_128_HMAC_SHA1_80", legs
        assert legs["callee"]["suite"] == "AEAD_AES_256_GCM", legs
        for leg in ("caller", "callee"):
            # 50 packets/s each way for the whole call.
            assert legs[leg]["packets_in"] >= 50 * HOLD_SECONDS * 0.8, legs
            assert legs[leg]["packets_out"] >= 50 * HOLD_SECONDS * 0.8, legs
        a_lines = caller.process.lines
        # The caller's answer carried one crypto line, not the callee's.
        assert any("a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:" in x for x in a_lines)


def test_a_plain_phone_toward_a_required_tenant_gets_488(
    sip_instance: SipInstance, child_env: dict[str, str], tmp_path: Path
) -> None:
    """A phone offering plain RTP/AVP is refused with 488 and our Warning; the
    callee never rings."""
    _cli(sip_instance, "tenant", "srtp", sip_instance.domain, "required")
    with _appliance_and_phones(
        sip_instance, child_env, tmp_path, caller_mediaenc=None, callee_mediaenc="srtp-mand"
    ) as (caller, callee):
        caller.control.command("dial", f"sip:1002@{sip_instance.domain}")
        caller.control.wait_for_event("CALL_CLOSED")
        # Its SIP trace reaches us on stdout, which may lag the control event.
        caller.process.wait_for(
            lambda lines: 'Warning: 399 telemancer "SRTP required"' in lines,
            "the 488's Warning in the caller's trace",
        )
        lines = caller.process.lines
        assert any(x.startswith("SIP/2.0 488 Not Acceptable Here") for x in lines)
        assert not any(x.startswith("INVITE ") for x in callee.process.lines)


def test_an_optional_phone_is_not_silently_left_on_plain_rtp(
    sip_instance: SipInstance, child_env: dict[str, str], tmp_path: Path
) -> None:
    """Tenant policy ``optional``; both phones ``mediaenc=srtp``, which offers
    RTP/AVP with a crypto line and quietly falls back to plain RTP when the
    answer has none. We answer with a key, and offer the callee ours: both legs
    end up on SRTP and the tones cross."""
    with _appliance_and_phones(
        sip_instance, child_env, tmp_path, caller_mediaenc="srtp", callee_mediaenc="srtp"
    ) as (caller, callee):
        _talk(caller, callee, sip_instance.domain)
        assert negotiated_suite(caller.control) is not None
        assert negotiated_suite(callee.control) is not None
        _heard(callee, CALLER_HZ)
        _heard(caller, CALLEE_HZ)
        legs = _record(sip_instance).media
        assert legs["caller"]["suite"] != "plain" and legs["callee"]["suite"] != "plain", legs


# -- RTP bleed, with the project's own test phone and raw sockets ---------------


def _udp(host: str) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((host, 0))
    sock.settimeout(2.0)
    return sock


def _rtp(seq: int, ssrc: int, fill: bytes = b"\xd5") -> bytes:
    header = bytes([0x80, 0]) + seq.to_bytes(2, "big") + bytes(4) + ssrc.to_bytes(4, "big")
    return header + fill * 160


def _relay_port(message: Message) -> tuple[str, int]:
    description = parse_sdp(message.body)
    section = description.media[0]
    connection = description.connection_of(section)
    assert connection is not None
    return connection.address, section.port


def _line(
    instance: SipInstance, number: str, password: str, media: socket.socket
) -> tuple[StreamPhone, SipTestClient]:
    phone = StreamPhone("127.0.0.1", instance.tls_port, ca=instance.ca)
    client = SipTestClient(number, instance.domain, password, transport="TLS", local=phone.local)
    client.media_port = media.getsockname()[1]
    phone.send(client.register())
    challenge = phone.receive()
    phone.send(client.register(authorization=client.authorization(challenge)))
    assert phone.receive().status == 200
    return phone, client


def _nothing(sock: socket.socket) -> bool:
    sock.settimeout(0.3)
    try:
        sock.recv(2048)
    except TimeoutError:
        return True
    return False


def test_rtp_bleed_is_neither_forwarded_nor_latched(
    sip_instance: SipInstance, child_env: dict[str, str]
) -> None:
    """A plain call between two test phones: once each has sent from the address
    its SDP named, packets injected into either relay port from 127.0.0.99 are
    dropped (counted in the CDR), and the phones' media still reaches each other
    and not the injector."""
    domain = sip_instance.domain
    _cli(sip_instance, "extension", "add", domain, "1002", stdin="bleed-secret-1002\n")
    alice_rtp, bob_rtp, mallory = _udp("127.0.0.1"), _udp("127.0.0.1"), _udp("127.0.0.99")
    running = Running(sip_instance.config, child_env)
    with ExitStack() as stack:
        stack.callback(running.stop)
        for sock in (alice_rtp, bob_rtp, mallory):
            stack.callback(sock.close)
        running.wait_for("listening on")
        alice, a = _line(sip_instance, "1001", sip_instance.password, alice_rtp)
        bob, b = _line(sip_instance, "1002", "bleed-secret-1002", bob_rtp)
        stack.callback(alice.close)
        stack.callback(bob.close)
        call_id = f"{secrets.token_hex(8)}@bleed"
        alice.send(a.invite("1002", call_id=call_id))
        challenge = alice.receive()
        auth = a.authorization(challenge, method="INVITE", uri=f"sip:1002@{domain}")
        alice.send(a.invite("1002", call_id=call_id, authorization=auth))
        invite = bob.receive()
        b_port = _relay_port(invite)
        bob.send(b.answer(invite, 200, "OK", body=b.sdp()))  # plain RTP
        answer = alice.receive()
        while answer.status < 200:
            answer = alice.receive()
        a_port = _relay_port(answer)
        alice.send(a.in_dialog("ACK", answer))
        assert bob.receive().method == "ACK"

        alice_rtp.sendto(_rtp(1, 0xA11CE), a_port)
        assert bob_rtp.recv(2048) == _rtp(1, 0xA11CE)
        bob_rtp.sendto(_rtp(1, 0xB0B), b_port)
        assert alice_rtp.recv(2048) == _rtp(1, 0xB0B)
        for port in (a_port, b_port):
            for seq in range(2, 12):
                mallory.sendto(_rtp(seq, 0xBAD, b"\x00"), port)
        assert _nothing(bob_rtp) and _nothing(alice_rtp) and _nothing(mallory)
        alice_rtp.sendto(_rtp(2, 0xA11CE), a_port)
        assert bob_rtp.recv(2048) == _rtp(2, 0xA11CE)
        bob_rtp.sendto(_rtp(2, 0xB0B), b_port)
        assert alice_rtp.recv(2048) == _rtp(2, 0xB0B)
        assert _nothing(mallory)

        alice.send(a.in_dialog("BYE", answer))
        bye = bob.receive()
        bob.send(b.answer(bye, 200, "OK"))
        legs = _record(sip_instance).media
        assert legs["caller"]["dropped"] == 10 and legs["callee"]["dropped"] == 10, legs
        assert legs["caller"]["packets_in"] == 2 and legs["callee"]["packets_in"] == 2, legs
