"""A fake ``IReactorUDP`` (Twisted's MemoryReactor has none): records the ports
bound, the datagrams written, and can refuse chosen ports as busy."""

from __future__ import annotations

import errno
from typing import Any

from twisted.internet.error import CannotListenError
from twisted.internet.protocol import DatagramProtocol
from twisted.internet.task import Clock


class FakeDatagramTransport:
    """What ``protocol.transport`` is: writes are recorded."""

    def __init__(self, port: int, sent: list[tuple[int, bytes, tuple[str, int]]]) -> None:
        self.port = port
        self._sent = sent

    def write(self, data: bytes, addr: tuple[str, int]) -> None:
        """Record a datagram sent from this port."""
        self._sent.append((self.port, data, addr))


class FakeUdpPort:
    """A bound port; ``stopListening`` unbinds it."""

    def __init__(self, reactor: FakeUdpReactor, port: int, protocol: DatagramProtocol) -> None:
        self.reactor = reactor
        self.port = port
        self.protocol = protocol

    def stopListening(self) -> None:  # noqa: N802 (Twisted's name)
        """Unbind."""
        self.reactor.bound.pop(self.port, None)
        self.protocol.transport = None

    def getHost(self) -> Any:  # noqa: N802 (Twisted's name)
        """Where it is bound."""
        return ("127.0.0.1", self.port)


class FakeUdpReactor(Clock):
    """A clock that also binds UDP ports in memory."""

    def __init__(self) -> None:
        super().__init__()
        self.bound: dict[int, DatagramProtocol] = {}
        self.busy: set[int] = set()
        self.sent: list[tuple[int, bytes, tuple[str, int]]] = []

    def listenUDP(  # noqa: N802 (Twisted's name)
        self,
        port: int,
        protocol: DatagramProtocol,
        interface: str = "",
        maxPacketSize: int = 8192,  # noqa: N803
    ) -> FakeUdpPort:
        """Bind ``port`` unless it is busy or bound already."""
        if port in self.busy or port in self.bound:
            raise CannotListenError(interface, port, OSError(errno.EADDRINUSE, "in use"))
        self.bound[port] = protocol
        protocol.transport = FakeDatagramTransport(port, self.sent)  # type: ignore[assignment]
        return FakeUdpPort(self, port, protocol)

    def deliver(self, port: int, data: bytes, source: tuple[str, int]) -> None:
        """A datagram arrives on a bound port."""
        self.bound[port].datagramReceived(data, source)
