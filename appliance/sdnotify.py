"""systemd's ``sd_notify`` protocol: one datagram to ``$NOTIFY_SOCKET``.

With ``Type=notify`` systemd considers the service started only on
``READY=1``, which we send once every listener is open.
"""

from __future__ import annotations

import socket
from collections.abc import Mapping


def notify(state: str, environ: Mapping[str, str]) -> bool:
    """Send ``state`` (e.g. ``READY=1``); False when not run under systemd."""
    address = environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.connect(address)
        sock.sendall(state.encode())
    return True
