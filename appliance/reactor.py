"""The reactor features the appliance uses, as one interface (as Synapse's
``ISynapseReactor``), so code asks for exactly this and tests can supply fakes."""

from __future__ import annotations

from twisted.internet.interfaces import (
    IReactorCore,
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
    IReactorUDP,
    IReactorFromThreads,
    Interface,
):
    """Core, time, TCP, TLS, UDP and calls from threads."""
