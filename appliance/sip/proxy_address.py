"""How the proxy names itself in what it sends, and recognises itself in what
it receives.

Via and Record-Route carry the address of the interface each leg talks to
(RFC 3261 §16.6, RFC 5658 when the legs differ in transport). A Route or
Request-URI naming one of those addresses, or a tenant's domain, names us;
anything else pre-loaded is refused, so the proxy is no open relay. Plain
functions of the proxy's addresses (and its directory), so that rule reads in
one place.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from appliance.sip.directory import SipDirectory
from appliance.sip.errors import SipError
from appliance.sip.grammar import SipUri, parse_name_addr, split_commas
from appliance.sip.message import Message, Rewrite
from appliance.sip.proxy_state import sip_or_none
from appliance.sip.registrar import Flow


@dataclass(frozen=True)
class ProxyAddress:
    """Where phones reach the proxy on one transport (for Via and Record-Route)."""

    transport: str
    host: str
    port: int

    def uri(self) -> str:
        """Our Record-Route URI on this transport (RFC 3261 §16.6 step 4, loose routing)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"sip:{host}:{self.port};transport={self.transport};lr"


class Addresses(dict[str, ProxyAddress]):
    """The proxy's addresses by transport name."""

    def __init__(self, addresses: Iterable[ProxyAddress]) -> None:
        super().__init__((a.transport, a) for a in addresses)
        #: The (host, port) pairs naming us, host lower-cased: every Route and
        #: Request-URI is checked against them (:func:`is_us`).
        self.endpoints = frozenset((a.host.lower(), a.port) for a in self.values())


def via(addresses: Addresses, flow: Flow, branch: str) -> str:
    """Our Via for a request sent over ``flow``."""
    address = addresses.get(flow.transport) or next(iter(addresses.values()))
    host = f"[{address.host}]" if ":" in address.host else address.host
    return f"SIP/2.0/{flow.transport.upper()} {host}:{address.port};branch={branch}"


def record_routes(addresses: Addresses, inbound: Flow, outbound: Flow) -> list[str]:
    """Our Record-Route entries, top first: two when the legs differ in
    transport (RFC 5658), so each side sees the interface it talks to."""
    near = addresses.get(outbound.transport)
    far = addresses.get(inbound.transport)
    uris = [a.uri() for a in (near, far) if a is not None]
    return [f"<{uri}>" for uri in dict.fromkeys(uris)] or [
        f"<{next(iter(addresses.values())).uri()}>"
    ]


def is_us(addresses: Addresses, directory: SipDirectory, uri: SipUri) -> bool:
    """Whether ``uri`` names one of our addresses, or is a tenant's bare domain."""
    return (uri.host.strip("[]").lower(), uri.port or 5060) in addresses.endpoints or (
        uri.user is None and directory.tenant(uri.host) is not None
    )


def names_us(addresses: Addresses, directory: SipDirectory, route: str) -> bool:
    """Whether one Route value names us (a malformed one does not)."""
    try:
        uri = sip_or_none(parse_name_addr(route).uri)
    except SipError:
        return False
    return uri is not None and is_us(addresses, directory, uri)


def routes_toward_caller(message: Message) -> tuple[str, ...]:
    """The route set toward the sender of an initial request that reached us: the
    Record-Route entries proxies before us added, in order (the UAS rule,
    RFC 3261 §12.1.1)."""
    return tuple(value for f in message.all("record-route") for value in split_commas(f.value))


def routes_toward_callee(
    addresses: Addresses, directory: SipDirectory, answer: Message
) -> tuple[str, ...]:
    """The route set toward the sender of a 2xx to a request we forwarded: the
    Record-Route entries above our own (added by proxies after us), reversed
    (the UAC rule, RFC 3261 §12.1.2)."""
    downstream: list[str] = []
    for value in routes_toward_caller(answer):
        if names_us(addresses, directory, value):
            break
        downstream.append(value)
    return tuple(reversed(downstream))


def check_request_uri(
    addresses: Addresses, directory: SipDirectory, message: Message, uri: SipUri
) -> None:
    """No ``maddr``, and a pre-loaded Route may only name us: no open relay."""
    if uri.params.has("maddr"):
        raise SipError(403, "Forbidden (maddr is not honoured)")
    for route in message.routes:
        route_uri = sip_or_none(route.uri)
        if route_uri is None or not is_us(addresses, directory, route_uri):
            raise SipError(403, "Forbidden (Route to elsewhere)")


def pop_our_routes(
    addresses: Addresses, directory: SipDirectory, message: Message, rewrite: Rewrite
) -> None:
    """Loose routing (§16.4): remove our own entries from the top of the route set,
    keeping any that name other hops."""
    for route_field in message.all("route"):
        values = split_commas(route_field.value)
        kept = list(values)
        while kept and names_us(addresses, directory, kept[0]):
            kept.pop(0)
        if not kept:
            rewrite.remove(route_field)
        elif len(kept) != len(values):
            rewrite.replace(route_field, ", ".join(kept))
        if kept:
            return
