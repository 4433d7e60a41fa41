"""The reactor features the appliance uses, as one interface (as Synapse's
``ISynapseReactor``), so code asks for exactly this and tests can supply fakes."""

from __future__ import annotations

from twisted.internet.interfaces import (
    IReactorCore,
    IReactorFDSet,
    IReactorFromThreads,
    IReactorSSL,
    IReactorTCP,
    IReactorTime,
    IReactorUDP,
)
from zope.interface import Interface


class IApplianceReactor(
    IReactorCore,
    IReactorTime,
    IReactorTCP,
    IReactorSSL,
    IReactorFDSet,
    IReactorUDP,
    IReactorFromThreads,
    Interface,
):
    """Core, time, TCP, TLS, UDP (DNS), watched descriptors (SIP and media UDP
    sockets) and calls from threads."""
