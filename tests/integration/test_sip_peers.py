"""The SIP edge against real third-party peers over real sockets: baresip (TLS),
sipp (plaintext UDP, internal subnets only) and sipvicious' svcrack (the
brute-force block and its lifting by an operator).

Every peer runs on loopback only (see :mod:`tests.integration.peers`).
"""

from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path

import pytest

from appliance.sipservice import POLL_SECONDS
from appliance.testing.sipclient import SipTestClient
from appliance.testing.sipsocket import DatagramPhone
from tests.integration.conftest import Running, SipInstance, telemancer
from tests.integration.peers import (
    PeerProcess,
    UdpRelay,
    baresip,
    cli_rows,
    free_udp_port,
    poll_until,
    run_sipp,
    set_sip_option,
    stored_registrations,
)

#: Debian 12's baresip 1.0 (libre 1.1.0: "Register: Function not implemented") and
#: sipp 3.6.1 ("createAuthHeader: authentication must use MD5") give up at a SHA-256
#: challenge instead of answering the MD5 one, so their instances offer MD5 alone,
#: as an operator with such phones would configure it (docs/config.md).
MD5_ONLY = '["MD5"]'


def _registrations(instance: SipInstance) -> list[dict[str, str]]:
    return cli_rows(instance.config, "registrations", "list", instance.domain)


def _audit(instance: SipInstance, action: str, target: str) -> list[dict[str, object]]:
    result = telemancer("--config", str(instance.config), "audit", "export")
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    return [r for r in records if r["action"] == action and r["target"] == target]


def _register(phone: DatagramPhone, client: SipTestClient) -> int:
    phone.send(client.register())
    challenge = phone.receive()
    assert challenge.status == 401
    phone.send(client.register(authorization=client.authorization(challenge)))
    return phone.receive().status


def test_baresip_registers_over_tls_and_refreshes(
    sip_instance: SipInstance, child_env: dict[str, str], tmp_path: Path
) -> None:
    """baresip registers over TLS as an extension an operator created with
    ``telemancer extension add`` (password on stdin, so the appliance knows it only
    from the store), and refreshes the registration on the same TLS connection: the stored
    binding's CSeq grows and its expiry moves on, and baresip saw two 200 OKs.

    (baresip 1.0 does not verify the server certificate even with
    ``sip_cafile`` set, so this proves the TLS transport, not its verification:
    test_sip_edge.py covers verification with Python's ssl.)"""
    set_sip_option(sip_instance.config, "min_expires", "10")
    set_sip_option(sip_instance.config, "digest_algorithms", MD5_ONLY)
    added = telemancer(
        "--config",
        str(sip_instance.config),
        "extension",
        "add",
        sip_instance.domain,
        "1002",
        input="baresip-secret-1002\n",
    )
    assert added.returncode == 0, added.stderr
    running = Running(sip_instance.config, child_env)
    phone: PeerProcess | None = None
    try:
        running.wait_for("listening on")
        phone = baresip(
            tmp_path / "baresip",
            aor=f"1002@{sip_instance.domain}",
            password="baresip-secret-1002",
            proxy_port=sip_instance.tls_port,
            ca=sip_instance.ca,
            regint=10,
            env=child_env,
        )
        phone.wait_for(
            lambda lines: any("1002@acme.example: {0/TLS/v4} 200 OK" in x for x in lines),
            "it reported the registration",
            fail=lambda line: ": Register: " in line or "403 Forbidden" in line,
        )
        (first,) = poll_until(
            lambda: [r for r in _registrations(sip_instance) if r["NUMBER"] == "1002"] or None,
            "the binding in `registrations list`",
        )
        assert first["FLOW"].startswith("tls:127.0.0.1:")
        assert first["USER-AGENT"].startswith("baresip")
        (stored,) = poll_until(lambda: stored_registrations(sip_instance.config) or None, "a row")
        refreshed = poll_until(
            lambda: next(
                (r for r in stored_registrations(sip_instance.config) if r.cseq > stored.cseq),
                None,
            ),
            "a re-registration",
        )
        assert refreshed.contact == stored.contact
        assert refreshed.expires_at > stored.expires_at
        assert (refreshed.transport, refreshed.flow) == ("tls", stored.flow)
        assert refreshed.source == stored.source  # the same TLS connection
        phone.wait_for(
            lambda lines: sum(x.startswith("SIP/2.0 200 OK") for x in lines) >= 2,
            "it saw the refresh answered",
        )
    finally:
        if phone is not None:
            phone.stop()
        assert running.stop() == 0


def test_sipp_registers_over_udp_from_an_internal_address(
    sip_instance: SipInstance, child_env: dict[str, str], tmp_path: Path
) -> None:
    """sipp, from 127.0.0.1 (inside internal_subnets), registers over plaintext
    UDP with MD5 Digest (``[authentication]``, ``-auth_uri``) and exits 0; the
    binding is listed with its UDP flow and sipp's user agent."""
    set_sip_option(sip_instance.config, "digest_algorithms", MD5_ONLY)
    running = Running(sip_instance.config, child_env)
    try:
        running.wait_for("listening on")
        run = run_sipp(
            tmp_path / "sipp",
            source="127.0.0.1",
            target=("127.0.0.1", sip_instance.plain_port),
            extension=sip_instance.extension,
            domain=sip_instance.domain,
            password=sip_instance.password,
            authenticate=True,
            env=child_env,
        )
        assert run.status == 0, run.describe()
        (binding,) = poll_until(lambda: _registrations(sip_instance) or None, "the binding")
        assert binding["NUMBER"] == sip_instance.extension
        assert binding["FLOW"].startswith("udp:127.0.0.1:")
        assert binding["USER-AGENT"] == "sipp"
    finally:
        assert running.stop() == 0


def test_sipp_outside_internal_subnets_gets_no_answer(
    sip_instance: SipInstance, child_env: dict[str, str], tmp_path: Path
) -> None:
    """Plaintext UDP is answered only inside internal_subnets: the same sipp
    REGISTER scenario is challenged (401) from 127.0.0.1, while from 127.0.0.5
    sipp sends the REGISTER and its retransmissions and receives nothing at all
    (not even a stray or out-of-call message) before its receive timeout."""
    running = Running(sip_instance.config, child_env)
    try:
        running.wait_for("listening on")
        inside = run_sipp(
            tmp_path / "inside",
            source="127.0.0.1",
            target=("127.0.0.1", sip_instance.plain_port),
            extension=sip_instance.extension,
            domain=sip_instance.domain,
            password=sip_instance.password,
            authenticate=False,
            env=child_env,
        )
        assert inside.status == 0, inside.describe()
        assert "SIP/2.0 401 Unauthorized" in inside.messages
        outside = run_sipp(
            tmp_path / "outside",
            source="127.0.0.5",
            target=("127.0.0.1", sip_instance.plain_port),
            extension=sip_instance.extension,
            domain=sip_instance.domain,
            password=sip_instance.password,
            authenticate=False,
            env=child_env,
        )
        assert outside.status == 1, outside.describe()  # 1: a call failed
        assert outside.messages.count("message sent") >= 2, outside.describe()
        assert "received" not in outside.messages, outside.describe()
        assert "receive timeout" in outside.errors, outside.describe()
        # sipp's own statistics: the 401 step was received 0 times and timed out once,
        # and no message arrived outside the call either.
        received = re.search(r"401 <-+\s+(\d+)\s+(\d+)\s+(\d+)", outside.output)
        assert received is not None and received.groups() == ("0", "0", "1"), outside.describe()
        assert "0 dead call msg" in outside.output and "0 out-of-call msg" in outside.output
        assert _registrations(sip_instance) == []
    finally:
        assert running.stop() == 0


def test_svcrack_is_blocked_after_five_failures_until_an_operator_lifts_it(
    sip_instance: SipInstance, child_env: dict[str, str], tmp_path: Path
) -> None:
    """sipvicious' svcrack guessing extension 1001's password from 127.0.0.7 with
    20 wrong passwords is blocked by its fifth wrong guess: the appliance logs the
    block after 5 failures, answered exactly its first 4 guesses (401) and nothing
    after, svcrack gives up for lack of answers, ``bans list`` shows the IP and
    the audit log holds exactly one ``sip.block`` for it. During the block a
    REGISTER from 127.0.0.7 gets no answer while a phone on 127.0.0.1 registers.
    ``bans lift`` is picked up by the running service within its poll interval:
    127.0.0.7 is challenged again, and the lift is audited."""
    attacker = "127.0.0.7"
    set_sip_option(sip_instance.config, "internal_subnets", f'["127.0.0.1/32", "{attacker}/32"]')
    running = Running(sip_instance.config, child_env)
    try:
        running.wait_for("listening on")
        # svcrack 0.3.8 parses -b/--bindingip but never uses it (its main() does
        # not pass it on): it binds all interfaces and sends from 127.0.0.1. It only
        # ever sends to the relay on 127.0.0.1, which gives it the attacker's
        # address and records what went each way.
        svcrack_port = free_udp_port("0.0.0.0")  # noqa: S104 (svcrack binds there)
        relay = UdpRelay(("127.0.0.1", sip_instance.plain_port), source=attacker)
        words = tmp_path / "words.txt"
        words.write_text("".join(f"wrong-guess-{i:02d}\n" for i in range(20)))
        svcrack = PeerProcess(
            [
                str(Path(sys.executable).with_name("sipvicious_svcrack")),
                *("-u", sip_instance.extension, "-d", str(words)),
                *("--domain", sip_instance.domain, "-x", "127.0.0.1"),
                *("-P", str(svcrack_port), "-p", str(relay.port)),
                *("--maximumtime", "3", "-vv", "127.0.0.1"),
            ],
            env=child_env,
            cwd=tmp_path,
        )
        try:
            blocked = running.wait_for("blocked {ip} after {failures} failed REGISTERs")
            assert (blocked["ip"], blocked["failures"]) == (attacker, 5)
            assert svcrack.wait() == 30, svcrack.tail()  # 30: it stopped for lack of answers
        finally:
            svcrack.stop()
            relay.stop()
        assert any("since we last received a response - stopping" in x for x in svcrack.lines)
        guesses = [d for d in relay.sent_upstream if d.header("authorization") is not None]
        assert 5 <= len(guesses) < 20, svcrack.tail()
        guess_branches = [d.branch for d in guesses]
        answers = [d for d in relay.relayed_back if d.branch in guess_branches]
        assert [d.status for d in answers] == [401] * 4
        assert {d.branch for d in answers} == set(guess_branches[:4])
        assert all(d.status != 200 for d in relay.relayed_back)

        (ban,) = poll_until(lambda: cli_rows(sip_instance.config, "bans", "list") or None, "ban")
        assert (ban["IP"], ban["REASON"]) == (attacker, "sip-register-auth-failures")
        poll_until(lambda: _audit(sip_instance, "sip.block", f"ip:{attacker}") or None, "audit")
        assert len(_audit(sip_instance, "sip.block", f"ip:{attacker}")) == 1
        assert _audit(sip_instance, "sip.block", "ip:127.0.0.1") == []

        outsider = DatagramPhone("127.0.0.1", sip_instance.plain_port, source=attacker)
        probe = SipTestClient(
            sip_instance.extension,
            sip_instance.domain,
            sip_instance.password,
            local=outsider.local,
        )
        outsider.send(probe.register())
        # Sent after the probe, so handled after it by the single reactor thread.
        phone = DatagramPhone("127.0.0.1", sip_instance.plain_port)
        client = SipTestClient(
            sip_instance.extension, sip_instance.domain, sip_instance.password, local=phone.local
        )
        assert _register(phone, client) == 200
        with pytest.raises(TimeoutError):
            outsider.receive(timeout=1.0)
        (binding,) = poll_until(lambda: _registrations(sip_instance) or None, "the binding")
        assert binding["FLOW"] == f"udp:127.0.0.1:{phone.local[1]}"

        lifted = telemancer("--config", str(sip_instance.config), "bans", "lift", attacker)
        assert lifted.returncode == 0, lifted.stderr
        lifted_at = time.monotonic()

        def challenged() -> int | None:
            outsider.send(probe.register())
            try:
                return outsider.receive(timeout=0.25).status
            except TimeoutError:
                return None

        assert poll_until(challenged, "an answer after the lift") == 401
        elapsed = time.monotonic() - lifted_at
        assert elapsed < POLL_SECONDS + 1.0, f"picked up after {elapsed:.1f}s"
        assert cli_rows(sip_instance.config, "bans", "list") == []
        (unblock,) = _audit(sip_instance, "sip.unblock", f"ip:{attacker}")
        assert json.loads(str(unblock["details"]))["reason"] == "lifted by operator"
        outsider.close()
        phone.close()
    finally:
        assert running.stop() == 0
