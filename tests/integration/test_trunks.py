"""Calls through a tenant's trunk to a real carrier: Kamailio 5.6 as the
carrier's SIP/TLS edge (its certificate issued here by a test CA, for
``carrier.test``) and sipp as the telephone network behind it
(:mod:`tests.integration.carrier`).

- Out: a phone dials a national number; the appliance normalises it to
  E.164, routes it to the trunk, opens a TLS connection to Kamailio,
  verifies the chain against the trunk's CA bundle and the RFC 5922 identity
  against ``--tls-domain``, answers Kamailio's 407 with the trunk's
  credentials, and the call reaches the sipp UAS.
- In: sipp calls a DID through Kamailio, which relays over TLS from an
  address in the trunk's inbound networks; the DID's extension rings.
- Refused: a carrier whose certificate does not carry the trunk's
  ``--tls-domain`` is sent nothing, and the phone gets 503 at once.

The appliance and its phone are on 127.0.0.1, Kamailio on 127.0.0.3, sipp on
127.0.0.4: everything stays on 127.0.0.0/8. Every process a test starts is
stopped by an :class:`~contextlib.ExitStack` (a ``finally``), and the logs of
Kamailio, sipp and the appliance are printed at the end, which pytest shows
only when the test fails.
"""

from __future__ import annotations

import json
import re
import secrets
import socket
import sys
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest
from twisted.logger import formatEvent

from appliance.media.sdp import parse_sdp
from appliance.sip.message import Message
from appliance.testing.sipclient import SipTestClient
from appliance.testing.sipsocket import StreamPhone
from tests.integration.carrier import (
    CARRIER_DOMAIN,
    CARRIER_IP,
    NETWORK_IP,
    CarrierPki,
    CarrierPlan,
    Kamailio,
    Sipp,
    cdr_export,
    free_tcp_port,
    issue_carrier_pki,
    sipp_uac,
    sipp_uas,
    split_route_set,
)
from tests.integration.conftest import Running, SipInstance, telemancer
from tests.integration.dnsserver import Record
from tests.integration.peers import PeerProcess, free_udp_port, poll_until

#: The trunk's Digest credentials at the carrier.
TRUNK_USER = "acme"
TRUNK_PASSWORD = "trunk-secret-acme"
#: What the phone dials (a UK national number) and what the carrier must get.
DIALLED = "01632960123"
E164 = "+441632960123"
#: A DID of the tenant, ringing extension 1001.
DID = "+441632960999"
#: The caller on the network behind the carrier.
NETWORK_CALLER = "+447700900123"
#: How long the inbound call is held up before sipp hangs up.
HOLD_SECONDS = 1.0
#: How quickly a refused carrier must turn into a final answer for the phone.
REFUSAL_SECONDS = 5.0
#: Where a failing carrier server runs (it hangs up on every connection).
DOWN_SERVER_IP = "127.0.0.6"
#: The repository root, from where ``python -m tests.integration.dnsserver`` runs.
ROOT = Path(__file__).resolve().parents[2]


# -- setting up ------------------------------------------------------------------


def _cli(instance: SipInstance, *argv: str, stdin: str | None = None) -> str:
    result = telemancer("--config", str(instance.config), *argv, input=stdin)
    assert result.returncode == 0, f"{argv}: {result.stderr}"
    return result.stdout


def _add_trunk(
    instance: SipInstance,
    pki: CarrierPki,
    plan: CarrierPlan,
    *,
    tls_domain: str,
    inbound: bool = False,
    host: str = CARRIER_IP,
    located: bool = False,
    password: str = TRUNK_PASSWORD,
) -> None:
    """``trunk add`` as an operator runs it: TLS to Kamailio, its CA bundle and
    identity, Digest credentials (``password`` on stdin), optionally the
    carrier's source network for inbound calls. ``host`` is Kamailio's address,
    or with ``located`` a name whose servers DNS gives (RFC 3263, no port)."""
    where = [] if located else ["--port", str(plan.tls_port)]
    argv = [
        "trunk",
        "add",
        instance.domain,
        "carrier",
        "--host",
        host,
        *where,
        "--transport",
        "tls",
        "--tls-domain",
        tls_domain,
        "--ca-bundle",
        str(pki.ca),
        "--username",
        TRUNK_USER,
        "--password-stdin",
    ]
    if inbound:
        argv += ["--inbound-network", f"{CARRIER_IP}/32"]
    _cli(instance, *argv, stdin=password + "\n")


@pytest.fixture
def carrier_plan(sip_instance: SipInstance, tmp_path: Path) -> tuple[CarrierPlan, CarrierPki]:
    """Ports for Kamailio and sipp, and the carrier's certificate from a fresh test CA."""
    # The appliance's plaintext ports are bound on 0.0.0.0 later, so no peer may
    # take their numbers now on another loopback address.
    taken = {sip_instance.tls_port, sip_instance.plain_port}

    def other(pick: Callable[[], int]) -> int:
        return next(port for port in iter(pick, None) if port not in taken)

    plan = CarrierPlan(
        tls_port=other(lambda: free_tcp_port(CARRIER_IP)),
        udp_port=other(lambda: free_udp_port(CARRIER_IP)),
        appliance_tls_port=sip_instance.tls_port,
        uas_port=other(lambda: free_udp_port(NETWORK_IP)),
        username=TRUNK_USER,
        password=TRUNK_PASSWORD,
    )
    return plan, issue_carrier_pki(tmp_path / "carrier-pki")


def _start_kamailio(
    stack: ExitStack, plan: CarrierPlan, pki: CarrierPki, directory: Path, env: dict[str, str]
) -> Kamailio:
    kamailio = Kamailio(directory, plan, pki, env=env)
    stack.callback(lambda: print(f"--- kamailio\n{kamailio.tail(150)}"))
    stack.callback(kamailio.stop)
    kamailio.wait_ready()
    return kamailio


def _start_dns(
    stack: ExitStack, records: list[Record], directory: Path, env: dict[str, str]
) -> int:
    """tests/integration/dnsserver.py serving ``records`` in its own process; its UDP port."""
    directory.mkdir(parents=True, exist_ok=True)
    zone = directory / "zone.json"
    zone.write_text(json.dumps(records))
    server = PeerProcess(
        [sys.executable, "-m", "tests.integration.dnsserver", str(zone)], env=env, cwd=ROOT
    )
    stack.callback(server.stop)
    server.wait_for(lambda lines: bool(lines) and lines[0].isdigit(), "its port")
    return int(server.lines[0])


class _HangingUp:
    """A carrier server that is failing: it accepts TCP connections on ``host``
    and closes them at once, counting them."""

    def __init__(self, host: str) -> None:
        self.listener = socket.create_server((host, 0))
        self.port = int(self.listener.getsockname()[1])
        self.accepted = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:  # closed
                return
            self.accepted += 1
            connection.close()

    def close(self) -> None:
        self.listener.close()


def _use_dns(instance: SipInstance, port: int) -> None:
    """The appliance asks only the test DNS server (``[sip] dns_servers``)."""
    text = instance.config.read_text()
    assert "\n[sip]\n" in text
    instance.config.write_text(
        text.replace("\n[sip]\n", f'\n[sip]\ndns_servers = ["127.0.0.1:{port}"]\n', 1)
    )


def _start_sipp(stack: ExitStack, sipp: Sipp) -> Sipp:
    stack.callback(lambda: print(sipp.describe()))
    stack.callback(sipp.stop)
    return sipp


def _start_appliance(stack: ExitStack, instance: SipInstance, env: dict[str, str]) -> Running:
    """``telemancer run``; stopped at the end (exit status 0), then its log printed."""
    running = Running(instance.config, env)
    stack.callback(_print_log, running)
    stack.callback(_stop, running)
    running.wait_for("listening on")
    return running


def _stop(running: Running) -> None:
    assert running.stop() == 0


def _print_log(running: Running) -> None:
    """Every event the stopped appliance logged, one line each."""
    print("--- appliance log")
    for event in running.drain():
        level = event.get("log_level", {}).get("name", "")
        print(f"{level}: {formatEvent(event)}")


# -- the phone -------------------------------------------------------------------


@dataclass
class Phone:
    """Extension 1001, registered over TLS with the project's test phone."""

    socket: StreamPhone
    client: SipTestClient

    def receive_final(self) -> tuple[Message, list[int]]:
        """The next final response, and the statuses of the provisional ones before it."""
        provisional: list[int] = []
        while True:
            message = self.socket.receive()
            assert not message.is_request, message.wire
            if message.status >= 200:
                return message, provisional
            provisional.append(message.status)

    def dial(
        self,
        dialled: str,
        call_id: str,
        body: bytes | None = None,
        extra: tuple[str, ...] = (),
    ) -> str:
        """INVITE ``dialled`` (offering ``body``, with ``extra`` header lines) and
        answer the appliance's 407: the Authorization value sent."""
        client = self.client
        self.socket.send(client.invite(dialled, call_id=call_id, extra=extra, body=body))
        challenge = self.socket.receive()
        assert challenge.status == 407, challenge.wire
        uri = f"sip:{dialled}@{client.domain}"
        authorization = client.authorization(challenge, method="INVITE", uri=uri)
        self.socket.send(
            client.invite(
                dialled, call_id=call_id, authorization=authorization, extra=extra, body=body
            )
        )
        return authorization

    def call(
        self, dialled: str, call_id: str, body: bytes | None = None
    ) -> tuple[Message, list[int]]:
        """:meth:`dial`, then the final answer and the provisional statuses before it."""
        self.dial(dialled, call_id, body)
        return self.receive_final()

    def in_dialog(self, method: str, answer: Message) -> bytes:
        """ACK or BYE in the dialog of ``answer``, routed by its whole Record-Route:
        the UAC's route set is the reverse of its entries (sipp writes them as one
        comma-separated header, which the test client would not split)."""
        entries = split_route_set([f.value for f in answer.all("record-route")])
        return self.client.in_dialog(method, answer, route=", ".join(reversed(entries)))


def _register(stack: ExitStack, instance: SipInstance) -> Phone:
    socket = StreamPhone("127.0.0.1", instance.tls_port, ca=instance.ca)
    stack.callback(socket.close)
    client = SipTestClient(
        instance.extension, instance.domain, instance.password, transport="TLS", local=socket.local
    )
    socket.send(client.register())
    challenge = socket.receive()
    assert challenge.status == 401, challenge.wire
    socket.send(client.register(authorization=client.authorization(challenge)))
    answer = socket.receive()
    assert answer.status == 200, answer.wire
    return Phone(socket, client)


def _outbound(
    stack: ExitStack,
    instance: SipInstance,
    carrier_plan: tuple[CarrierPlan, CarrierPki],
    env: dict[str, str],
    tmp_path: Path,
    *,
    reliable: bool = False,
    zone: list[Record] | None = None,
    password: str = TRUNK_PASSWORD,
) -> tuple[Kamailio, Sipp, Phone, Running]:
    """Outbound calls set up: acme.example with country code 44 and route ``+44``
    to the trunk "carrier" (Kamailio over TLS), Kamailio, a sipp UAS behind it
    (``reliable``: it rings reliably, RFC 3262), the appliance, and extension
    1001 registered. With a ``zone``, the trunk names ``carrier.test`` and the
    appliance finds its servers in that zone (RFC 3263), served by a DNS
    server of the test's own, before the phone registers. ``password`` is
    the trunk's (Kamailio knows only the right one). Returns Kamailio, the
    UAS, the phone and the running appliance."""
    plan, pki = carrier_plan
    _cli(instance, "dialplan", "set", instance.domain, "--country-code", "44")
    if zone is None:
        _add_trunk(instance, pki, plan, tls_domain=CARRIER_DOMAIN, password=password)
    else:
        _use_dns(instance, _start_dns(stack, zone, tmp_path / "dns", env))
        _add_trunk(
            instance, pki, plan, tls_domain=CARRIER_DOMAIN, host=CARRIER_DOMAIN, located=True
        )
    _cli(instance, "route", "add", instance.domain, "+44", "carrier")
    kamailio = _start_kamailio(stack, plan, pki, tmp_path / "kamailio", env)
    uas = _start_sipp(
        stack, sipp_uas(tmp_path / "uas", port=plan.uas_port, env=env, reliable=reliable)
    )
    running = _start_appliance(stack, instance, env)
    if zone is not None:
        running.wait_for("trunk {trunk} located")
    return kamailio, uas, _register(stack, instance), running


# -- what is checked ---------------------------------------------------------------

#: An SDES key in SDP (RFC 4568 ``inline:`` key and salt, base64).
_INLINE = re.compile(r"inline:([A-Za-z0-9+/=]+)")


def _cdr(instance: SipInstance, call_id: str) -> dict[str, str]:
    """The call's record as ``cdr export`` shows it (waiting for the service's write)."""
    return poll_until(
        lambda: next(
            (r for r in cdr_export(instance.config, instance.domain) if r["call_id"] == call_id),
            None,
        ),
        f"the call detail record of {call_id}",
    )


def _user(request_line: str) -> str:
    """The user part of the Request-URI in a request line."""
    uri = request_line.split(" ")[1]
    return uri.split(":", 1)[1].split("@", 1)[0]


# -- the tests -------------------------------------------------------------------


def test_outbound_call_through_kamailio_to_a_sipp_uas(
    sip_instance: SipInstance,
    carrier_plan: tuple[CarrierPlan, CarrierPki],
    child_env: dict[str, str],
    tmp_path: Path,
) -> None:
    """A phone of acme.example (country code 44, route ``+44`` to the trunk
    "carrier") dials the national number 01632960123. The appliance
    normalises it to +441632960123, connects to Kamailio over TLS and accepts
    its certificate (chain to the trunk's CA bundle, ``carrier.test`` from
    ``--tls-domain``), is challenged with 407 by Kamailio and answers with the
    trunk's Digest credentials; Kamailio accepts them (its log names user
    acme) and relays the INVITE to the sipp UAS, which sees Request-URI user
    +441632960123 and a P-Asserted-Identity naming extension 1001. The phone
    gets 180 and 200, whose SDP answer names the relay (the offer survived the
    carrier's challenge); its ACK and BYE follow the route set through the
    appliance and Kamailio to the UAS, which completes its scenario (exit 0).
    The call detail record says outbound, trunk carrier, callee
    +441632960123, answered, hung up by the caller."""
    domain = sip_instance.domain
    with ExitStack() as stack:
        kamailio, uas, phone, _ = _outbound(stack, sip_instance, carrier_plan, child_env, tmp_path)

        call_id = f"{secrets.token_hex(8)}@trunk-out"
        answer, provisional = phone.call(DIALLED, call_id, body=phone.client.sdp())
        assert answer.status == 200, answer.wire
        # The relay's address and port on each leg, never the other party's.
        section = parse_sdp(answer.body).media[0]
        assert section.port not in (phone.client.media_port, 0), answer.wire
        assert (answer.call_id, answer.cseq.method) == (call_id, "INVITE")
        assert 180 in provisional, provisional
        phone.socket.send(phone.in_dialog("ACK", answer))
        poll_until(lambda: uas.received_requests("ACK") or None, "the ACK at the sipp UAS")
        phone.socket.send(phone.in_dialog("BYE", answer))
        bye_answer, _ = phone.receive_final()
        assert (bye_answer.status, bye_answer.cseq.method) == (200, "BYE"), bye_answer.wire
        assert uas.wait() == 0, uas.describe()

        (invite,) = uas.received_requests("INVITE")
        assert _user(invite.start_line) == E164, invite.start_line
        assert invite.start_line == f"INVITE sip:{E164}@{CARRIER_DOMAIN} SIP/2.0"
        assert invite.headers("P-Asserted-Identity") == [
            f"<sip:{sip_instance.extension}@{domain}>"
        ], invite.text
        assert "m=audio " in invite.text, invite.text
        assert f"m=audio {phone.client.media_port} " not in invite.text, invite.text
        # Kamailio challenged the first INVITE (it came over TLS from the
        # appliance) and let through only the one with the trunk's credentials.
        invites = kamailio.received("INVITE")
        assert len(invites) == 2, kamailio.tail()
        assert all("from 127.0.0.1:" in line and "over tls" in line for line in invites)
        (accepted,) = kamailio.authenticated()
        assert f"authenticated {TRUNK_USER} for INVITE sip:{E164}@" in accepted, accepted
        assert kamailio.received("ACK") and kamailio.received("BYE"), kamailio.tail()

        record = _cdr(sip_instance, call_id)
        assert (record["direction"], record["trunk"], record["callee"]) == (
            "outbound",
            "carrier",
            E164,
        )
        assert (record["caller"], record["disposition"], record["final_status"]) == (
            f"{sip_instance.extension}@{domain}",
            "answered",
            "200",
        )
        assert record["hangup_by"] == "caller"


def test_a_carrier_refusing_the_trunks_credentials_gets_the_caller_a_403(
    sip_instance: SipInstance,
    carrier_plan: tuple[CarrierPlan, CarrierPki],
    child_env: dict[str, str],
    tmp_path: Path,
) -> None:
    """The trunk's password is wrong, so Kamailio challenges the INVITE that
    carries the trunk's credentials again. The appliance answers a carrier's
    challenge only once: the phone gets 403, never Kamailio's challenge (its
    realm is the carrier's), the call reaches no one, and the record says why."""
    with ExitStack() as stack:
        kamailio, uas, phone, _ = _outbound(
            stack, sip_instance, carrier_plan, child_env, tmp_path, password="wrong-password"
        )
        call_id = f"{secrets.token_hex(8)}@trunk-refused"
        answer, _ = phone.call(DIALLED, call_id)
        assert answer.status == 403, answer.wire
        assert not answer.all("proxy-authenticate") and not answer.all("www-authenticate")
        assert len(kamailio.received("INVITE")) == 2 and not kamailio.authenticated(), (
            kamailio.tail()
        )
        assert uas.received_requests("INVITE") == []
        record = _cdr(sip_instance, call_id)
        assert (record["disposition"], record["final_status"]) == ("failed", "403"), record
        assert '"end_reason":"trunk-credentials-refused"' in record["media"], record


def test_no_secret_of_a_call_reaches_the_log(
    sip_instance: SipInstance,
    carrier_plan: tuple[CarrierPlan, CarrierPki],
    child_env: dict[str, str],
    tmp_path: Path,
) -> None:
    """Security: at the most verbose log level, an SRTP call out through the
    trunk (the phone's Digest answer to our 407, the trunk's to Kamailio's,
    SDES keys on both legs) leaves none of its secrets in anything the
    appliance logged: not the phone's or the trunk's password, not the
    phone's Digest response, not a key the phone offered, nor the relay's in
    its answer to the phone or in its offer to the carrier."""
    text = sip_instance.config.read_text()
    assert '\nlevel = "info"' in text
    sip_instance.config.write_text(text.replace('\nlevel = "info"', '\nlevel = "debug"', 1))
    with ExitStack() as stack:
        _, uas, phone, appliance = _outbound(
            stack, sip_instance, carrier_plan, child_env, tmp_path
        )
        client, call_id = phone.client, f"{secrets.token_hex(8)}@trunk-secrets"
        offer = client.sdp(profile="RTP/SAVP", crypto=client.crypto_offer())
        authorization = phone.dial(DIALLED, call_id, body=offer)
        answer, _ = phone.receive_final()
        assert answer.status == 200, answer.wire
        phone.socket.send(phone.in_dialog("ACK", answer))
        phone.socket.send(phone.in_dialog("BYE", answer))
        bye_answer, _ = phone.receive_final()
        assert bye_answer.status == 200, bye_answer.wire
        assert uas.wait() == 0, uas.describe()
        (carrier_invite,) = uas.received_requests("INVITE")
        assert appliance.stop() == 0
        events = appliance.drain()
    logged = "\n".join(json.dumps(event) for event in events)
    assert "SIP listening on" in logged and len(events) > 10, logged
    response = re.search(r'response="([0-9a-f]+)"', authorization)
    assert response is not None
    theirs = _INLINE.findall(offer.decode())
    to_phone, to_carrier = (
        _INLINE.findall(answer.body.decode()),
        _INLINE.findall(carrier_invite.text),
    )
    assert theirs and len(to_phone) == 1 and to_carrier, (answer.wire, carrier_invite.text)
    kept = {
        "the phone's password": [sip_instance.password],
        "the trunk's password": [TRUNK_PASSWORD],
        "the phone's Digest response": [response.group(1)],
        "a key the phone offered": theirs,
        "the relay's key to the phone": to_phone,
        "a key the relay offered the carrier": to_carrier,
    }
    for what, values in kept.items():
        assert not [value for value in values if value in logged], f"{what} was logged"


def test_our_bye_reaches_the_carrier_along_its_route_set(
    sip_instance: SipInstance,
    carrier_plan: tuple[CarrierPlan, CarrierPki],
    child_env: dict[str, str],
    tmp_path: Path,
) -> None:
    """The phone's TLS connection drops during an outbound call, so the appliance
    ends the call itself: its BYE toward the carrier carries the route set from
    the 200's Record-Route (Kamailio's two entries). Kamailio routes in-dialog
    requests only by Route (``loose_route``) and drops anything else, so only
    then does the BYE reach the sipp UAS, which answers it and completes its
    scenario. The record says hung up by the system."""
    with ExitStack() as stack:
        kamailio, uas, phone, _ = _outbound(stack, sip_instance, carrier_plan, child_env, tmp_path)

        call_id = f"{secrets.token_hex(8)}@trunk-drop"
        answer, _ = phone.call(DIALLED, call_id, body=phone.client.sdp())
        assert answer.status == 200, answer.wire
        phone.socket.send(phone.in_dialog("ACK", answer))
        poll_until(lambda: uas.received_requests("ACK") or None, "the ACK at the sipp UAS")
        phone.socket.close()
        assert uas.wait() == 0, uas.describe()

        assert len(uas.received_requests("BYE")) == 1, uas.describe()
        assert [line for line in kamailio.tail().splitlines() if "in-dialog BYE" in line], (
            kamailio.tail()
        )
        record = _cdr(sip_instance, call_id)
        assert (record["disposition"], record["hangup_by"]) == ("answered", "system"), record
        assert "end_reason" not in record["media"], record  # the lost connection ended it


def test_a_carrier_server_that_is_down_hands_the_call_to_the_next_one(
    sip_instance: SipInstance,
    carrier_plan: tuple[CarrierPlan, CarrierPki],
    child_env: dict[str, str],
    tmp_path: Path,
) -> None:
    """RFC 3263 §4.3 failover, with real DNS and a real carrier. The trunk
    names its carrier ``carrier.test`` without a port, and the appliance asks
    only the test's DNS server (``[sip] dns_servers``). The server gives
    ``_sips._tcp.carrier.test`` two servers: first (priority 10) one on
    127.0.0.6, which accepts each connection and closes it at once, then
    (priority 20) Kamailio on 127.0.0.3. The phone's INVITE goes to 127.0.0.6
    first, and the lost connection fails that branch. The appliance then sends
    the INVITE to Kamailio on a new branch and answers its 407, and the sipp
    UAS answers. The phone sees only 180 and 200: its call completes, and the
    record says answered through the trunk."""
    plan, _ = carrier_plan
    down = _HangingUp(DOWN_SERVER_IP)
    down_port = down.port
    zone: list[Record] = [
        ["SRV", f"_sips._tcp.{CARRIER_DOMAIN}", 10, 0, down_port, f"down.{CARRIER_DOMAIN}"],
        ["SRV", f"_sips._tcp.{CARRIER_DOMAIN}", 20, 0, plan.tls_port, f"edge.{CARRIER_DOMAIN}"],
        ["A", f"down.{CARRIER_DOMAIN}", DOWN_SERVER_IP],
        ["A", f"edge.{CARRIER_DOMAIN}", CARRIER_IP],
    ]
    with ExitStack() as stack:
        stack.callback(down.close)
        kamailio, uas, phone, _ = _outbound(
            stack, sip_instance, carrier_plan, child_env, tmp_path, zone=zone
        )
        call_id = f"{secrets.token_hex(8)}@failover"
        answer, provisional = phone.call(DIALLED, call_id, body=phone.client.sdp())
        assert answer.status == 200, answer.wire
        # The relay's address and port on each leg, never the other party's.
        section = parse_sdp(answer.body).media[0]
        assert section.port not in (phone.client.media_port, 0), answer.wire
        assert 180 in provisional and all(s in (100, 180, 183) for s in provisional), provisional
        phone.socket.send(phone.in_dialog("ACK", answer))
        phone.socket.send(phone.in_dialog("BYE", answer))
        bye_answer, _ = phone.receive_final()
        assert (bye_answer.status, bye_answer.cseq.method) == (200, "BYE"), bye_answer.wire
        assert uas.wait() == 0, uas.describe()

        # The first server was tried (and hung up on the appliance); Kamailio
        # then got the INVITE, challenged once and then with the credentials.
        assert down.accepted >= 1
        assert len(kamailio.received("INVITE")) == 2, kamailio.tail()
        (invite,) = uas.received_requests("INVITE")
        assert invite.start_line == f"INVITE sip:{E164}@{CARRIER_DOMAIN} SIP/2.0"
        record = _cdr(sip_instance, call_id)
        assert (record["trunk"], record["disposition"], record["final_status"]) == (
            "carrier",
            "answered",
            "200",
        )


def test_a_reliable_ringing_is_pracked_through_kamailio(
    sip_instance: SipInstance,
    carrier_plan: tuple[CarrierPlan, CarrierPki],
    child_env: dict[str, str],
    tmp_path: Path,
) -> None:
    """The sipp UAS behind Kamailio rings reliably (RFC 3262: Require 100rel,
    RSeq) and answers only once its PRACK has come. The phone's PRACK travels
    in the early dialog through the appliance and Kamailio (which routes it by
    Route), with its RAck naming the INVITE the UAS saw: the one the appliance
    re-sent with a higher CSeq to answer Kamailio's 407. The PRACK's 200 and
    then the INVITE's come back, the latter with the relay's answer to the
    phone's offer; ACK and BYE end the call, and sipp completes its
    scenario."""
    with ExitStack() as stack:
        _, uas, phone, _ = _outbound(
            stack, sip_instance, carrier_plan, child_env, tmp_path, reliable=True
        )

        call_id = f"{secrets.token_hex(8)}@trunk-100rel"
        client = phone.client
        phone.dial(DIALLED, call_id, body=client.sdp(), extra=("Supported: 100rel",))
        ringing = phone.socket.receive()
        while ringing.status == 100:
            ringing = phone.socket.receive()
        assert (ringing.status, ringing.first("require"), ringing.first("rseq")) == (
            180,
            "100rel",
            "1",
        ), ringing.wire
        invite_cseq = ringing.cseq.number
        rack = f"RAck: 1 {invite_cseq} INVITE\r\nContent-Length:".encode()
        phone.socket.send(phone.in_dialog("PRACK", ringing).replace(b"Content-Length:", rack, 1))
        finals: dict[str, Message] = {}
        while len(finals) < 2:  # the PRACK's answer and the INVITE's, 180s again between
            message = phone.socket.receive()
            if message.status >= 200:
                finals[message.cseq.method] = message
        assert finals["PRACK"].status == 200, finals["PRACK"].wire
        answer = finals["INVITE"]
        assert (answer.status, answer.cseq.number) == (200, invite_cseq), answer.wire
        section = parse_sdp(answer.body).media[0]  # the relay's answer to our offer
        assert section.port not in (client.media_port, 0), answer.wire
        phone.socket.send(phone.in_dialog("ACK", answer))
        phone.socket.send(phone.in_dialog("BYE", answer))
        bye_answer, _ = phone.receive_final()
        assert (bye_answer.status, bye_answer.cseq.method) == (200, "BYE"), bye_answer.wire
        assert uas.wait() == 0, uas.describe()

        (seen_invite,) = uas.received_requests("INVITE")
        (prack,) = uas.received_requests("PRACK")
        (seen_cseq,) = seen_invite.headers("CSeq")
        assert prack.headers("RAck") == [f"1 {seen_cseq}"], prack.text
        assert seen_cseq == f"{invite_cseq + 1} INVITE", seen_invite.text


def test_inbound_call_from_kamailio_reaches_the_did(
    sip_instance: SipInstance,
    carrier_plan: tuple[CarrierPlan, CarrierPki],
    child_env: dict[str, str],
    tmp_path: Path,
) -> None:
    """DID +441632960999 rings extension 1001; the trunk "carrier" admits
    calls from 127.0.0.3/32. A sipp UAC on the network side calls the DID
    through Kamailio, which relays the INVITE over TLS from 127.0.0.3 (the
    appliance logs the connection and Kamailio's client certificate) with
    Request-URI ``sip:+441632960999@<appliance>``. The appliance recognises
    the carrier by the connection's source address (no Digest challenge), and
    the phone registered as 1001 over TLS gets the INVITE from the caller's
    number, rings and answers. The sipp UAC gets the 200, sends ACK and
    (after holding the call) BYE along the route set, both reach the phone,
    and sipp completes its call (exit 0). The call detail record says
    inbound, trunk carrier, answered, hung up by the caller."""
    plan, pki = carrier_plan
    domain = sip_instance.domain
    _cli(sip_instance, "dialplan", "set", domain, "--country-code", "44")
    _add_trunk(sip_instance, pki, plan, tls_domain=CARRIER_DOMAIN, inbound=True)
    _cli(sip_instance, "did", "add", domain, DID, sip_instance.extension)

    with ExitStack() as stack:
        kamailio = _start_kamailio(stack, plan, pki, tmp_path / "kamailio", child_env)
        running = _start_appliance(stack, sip_instance, child_env)
        phone = _register(stack, sip_instance)
        uac = _start_sipp(
            stack,
            sipp_uac(
                tmp_path / "uac",
                carrier=(CARRIER_IP, plan.udp_port),
                did=DID,
                caller=NETWORK_CALLER,
                hold_seconds=HOLD_SECONDS,
                env=child_env,
            ),
        )

        invite = phone.socket.receive()
        assert invite.method == "INVITE", invite.wire
        assert invite.uri.startswith(f"sip:{sip_instance.extension}@"), invite.uri
        assert f"<sip:{NETWORK_CALLER}@" in (invite.first("from") or ""), invite.wire
        # The network's caller makes a late offer: no SDP in the INVITE, so the
        # phone offers in its 200 and gets the answer in the ACK, from the relay.
        assert invite.body == b"", invite.wire
        phone.socket.send(phone.client.answer(invite, 180, "Ringing"))
        phone.socket.send(phone.client.answer(invite, 200, "OK", body=phone.client.sdp()))
        ack = phone.socket.receive()
        assert (ack.method, ack.call_id) == ("ACK", invite.call_id), ack.wire
        answer = parse_sdp(ack.body)
        assert answer.connection_of(answer.media[0]) == ("IP4", "127.0.0.1"), ack.wire
        assert answer.media[0].port != phone.client.media_port, ack.wire
        bye = phone.socket.receive()
        assert (bye.method, bye.call_id) == ("BYE", invite.call_id), bye.wire
        phone.socket.send(phone.client.answer(bye, 200, "OK"))
        assert uac.wait() == 0, uac.describe()

        certified = running.wait_for("client certificate on {flow}")
        assert str(certified["flow"]).startswith(f"tls:{CARRIER_IP}:"), certified
        assert certified["subject"] == CARRIER_DOMAIN, certified
        (relayed,) = kamailio.received("INVITE")
        assert f"from {NETWORK_IP}:" in relayed, relayed
        assert kamailio.authenticated() == []

        record = _cdr(sip_instance, invite.call_id)
        assert (record["direction"], record["trunk"], record["disposition"]) == (
            "inbound",
            "carrier",
            "answered",
        )
        assert record["caller"].startswith(f"{NETWORK_CALLER}@"), record
        assert record["callee"] == f"{sip_instance.extension}@{domain}", record
        assert (record["final_status"], record["hangup_by"]) == ("200", "caller")


def test_a_carrier_presenting_the_wrong_identity_is_refused(
    sip_instance: SipInstance,
    carrier_plan: tuple[CarrierPlan, CarrierPki],
    child_env: dict[str, str],
    tmp_path: Path,
) -> None:
    """The trunk expects ``other.test`` but Kamailio's certificate (from the very
    CA the trunk trusts) names ``carrier.test``: the chain verifies, the RFC
    5922 identity check does not. The phone's call gets 100 then 503 within a
    few seconds, and so does a second call right after it (each opens a new
    connection, which fails verification again: nothing of the first attempt
    holds the second). The appliance logs "failed verification" naming
    other.test for each. Kamailio logs no SIP from the appliance and the sipp
    UAS behind it receives nothing. The call detail records say outbound,
    trunk carrier, failed with 503."""
    plan, pki = carrier_plan
    domain = sip_instance.domain
    _cli(sip_instance, "dialplan", "set", domain, "--country-code", "44")
    _add_trunk(sip_instance, pki, plan, tls_domain="other.test")
    _cli(sip_instance, "route", "add", domain, "+44", "carrier")

    with ExitStack() as stack:
        kamailio = _start_kamailio(stack, plan, pki, tmp_path / "kamailio", child_env)
        uas = _start_sipp(stack, sipp_uas(tmp_path / "uas", port=plan.uas_port, env=child_env))
        running = _start_appliance(stack, sip_instance, child_env)
        phone = _register(stack, sip_instance)

        call_ids = [f"{secrets.token_hex(8)}@trunk-refused-{n}" for n in (1, 2)]
        for call_id in call_ids:
            started = time.monotonic()
            answer, provisional = phone.call(DIALLED, call_id)
            elapsed = time.monotonic() - started
            assert (answer.status, answer.call_id) == (503, call_id), answer.wire
            assert elapsed < REFUSAL_SECONDS, f"503 only after {elapsed:.1f}s"
            assert provisional == [100], provisional
            failed = running.wait_for("carrier {domain} at {flow} failed verification")
            assert failed["domain"] == "other.test", failed
            assert failed["flow"] == f"tls:{CARRIER_IP}:{plan.tls_port}", failed
            assert "other.test is not among" in str(failed["reason"]), failed

        for call_id in call_ids:
            record = _cdr(sip_instance, call_id)
            assert (record["direction"], record["trunk"], record["callee"]) == (
                "outbound",
                "carrier",
                E164,
            )
            assert (record["disposition"], record["final_status"]) == ("failed", "503")
        # Checked once both calls have ended and their records are written:
        # nothing reached Kamailio's SIP layer (only the test's readiness probe,
        # from the network side), so nothing could reach the UAS.
        (probe,) = kamailio.requests()
        assert f"OPTIONS sip:{CARRIER_DOMAIN} from {NETWORK_IP}:" in probe, kamailio.tail()
        assert uas.process.process.poll() is None, uas.describe()
        assert uas.traced() == [], uas.describe()
