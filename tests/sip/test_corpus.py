"""RFC 4475 and RFC 5118 torture messages get exactly the verdicts in
``../shared/corpus/README.md``, through the functions the transport uses."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from appliance.sip.errors import SipError
from appliance.sip.message import parse_datagram
from appliance.sip.validate import check_request, check_response

ROOT = Path(__file__).resolve().parents[2]
CORPUS = Path(os.environ.get("TELEMANCER_CORPUS", ROOT.parent / "shared" / "corpus"))

ACCEPT = "accept"
DROP = "drop"

#: The README's verdicts. regaut01 passes validation here; the registrar's
#: tests answer it with 401. invut and sdp01 are forwarded by a proxy.
RFC4475: dict[str, str | int] = {
    "wsinv": ACCEPT,
    "intmeth": ACCEPT,
    "esc01": ACCEPT,
    "escnull": ACCEPT,
    "esc02": ACCEPT,
    "lwsdisp": ACCEPT,
    "longreq": ACCEPT,
    "dblreq": ACCEPT,
    "semiuri": ACCEPT,
    "transports": ACCEPT,
    "mpart01": ACCEPT,
    "unreason": ACCEPT,
    "noreason": ACCEPT,
    "badinv01": 400,
    "clerr": 400,
    "ncl": 400,
    "scalar02": 400,
    "scalarlg": DROP,
    "quotbal": 400,
    "ltgtruri": 400,
    "lwsruri": 400,
    "lwsstart": 400,
    "trws": 400,
    "escruri": 400,
    "baddate": ACCEPT,
    "regbadct": 400,
    "badaspec": 400,
    "baddn": 400,
    "badvers": 505,
    "mismatch01": 400,
    "mismatch02": 400,
    "bigcode": DROP,
    "badbranch": ACCEPT,
    "insuf": 400,
    "unkscm": 416,
    "novelsc": 416,
    "unksm2": ACCEPT,
    "bext01": 420,
    "invut": ACCEPT,
    "regaut01": ACCEPT,
    "multi01": 400,
    "mcl01": 400,
    "bcast": ACCEPT,
    "zeromf": 483,
    "cparam01": ACCEPT,
    "cparam02": ACCEPT,
    "regescrt": ACCEPT,
    "sdp01": ACCEPT,
    "inv2543": ACCEPT,
}

RFC5118: dict[str, str | int] = {
    "ipv4-mapped-ipv6": ACCEPT,
    "ipv6-bad": 400,
    "ipv6-bug-abnf-3-colons": ACCEPT,
    "ipv6-correct-abnf-2-colons": ACCEPT,
    "ipv6-good": ACCEPT,
    "ipv6-in-sdp": ACCEPT,
    "mult-ip-in-header": ACCEPT,
    "mult-ip-in-sdp": ACCEPT,
    "port-ambiguous": ACCEPT,
    "port-unambiguous": ACCEPT,
    "via-received-param-no-delim": ACCEPT,
    "via-received-param-with-delim": ACCEPT,
}


def verdict(data: bytes) -> str | int:
    """What the appliance does with one datagram: accept, answer with a status, or drop."""
    try:
        message = parse_datagram(data)
    except SipError:
        return DROP
    try:
        if message.is_request:
            check_request(message)
        else:
            check_response(message)
    except SipError as error:
        return error.status if message.is_request else DROP
    return ACCEPT


def test_every_corpus_file_has_a_verdict() -> None:
    """The tables above cover exactly the corpus files (test.dat is the archive's sample)."""
    assert CORPUS.is_dir(), f"corpus not found at {CORPUS}"
    files4475 = {p.stem for p in (CORPUS / "rfc4475").glob("*.dat")} - {"test"}
    assert files4475 == set(RFC4475)
    assert {p.name for p in (CORPUS / "rfc5118" / "wire").iterdir()} == set(RFC5118)


@pytest.mark.parametrize(("name", "expected"), sorted(RFC4475.items()))
def test_rfc4475(name: str, expected: str | int) -> None:
    """Each RFC 4475 message gets the README's verdict."""
    assert verdict((CORPUS / "rfc4475" / f"{name}.dat").read_bytes()) == expected


@pytest.mark.parametrize(("name", "expected"), sorted(RFC5118.items()))
def test_rfc5118(name: str, expected: str | int) -> None:
    """Each RFC 5118 message (wire form) gets the README's verdict."""
    assert verdict((CORPUS / "rfc5118" / "wire" / name).read_bytes()) == expected


def test_dblreq_processes_only_the_first_message() -> None:
    """Bytes after Content-Length in a datagram are ignored (RFC 4475 §3.1.1.8)."""
    message = parse_datagram((CORPUS / "rfc4475" / "dblreq.dat").read_bytes())
    assert message.body == b"" and message.method == "REGISTER"
    assert message.wire.endswith(b"Content-Length: 0\r\n\r\n")


def test_bext01_names_the_unsupported_options() -> None:
    """420 lists every Proxy-Require option we do not support in Unsupported."""
    message = parse_datagram((CORPUS / "rfc4475" / "bext01.dat").read_bytes())
    with pytest.raises(SipError) as refused:
        check_request(message)
    assert refused.value.headers == (
        ("Unsupported", "noProxiesSupportThis, norDoAnyProxiesSupportThis"),
    )


def test_zeromf_options_for_us_is_answered() -> None:
    """Max-Forwards 0 on an OPTIONS addressed to the appliance itself is not 483."""
    message = parse_datagram((CORPUS / "rfc4475" / "zeromf.dat").read_bytes())
    check_request(message, for_us=True)
