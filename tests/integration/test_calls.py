"""Calls through the appliance's proxy over real sockets: two real baresip
phones calling each other over TLS, and the tenant's concurrent-call quota
refusing a third call before anything rings (with the project's own test
phone, which can hold several calls and show exactly what reached each line).

What the service writes is read back from the database and the CLI: the
call detail record (``cdrs``), the calls in progress (``live_calls``,
``calls list``) and the audit log. Everything stays on 127.0.0.0/8.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from appliance.sip.message import Message
from appliance.testing.sipclient import SipTestClient
from appliance.testing.sipsocket import StreamPhone
from tests.integration.conftest import Running, SipInstance, free_port, telemancer
from tests.integration.peers import (
    BaresipCalls,
    BaresipControl,
    PeerProcess,
    StoredCdr,
    audit_records,
    baresip,
    cli_rows,
    poll_until,
    set_sip_option,
    stored_cdrs,
    stored_live_calls,
    stored_registrations,
    write_wav,
)

#: Debian 12's baresip 1.0 gives up at a SHA-256 challenge (test_sip_peers.py).
MD5_ONLY = '["MD5"]'
#: How long the baresip call is held up once both sides report it established.
HOLD_SECONDS = 2.0
#: Length of the WAV the phones send: baresip's aufile hangs up when it ends, so
#: it must outlast everything the test waits for while the call is up.
AUDIO_SECONDS = 60.0


def _cli(instance: SipInstance, *argv: str, stdin: str | None = None) -> str:
    result = telemancer("--config", str(instance.config), *argv, input=stdin)
    assert result.returncode == 0, f"{argv}: {result.stderr}"
    return result.stdout


def _registered(instance: SipInstance, domain: str) -> dict[str, dict[str, str]]:
    """``registrations list DOMAIN`` by extension number."""
    return {r["NUMBER"]: r for r in cli_rows(instance.config, "registrations", "list", domain)}


def _reports_registration(aor: str) -> Callable[[list[str]], bool]:
    """A check on baresip's output: it reported ``aor`` registered over TLS."""
    line = f"{aor}: {{0/TLS/v4}} 200 OK"
    return lambda lines: any(line in x for x in lines)


def test_two_baresip_phones_call_each_other(
    sip_instance: SipInstance, child_env: dict[str, str], tmp_path: Path
) -> None:
    """Two real baresip phones, 1001 and 1002 of acme.example, registered over
    TLS with passwords the operator set through the CLI (stdin), call each
    other through the proxy: A dials 1002@acme.example through ctrl_tcp, is
    challenged with 407 and answers with Proxy-Authorization; B, in auto-answer
    mode, gets the INVITE over its own registration's TLS connection with our
    Record-Route and answers; both report the call established, and
    ``live_calls`` / ``calls list`` show it answered. After the call is held
    up, A hangs up: its BYE follows the Record-Route to B, both report the call
    closed, and the service writes exactly one call detail record (internal,
    answered, hung up by the caller, 200, TLS on both legs, times in order).
    ``live_calls`` is empty afterwards and both phones are still registered
    over the very connections they registered on."""
    set_sip_option(sip_instance.config, "digest_algorithms", MD5_ONLY)
    domain = sip_instance.domain
    passwords = {"1001": "baresip-secret-1001", "1002": "baresip-secret-1002"}
    # 1001 exists already (the fixture adds it through the store): the operator
    # sets a new password with the CLI, so both come from `telemancer` on stdin.
    _cli(sip_instance, "extension", "passwd", domain, "1001", stdin=passwords["1001"] + "\n")
    _cli(sip_instance, "extension", "add", domain, "1002", stdin=passwords["1002"] + "\n")
    audio = write_wav(tmp_path / "tone.wav", AUDIO_SECONDS)

    running = Running(sip_instance.config, child_env)
    phones: dict[str, PeerProcess] = {}
    controls: dict[str, BaresipControl] = {}
    try:
        running.wait_for("listening on")
        for number, answermode in (("1002", "auto"), ("1001", "manual")):
            calls = BaresipCalls(free_port(), audio, answermode)
            phones[number] = baresip(
                tmp_path / f"baresip-{number}",
                aor=f"{number}@{domain}",
                password=passwords[number],
                proxy_port=sip_instance.tls_port,
                ca=sip_instance.ca,
                regint=600,
                env=child_env,
                calls=calls,
            )
            controls[number] = BaresipControl(calls.control_port)
        for number, phone in phones.items():
            phone.wait_for(
                _reports_registration(f"{number}@{domain}"),
                f"{number} reported its registration",
                fail=lambda x: ": Register: " in x or "403 Forbidden" in x,
            )

        def both_registered() -> dict[str, dict[str, str]] | None:
            found = _registered(sip_instance, domain)
            return found if found.keys() >= {"1001", "1002"} else None

        before = poll_until(both_registered, "both bindings in `registrations list`")
        assert all(before[n]["FLOW"].startswith("tls:127.0.0.1:") for n in ("1001", "1002"))

        caller, callee = controls["1001"], controls["1002"]
        caller.command("dial", f"sip:1002@{domain}")
        established = caller.wait_for_event("CALL_ESTABLISHED")
        assert established["peeruri"].startswith(f"sip:1002@{domain}")
        # (baresip 1.0 answering by itself reports no CALL_INCOMING, only this)
        answered = callee.wait_for_event("CALL_ESTABLISHED")
        assert (answered["direction"], answered["peeruri"]) == ("incoming", f"sip:1001@{domain}")

        (live,) = poll_until(
            lambda: (
                [c for c in stored_live_calls(sip_instance.config) if c.state == "answered"]
                or None
            ),
            "the call answered in live_calls",
        )
        assert (live.domain, live.caller, live.callee) == (
            domain,
            f"1001@{domain}",
            f"1002@{domain}",
        )
        (listed,) = cli_rows(sip_instance.config, "calls", "list", domain)
        assert (listed["CALLER"], listed["CALLEE"], listed["STATE"]) == (
            f"1001@{domain}",
            f"1002@{domain}",
            "answered",
        )
        assert listed["CALL-ID"] == live.call_id

        time.sleep(HOLD_SECONDS)  # the call stays up; nothing is awaited here
        assert "CALL_CLOSED" not in caller.event_types() + callee.event_types()
        caller.command("hangup")
        caller.wait_for_event("CALL_CLOSED")
        callee.wait_for_event("CALL_CLOSED")

        (record,) = poll_until(
            lambda: stored_cdrs(sip_instance.config, domain) or None, "the call detail record"
        )
        assert record.call_id == live.call_id
        assert (record.caller, record.callee, record.direction) == (
            f"1001@{domain}",
            f"1002@{domain}",
            "internal",
        )
        assert (record.disposition, record.hangup_by, record.final_status) == (
            "answered",
            "caller",
            200,
        )
        assert (record.caller_transport, record.callee_transport) == ("tls", "tls")
        # Both phones' audio crossed the relay (plain RTP: neither offered SRTP).
        for leg in ("caller", "callee"):
            counters = record.media[leg]
            assert counters["suite"] == "plain", record.media
            assert counters["packets_in"] > 0 and counters["packets_out"] > 0, record.media
            # A packet or two sent before the answer reached us (the callee starts
            # sending as it answers) has no latched peer yet and is dropped.
            assert counters["dropped"] <= 5 and counters["auth_failures"] == 0, record.media
        assert record.answered_at is not None and record.ringing_at is not None
        assert record.setup_at <= record.ringing_at <= record.answered_at < record.ended_at
        assert record.setup_at < record.answered_at
        assert record.ended_at - record.answered_at >= HOLD_SECONDS
        assert stored_live_calls(sip_instance.config) == []
        assert cli_rows(sip_instance.config, "calls", "list") == []
        (row,) = cli_rows(sip_instance.config, "cdr", "list", domain)
        assert (row["DISPOSITION"], row["STATUS"], row["HANGUP"]) == ("answered", "200", "caller")

        # The SIP each phone saw: A was challenged for the INVITE, B got it (and
        # then the BYE) from the proxy with its Record-Route.
        a_lines, b_lines = phones["1001"].lines, phones["1002"].lines
        assert any(x.startswith("SIP/2.0 407 Proxy Authentication Required") for x in a_lines)
        assert any(x.startswith("INVITE sip:1002-") for x in b_lines), phones["1002"].tail()
        assert any(x.startswith("BYE sip:1002-") for x in b_lines), phones["1002"].tail()
        rr = f"Record-Route: <sip:127.0.0.1:{sip_instance.tls_port};transport=tls;lr>"
        assert rr in b_lines
        assert any("Call established: sip:1001@acme.example" in x for x in b_lines)
        assert any("Call with sip:1001@acme.example terminated" in x for x in b_lines)

        after = _registered(sip_instance, domain)
        for number in ("1001", "1002"):
            assert phones[number].process.poll() is None, phones[number].tail()
            assert after[number]["FLOW"] == before[number]["FLOW"]
            assert after[number]["CONTACT"] == before[number]["CONTACT"]
        stored = stored_registrations(sip_instance.config)
        assert len(stored) == 2 and all(r.expires_at > time.time() for r in stored)
    except BaseException:
        for number, phone in phones.items():  # shown by pytest with the failure
            print(f"--- baresip {number}\n{phone.tail(80)}")
        raise
    finally:
        for control in controls.values():
            control.close()
        for phone in phones.values():
            phone.stop()
        assert running.stop() == 0


# -- the concurrent-call quota, with the project's own test phone --------------

SMALL_DOMAIN = "small.example"


@dataclass
class Line:
    """One extension on its own TLS connection, registered."""

    phone: StreamPhone
    client: SipTestClient

    @property
    def number(self) -> str:
        return self.client.user

    def close(self) -> None:
        self.phone.close()


def _open_line(instance: SipInstance, number: str, password: str) -> Line:
    phone = StreamPhone("127.0.0.1", instance.tls_port, ca=instance.ca)
    client = SipTestClient(number, SMALL_DOMAIN, password, transport="TLS", local=phone.local)
    phone.send(client.register())
    challenge = phone.receive()
    assert challenge.status == 401, challenge.wire
    phone.send(client.register(authorization=client.authorization(challenge)))
    answer = phone.receive()
    assert answer.status == 200, answer.wire
    return Line(phone, client)


def _final(phone: StreamPhone) -> tuple[Message, list[int]]:
    """The next final response, and the statuses of the provisional ones before it."""
    provisional: list[int] = []
    while True:
        message = phone.receive()
        assert not message.is_request, message.wire
        if message.status >= 200:
            return message, provisional
        provisional.append(message.status)


def _invite(caller: Line, callee: str, call_id: str) -> None:
    """Send an INVITE, take the 407 and send it again with Proxy-Authorization."""
    caller.phone.send(caller.client.invite(callee, call_id=call_id))
    challenge = caller.phone.receive()
    assert challenge.status == 407, challenge.wire
    authorization = caller.client.authorization(
        challenge, method="INVITE", uri=f"sip:{callee}@{SMALL_DOMAIN}"
    )
    caller.phone.send(caller.client.invite(callee, call_id=call_id, authorization=authorization))


@dataclass
class Call:
    """An established call between two lines: the 200 the caller got."""

    caller: Line
    callee: Line
    answer: Message


def _call(caller: Line, callee: Line) -> Call:
    """Place a call and have the callee ring and answer; the caller ACKs."""
    call_id = f"{secrets.token_hex(8)}@quota-test"
    _invite(caller, callee.number, call_id)
    invite = callee.phone.receive()
    assert (invite.method, invite.call_id) == ("INVITE", call_id), invite.wire
    callee.phone.send(callee.client.answer(invite, 180, "Ringing"))
    callee.phone.send(callee.client.answer(invite, 200, "OK"))
    answer, provisional = _final(caller.phone)
    assert answer.status == 200, answer.wire
    assert provisional == [100, 180]
    caller.phone.send(caller.client.in_dialog("ACK", answer))
    ack = callee.phone.receive()
    assert (ack.method, ack.call_id) == ("ACK", call_id), ack.wire
    return Call(caller, callee, answer)


def _hang_up(call: Call) -> None:
    """The caller sends BYE; the callee gets it over its own connection and says 200."""
    call.caller.phone.send(call.caller.client.in_dialog("BYE", call.answer))
    bye = call.callee.phone.receive()
    assert (bye.method, bye.call_id) == ("BYE", call.answer.call_id), bye.wire
    call.callee.phone.send(call.callee.client.answer(bye, 200, "OK"))
    answer, _ = _final(call.caller.phone)
    assert (answer.status, answer.cseq.method) == (200, "BYE"), answer.wire


def _nothing_pending(line: Line) -> None:
    """Prove nothing was sent to ``line`` so far: an OPTIONS round trip on its
    connection. TLS is in order and the proxy runs on one thread, so anything
    sent to this line earlier (an INVITE) would arrive before the 200."""
    branch = f"z9hG4bK{secrets.token_hex(8)}"
    host, port = line.phone.local
    options = (
        f"OPTIONS sip:{SMALL_DOMAIN} SIP/2.0\r\n"
        f"Via: SIP/2.0/TLS {host}:{port};branch={branch};rport\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:{line.number}@{SMALL_DOMAIN}>;tag={secrets.token_hex(4)}\r\n"
        f"To: <sip:{SMALL_DOMAIN}>\r\n"
        f"Call-ID: {secrets.token_hex(8)}@probe\r\n"
        "CSeq: 1 OPTIONS\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()
    line.phone.send(options)
    first = line.phone.receive()
    assert not first.is_request, f"{line.number} was sent a request:\n{first.wire!r}"
    assert (first.status, first.cseq.method, first.vias[0].branch) == (200, "OPTIONS", branch)


def test_third_call_over_quota_is_refused_before_ringing(
    sip_instance: SipInstance, child_env: dict[str, str]
) -> None:
    """A tenant created with ``--max-calls 2`` has two calls up between six of its
    phones (each on its own TLS connection, registered with SHA-256 Digest). A
    third caller authenticates and is refused with 503 and a Warning naming the
    quota, as the first answer to its authenticated INVITE (no 100 Trying), and
    its callee's connection was sent nothing (nor were the busy callees'). The
    refusal is audited as ``call.rejected_quota`` (once) and leaves a
    ``rejected-quota`` call detail record. When one call ends with BYE, the same
    caller's next call is admitted, rings and is answered; at the end every
    call has its record and ``live_calls`` is empty."""
    passwords = {n: f"quota-secret-{n}" for n in ("2001", "2002", "2003", "2101", "2102", "2103")}
    _cli(sip_instance, "tenant", "add", "Small", "--domain", SMALL_DOMAIN, "--max-calls", "2")
    for number, password in passwords.items():
        _cli(sip_instance, "extension", "add", SMALL_DOMAIN, number, stdin=password + "\n")

    running = Running(sip_instance.config, child_env)
    lines: dict[str, Line] = {}
    try:
        running.wait_for("listening on")
        for number, password in passwords.items():
            lines[number] = _open_line(sip_instance, number, password)
        first = _call(lines["2001"], lines["2101"])
        second = _call(lines["2002"], lines["2102"])
        poll_until(
            lambda: (
                [c for c in stored_live_calls(sip_instance.config) if c.state == "answered"]
                if len(stored_live_calls(sip_instance.config)) == 2
                else None
            ),
            "two answered calls in live_calls",
        )

        refused_id = f"{secrets.token_hex(8)}@quota-test"
        _invite(lines["2003"], "2103", refused_id)
        refusal = lines["2003"].phone.receive()  # the very next message: no 100 Trying
        assert (refusal.status, refusal.call_id) == (503, refused_id), refusal.wire
        warning = refusal.first("warning") or ""
        assert "quota" in warning and "2" in warning, refusal.wire
        for number in ("2103", "2101", "2102"):
            _nothing_pending(lines[number])

        (audited,) = poll_until(
            lambda: audit_records(sip_instance.config, "call.rejected_quota") or None,
            "the call.rejected_quota audit record",
        )
        assert audited["target"] == f"call:{refused_id}"
        assert audited["tenant_id"] is not None
        assert json.loads(audited["details"]) == {
            "caller": f"2003@{SMALL_DOMAIN}",
            "callee": f"2103@{SMALL_DOMAIN}",
            "limit": 2,
            "refused_since_last_record": 1,
        }

        def refused_record() -> StoredCdr | None:
            return next(
                (
                    r
                    for r in stored_cdrs(sip_instance.config, SMALL_DOMAIN)
                    if r.call_id == refused_id
                ),
                None,
            )

        rejected = poll_until(refused_record, "the rejected-quota call detail record")
        assert (rejected.disposition, rejected.final_status) == ("rejected-quota", 503)
        assert (rejected.caller, rejected.callee) == (
            f"2003@{SMALL_DOMAIN}",
            f"2103@{SMALL_DOMAIN}",
        )
        assert rejected.answered_at is None and rejected.ringing_at is None
        assert {c.call_id for c in stored_live_calls(sip_instance.config)} == {
            first.answer.call_id,
            second.answer.call_id,
        }

        _hang_up(first)
        third = _call(lines["2003"], lines["2103"])  # admitted now: it rings and is answered
        _hang_up(second)
        _hang_up(third)

        def all_recorded() -> list[StoredCdr] | None:
            records = stored_cdrs(sip_instance.config, SMALL_DOMAIN)
            return records if len(records) == 4 else None

        records = {r.call_id: r for r in poll_until(all_recorded, "four call detail records")}
        for call in (first, second, third):
            record = records[call.answer.call_id]
            assert (record.disposition, record.hangup_by, record.final_status) == (
                "answered",
                "caller",
                200,
            )
            assert (record.caller, record.callee) == (
                f"{call.caller.number}@{SMALL_DOMAIN}",
                f"{call.callee.number}@{SMALL_DOMAIN}",
            )
        assert records[refused_id].disposition == "rejected-quota"
        assert len(audit_records(sip_instance.config, "call.rejected_quota")) == 1
        assert stored_live_calls(sip_instance.config) == []
        assert stored_cdrs(sip_instance.config, sip_instance.domain) == []
    finally:
        for line in lines.values():
            line.close()
        assert running.stop() == 0
