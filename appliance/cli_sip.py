"""The SIP commands of ``telemancer``: extensions, registrations and IP bans.

Registered on the parser by :func:`add_sip_commands`; same rules as the rest
of :mod:`appliance.cli` (thin, exit 0/1/2, every write audited by the store,
passwords only from stdin). The CLI writes to the database and nothing else:
a running service picks a change up from the database itself (it polls
``PRAGMA data_version``), so there is no signal to send and no restart.
"""

from __future__ import annotations

import argparse
import unicodedata
from collections.abc import Iterator
from contextlib import contextmanager

from appliance.cli import CommandError, Console, _config, _directory, _read_password, _table
from appliance.sip.blocklist import normalise_ip
from appliance.store.audit import format_time
from appliance.store.sipstate import delete_block, list_registrations, load_blocks
from appliance.store.tenants import Directory

#: Shortest SIP extension password: it is typed into phones, so the bar is
#: length, not the sign-in policy of :mod:`appliance.passwords`.
MIN_SIP_PASSWORD_LENGTH = 8

_PICKED_UP = "A running service picks changes up from the database; no restart is needed."


def add_sip_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``extension``, ``registrations`` and ``bans`` to the command tree."""
    extension = commands.add_parser(
        "extension", help="manage a tenant's SIP extensions", description=_PICKED_UP
    ).add_subparsers(dest="action", required=True, metavar="ACTION")
    ext_add = extension.add_parser("add", help="create an extension; password read from stdin")
    ext_add.add_argument("domain", metavar="DOMAIN", help="the tenant's SIP domain")
    ext_add.add_argument("number", metavar="NUMBER")
    ext_add.set_defaults(func=cmd_extension_add)
    ext_list = extension.add_parser("list", help="list a tenant's extensions")
    ext_list.add_argument("domain", metavar="DOMAIN")
    ext_list.set_defaults(func=cmd_extension_list)
    ext_passwd = extension.add_parser(
        "passwd", help="set an extension's password; read from stdin"
    )
    ext_passwd.add_argument("domain", metavar="DOMAIN")
    ext_passwd.add_argument("number", metavar="NUMBER")
    ext_passwd.set_defaults(func=cmd_extension_passwd)

    registrations = commands.add_parser(
        "registrations", help="show registered phones"
    ).add_subparsers(dest="action", required=True, metavar="ACTION")
    reg_list = registrations.add_parser("list", help="live registrations, of one tenant or all")
    reg_list.add_argument("domain", metavar="DOMAIN", nargs="?")
    reg_list.set_defaults(func=cmd_registrations_list)

    bans = commands.add_parser(
        "bans", help="show and lift blocked source IPs", description=_PICKED_UP
    ).add_subparsers(dest="action", required=True, metavar="ACTION")
    bans.add_parser("list", help="blocks in force").set_defaults(func=cmd_bans_list)
    bans_lift = bans.add_parser("lift", help="remove a block", description=_PICKED_UP)
    bans_lift.add_argument("ip", metavar="IP")
    bans_lift.set_defaults(func=cmd_bans_lift)


def check_sip_password(password: str) -> None:
    """Refuse an extension password shorter than 8 characters or holding control characters."""
    if len(password) < MIN_SIP_PASSWORD_LENGTH:
        raise CommandError(
            f"extension password too short: at least {MIN_SIP_PASSWORD_LENGTH} characters"
        )
    if any(unicodedata.category(ch) == "Cc" for ch in password):
        raise CommandError("extension password must not contain control characters")


@contextmanager
def _store(args: argparse.Namespace, console: Console) -> Iterator[Directory]:
    directory = _directory(_config(args, console), console)
    try:
        yield directory
    finally:
        directory.db.close()


def cmd_extension_add(args: argparse.Namespace, console: Console) -> int:
    """``extension add DOMAIN NUMBER``: the password comes from stdin, never from argv."""
    with _store(args, console) as directory:
        tenant = directory.tenant_by_domain(args.domain)
        password = _read_password(console)
        check_sip_password(password)
        extension = (
            directory.scope(tenant.id).extensions().add(console.actor(), args.number, password)
        )
    console.out(f"added extension {extension.number}@{tenant.domain}")
    return 0


def cmd_extension_list(args: argparse.Namespace, console: Console) -> int:
    """``extension list DOMAIN``: numbers and creation times, never HA1 values."""
    with _store(args, console) as directory:
        tenant = directory.tenant_by_domain(args.domain)
        extensions = directory.scope(tenant.id).extensions().list()
    _table(console, ("NUMBER", "CREATED"), [(e.number, e.created_at) for e in extensions])
    return 0


def cmd_extension_passwd(args: argparse.Namespace, console: Console) -> int:
    """``extension passwd DOMAIN NUMBER``: replace the HA1 values (audited)."""
    with _store(args, console) as directory:
        tenant = directory.tenant_by_domain(args.domain)
        repository = directory.scope(tenant.id).extensions()
        repository.get(args.number)  # refuse an unknown extension before asking
        password = _read_password(console)
        check_sip_password(password)
        repository.set_password(console.actor(), args.number, password)
    console.out(f"changed the password of extension {args.number}@{tenant.domain}")
    return 0


def cmd_registrations_list(args: argparse.Namespace, console: Console) -> int:
    """``registrations list [DOMAIN]``: live bindings with the seconds they have left."""
    now = console.clock()
    with _store(args, console) as directory:
        domain = None if args.domain is None else directory.tenant_by_domain(args.domain).domain
        rows = list_registrations(directory.db, now, domain)
    _table(
        console,
        ("DOMAIN", "NUMBER", "CONTACT", "EXPIRES", "FLOW", "USER-AGENT"),
        [
            (
                r.domain,
                r.number,
                _printable(r.contact),
                f"in {max(0, int(r.expires_at - now))}s",
                _printable(r.flow),
                _printable(r.user_agent) or "-",
            )
            for r in rows
        ],
    )
    return 0


def cmd_bans_list(args: argparse.Namespace, console: Console) -> int:
    """``bans list``: blocks in force, times in UTC."""
    with _store(args, console) as directory:
        blocks = load_blocks(directory.db, console.clock())
    _table(
        console,
        ("IP", "REASON", "SINCE", "UNTIL"),
        [(b.ip, _printable(b.reason), format_time(b.since), format_time(b.until)) for b in blocks],
    )
    return 0


def cmd_bans_lift(args: argparse.Namespace, console: Console) -> int:
    """``bans lift IP``: delete the block (audited as ``sip.unblock``)."""
    try:
        ip = normalise_ip(args.ip)
    except ValueError:
        raise CommandError(f"not an IP address: {args.ip!r}") from None
    with _store(args, console) as directory:
        lifted = delete_block(
            directory.db,
            directory.audit,
            console.actor(),
            ip,
            reason="lifted by operator",
            now=console.clock(),
        )
    if not lifted:
        raise CommandError(f"no block for {ip}")
    console.out(f"lifted the block on {ip}")
    return 0


def _printable(text: str) -> str:
    """Escape what a phone sent (user agent, contact) so it cannot drive the terminal."""
    return "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in text)
