"""Request and response checks (RFC 3261 §8.2, §16.3 and RFC 4475's verdicts).

:func:`check_request` raises the :class:`SipError` to answer with, in the
order a proxy applies them; :func:`check_response` raises for a response
that must be dropped. ``docs/sip-profile.md`` lists every verdict.
"""

from __future__ import annotations

from appliance.sip.errors import SipError, bad_request
from appliance.sip.grammar import parse_sip_uri
from appliance.sip.message import Message

#: Headers that may appear once only (RFC 3261 §7.3.1; a list would be ambiguous).
SINGLE_VALUED = (
    "call-id",
    "cseq",
    "from",
    "to",
    "max-forwards",
    "content-length",
    "content-type",
    "expires",
    "min-expires",
)

#: Headers every request must have (RFC 3261 §8.1.1; Max-Forwards is added by us).
REQUIRED = ("via", "from", "to", "call-id", "cseq")

#: Request-URI schemes we can route. Anything else is 416 (RFC 3261 §8.2.2.1).
ROUTABLE_SCHEMES = ("sip", "sips")

#: Option tags we support in Proxy-Require (none yet: RFC 3261 §16.3 step 5).
PROXY_OPTIONS: frozenset[str] = frozenset()


def check_request(message: Message, *, for_us: bool = False) -> None:
    """Raise the :class:`SipError` to answer ``message`` with, or return if it may proceed.

    ``for_us`` says the Request-URI names this element: an OPTIONS for us is
    answered even with Max-Forwards 0 (RFC 3261 §16.3 step 3).
    """
    if message.defect is not None:
        raise message.defect
    _check_counts(message)
    # Parse every header routing needs now, so a malformed one is refused here
    # with 400 rather than failing wherever it is first used.
    if message.cseq.method != message.method:
        raise bad_request("CSeq method does not match the Request-Line")
    _ = (message.vias, message.call_id, message.from_, message.to, message.contacts)
    _ = (message.routes, message.max_forwards)
    scheme = message.uri.partition(":")[0].lower()
    if scheme not in ROUTABLE_SCHEMES:
        raise SipError(416, "Unsupported URI Scheme")
    uri = parse_sip_uri(message.uri)
    if uri.headers is not None:
        raise bad_request("headers in the Request-URI")
    if message.max_forwards == 0 and not (for_us and message.method == "OPTIONS"):
        raise SipError(483, "Too Many Hops")
    unsupported = [
        option for option in message.values("proxy-require") if option.lower() not in PROXY_OPTIONS
    ]
    if unsupported:
        raise SipError(420, "Bad Extension", (("Unsupported", ", ".join(unsupported)),))


def _check_counts(message: Message) -> None:
    by_name = message.by_name
    for name in SINGLE_VALUED:
        found = by_name.get(name)
        if found is not None and len(found) > 1:
            raise bad_request(f"more than one {name}")
    for name in REQUIRED:
        if name not in by_name:
            raise bad_request(f"missing {name}")


def check_response(message: Message) -> None:
    """Raise :class:`SipError` for a response that must be dropped (never answered)."""
    if message.defect is not None:
        raise message.defect
    by_name = message.by_name
    for name in SINGLE_VALUED:
        found = by_name.get(name)
        if found is not None and len(found) > 1:
            raise bad_request(f"more than one {name}")
    _ = message.top_via  # the one a response is matched on; the rest pass on unread
    _ = (message.cseq, message.call_id, message.from_, message.to)
