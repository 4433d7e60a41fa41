"""The trunk commands of ``telemancer``: trunks to carriers, DIDs, routes and
number settings (docs/trunks.md).

Registered on the parser by :func:`add_trunk_commands`; same rules as the rest
of :mod:`appliance.cli` (thin, exit 0/1/2, every write audited by the store).
A carrier password is read from stdin (``--password-stdin``), never from
argv, and is stored sealed under the key of
:func:`appliance.store.trunks.sealing_key`; no command prints it.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeAlias

from appliance.cli import (
    SRTP_POLICIES,
    CommandError,
    Console,
    _config,
    _directory,
    _read_password,
    _table,
)
from appliance.secrets import SecretError, resolve_secret
from appliance.store.audit import format_time
from appliance.store.sealed import SealError
from appliance.store.trunk_checks import TRANSPORTS
from appliance.store.trunk_health import health
from appliance.store.trunk_reseal import reseal_passwords
from appliance.store.trunks import TrunkRepository, TrunkSettings, sealing_key, sealing_key_of

_Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def add_trunk_commands(commands: _Subparsers) -> None:
    """Add ``trunk``, ``did``, ``route`` and ``dialplan`` to the command tree."""
    trunk = _group(commands, "trunk", "manage a tenant's trunks to carriers")
    add = trunk.add_parser("add", help="add a trunk; the carrier password is read from stdin")
    _domain(add)
    add.add_argument("name", metavar="NAME", help="1-32 of a-z, 0-9 and '-'")
    add.add_argument("--host", required=True, help="the carrier's DNS name or IP address")
    add.add_argument("--port", type=_port, help="default: left to the service (RFC 3263)")
    add.add_argument("--transport", choices=TRANSPORTS, default="tls")
    add.add_argument("--username", help="Digest username toward the carrier")
    add.add_argument(
        "--password-stdin", action="store_true", help="read the carrier password from stdin"
    )
    add.add_argument(
        "--caller-id", metavar="E164", help="send this number as caller ID on every call"
    )
    add.add_argument("--tls-domain", metavar="DOMAIN", help="identity to verify (default: host)")
    add.add_argument(
        "--ca-bundle", type=Path, metavar="FILE", help="PEM CA certificates (default: system)"
    )
    add.add_argument("--fingerprint", metavar="HEX", help="SHA-256 pin of the carrier's cert")
    add.add_argument(
        "--inbound-network",
        action="append",
        default=[],
        metavar="CIDR",
        help="a network the carrier sends from (repeat for more)",
    )
    add.add_argument(
        "--inbound-fingerprint", metavar="HEX", help="SHA-256 pin of the carrier's client cert"
    )
    add.add_argument(
        "--srtp",
        choices=SRTP_POLICIES,
        default="optional",
        help="SRTP policy toward the carrier (required needs --transport tls)",
    )
    add.set_defaults(func=cmd_trunk_add)
    listing = trunk.add_parser("list", help="list a tenant's trunks (never passwords)")
    _domain(listing)
    listing.set_defaults(func=cmd_trunk_list)
    srtp = trunk.add_parser("srtp", help="set a trunk's SRTP policy")
    _domain(srtp)
    srtp.add_argument("name", metavar="NAME")
    srtp.add_argument(
        "policy", metavar="POLICY", choices=SRTP_POLICIES, help="%(choices)s (required needs TLS)"
    )
    srtp.set_defaults(func=cmd_trunk_srtp)
    remove = trunk.add_parser("remove", help="remove a trunk no route uses")
    _domain(remove)
    remove.add_argument("name", metavar="NAME")
    remove.set_defaults(func=cmd_trunk_remove)
    passwd = trunk.add_parser("passwd", help="set a trunk's carrier password, read from stdin")
    _domain(passwd)
    passwd.add_argument("name", metavar="NAME")
    passwd.add_argument("--username", help="Digest username toward the carrier (default: kept)")
    passwd.set_defaults(func=cmd_trunk_passwd)
    reseal = trunk.add_parser(
        "reseal", help="after jwt_signing_key was replaced: seal carrier passwords anew"
    )
    reseal.add_argument(
        "--old-jwt-key",
        required=True,
        metavar="REF",
        help="the replaced secret: file:PATH, env:NAME or credential:NAME",
    )
    reseal.set_defaults(func=cmd_trunk_reseal)
    health_parser = trunk.add_parser("health", help="the latest OPTIONS pings of a trunk")
    _domain(health_parser)
    health_parser.add_argument("name", metavar="NAME")
    health_parser.add_argument("--limit", type=int, default=20, metavar="N")
    health_parser.set_defaults(func=cmd_trunk_health)

    did = _group(commands, "did", "manage the numbers that ring a tenant's extensions")
    add = did.add_parser("add", help="route an E.164 number to an extension")
    _domain(add)
    add.add_argument("number", metavar="NUMBER", help="E.164, e.g. +442079460000")
    add.add_argument("extension", metavar="EXTENSION")
    add.set_defaults(func=cmd_did_add)
    listing = did.add_parser("list", help="list a tenant's DIDs")
    _domain(listing)
    listing.set_defaults(func=cmd_did_list)
    remove = did.add_parser("remove", help="remove a DID")
    _domain(remove)
    remove.add_argument("number", metavar="NUMBER")
    remove.set_defaults(func=cmd_did_remove)

    route = _group(commands, "route", "manage a tenant's outbound dial plan")
    add = route.add_parser("add", help="send numbers starting with PREFIX to TRUNK")
    _domain(add)
    add.add_argument("prefix", metavar="PREFIX", help="digits, optional leading '+'")
    add.add_argument("trunk", metavar="TRUNK")
    add.add_argument("--position", type=_positive, help="default: after the last rule")
    add.add_argument(
        "--strip", type=_non_negative, default=0, help="characters to drop from the +E.164 form"
    )
    add.add_argument("--prepend", default="", metavar="DIGITS", help="put in front after strip")
    add.set_defaults(func=cmd_route_add)
    listing = route.add_parser("list", help="list a tenant's rules in order")
    _domain(listing)
    listing.set_defaults(func=cmd_route_list)
    remove = route.add_parser("remove", help="remove the rule at POSITION")
    _domain(remove)
    remove.add_argument("position", metavar="POSITION", type=_positive)
    remove.set_defaults(func=cmd_route_remove)

    dialplan = _group(commands, "dialplan", "how a tenant's dialled numbers become E.164")
    set_cmd = dialplan.add_parser("set", help="change the number settings")
    _domain(set_cmd)
    set_cmd.add_argument("--country-code", metavar="CC", help='e.g. "44" ("" to unset)')
    set_cmd.add_argument("--national-prefix", metavar="P", help='e.g. "0" ("" for none)')
    set_cmd.add_argument("--international-prefix", metavar="P", help='e.g. "00" or "011"')
    set_cmd.set_defaults(func=cmd_dialplan_set)
    show = dialplan.add_parser("show", help="print the number settings")
    _domain(show)
    show.set_defaults(func=cmd_dialplan_show)


def _group(commands: _Subparsers, name: str, text: str) -> _Subparsers:
    return commands.add_parser(name, help=text).add_subparsers(
        dest="action", required=True, metavar="ACTION"
    )


def _domain(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("domain", metavar="DOMAIN", help="the tenant's SIP domain")


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None


def _port(text: str) -> int:
    value = _integer(text)
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError("a port is 1-65535")
    return value


def _positive(text: str) -> int:
    value = _integer(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be 1 or more")
    return value


def _non_negative(text: str) -> int:
    value = _integer(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must not be negative")
    return value


@contextmanager
def _trunks(args: argparse.Namespace, console: Console) -> Iterator[TrunkRepository]:
    """The repository of the tenant named by ``args.domain``."""
    config = _config(args, console)
    directory = _directory(config, console)
    try:
        tenant = directory.tenant_by_domain(args.domain)
        yield directory.scope(tenant.id).trunks(sealing_key(config))
    finally:
        directory.db.close()


def _usage(console: Console, command: str, message: str) -> int:
    print(f"telemancer {command}: error: {message}", file=console.stderr)
    return 2


def cmd_trunk_add(args: argparse.Namespace, console: Console) -> int:
    """``trunk add DOMAIN NAME --host H ...``: credentials need --username and
    --password-stdin together; the password never comes from argv."""
    if (args.username is None) != (not args.password_stdin):
        return _usage(console, "trunk add", "--username and --password-stdin go together")
    ca_bundle = None
    if args.ca_bundle is not None:
        try:
            ca_bundle = args.ca_bundle.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            reason = getattr(e, "strerror", None) or "not UTF-8 text"
            raise CommandError(f"cannot read {args.ca_bundle}: {reason}") from None
    settings = TrunkSettings(
        host=args.host,
        port=args.port,
        transport=args.transport,
        caller_id=args.caller_id,
        tls_domain=args.tls_domain,
        ca_bundle=ca_bundle,
        fingerprint=args.fingerprint,
        inbound_networks=tuple(args.inbound_network),
        inbound_fingerprint=args.inbound_fingerprint,
        srtp=args.srtp,
    )
    with _trunks(args, console) as trunks:
        credentials = None
        if args.password_stdin:
            credentials = (args.username, _read_password(console))
        trunk = trunks.add(console.actor(), args.name, settings, credentials)
        domain = trunks.domain()
    port = f":{trunk.port}" if trunk.port is not None else ""
    console.out(f"added trunk {trunk.name} to {domain} ({trunk.transport} to {trunk.host}{port})")
    if trunk.username is not None:
        console.out("the carrier password is stored sealed")
    if trunk.transport != "tls":
        print(
            f"telemancer: warning: {trunk.transport} is plaintext; the SIP service uses it only"
            " toward hosts in sip.internal_subnets",
            file=console.stderr,
        )
    return 0


def cmd_trunk_srtp(args: argparse.Namespace, console: Console) -> int:
    """``trunk srtp DOMAIN NAME POLICY``: audited as ``trunk.update``; ``required`` on
    a udp or tcp trunk is refused (exit 1) and changes nothing."""
    with _trunks(args, console) as trunks:
        before = trunks.get(args.name)
        after = trunks.set_srtp(console.actor(), args.name, args.policy)
        domain = trunks.domain()
    if after.srtp is before.srtp:
        console.out(
            f"trunk {after.name} of {domain}: srtp is already {after.srtp}; nothing changed"
        )
    else:
        console.out(
            f"trunk {after.name} of {domain}: srtp is now {after.srtp} (was {before.srtp})"
        )
    return 0


def cmd_trunk_passwd(args: argparse.Namespace, console: Console) -> int:
    """``trunk passwd DOMAIN NAME [--username U]``: the carrier password from stdin,
    sealed under the current key (audited as ``trunk.update``, without it)."""
    with _trunks(args, console) as trunks:
        username = args.username or trunks.get(args.name).username
        if username is None:
            return _usage(console, "trunk passwd", "the trunk has no username: give --username")
        trunk = trunks.set_credentials(
            console.actor(), args.name, (username, _read_password(console))
        )
        domain = trunks.domain()
    console.out(f"trunk {trunk.name} of {domain}: the carrier password is stored sealed")
    return 0


def cmd_trunk_reseal(args: argparse.Namespace, console: Console) -> int:
    """``trunk reseal --old-jwt-key REF``: every carrier password only the replaced
    secret opens is sealed under the current one (each audited as
    ``trunk.reseal``); all or nothing."""
    config = _config(args, console)
    try:
        old = resolve_secret(
            args.old_jwt_key, Path.cwd(), console.environ, production=config.production
        )
    except SecretError as e:
        raise CommandError(f"--old-jwt-key: {e}") from None
    directory = _directory(config, console)
    try:
        done = reseal_passwords(
            directory,
            console.actor(),
            sealing_key_of(old),
            sealing_key(config),
        )
    except SealError as e:
        raise CommandError(str(e)) from None
    finally:
        directory.db.close()
    names = f": {', '.join(done.resealed)}" if done.resealed else ""
    console.out(
        f"sealed {len(done.resealed)} carrier password(s) under the current key{names};"
        f" {done.current} already were"
    )
    return 0


def cmd_trunk_health(args: argparse.Namespace, console: Console) -> int:
    """``trunk health DOMAIN NAME``: up or down, newest first, with the answer and
    round trip of each OPTIONS ping."""
    config = _config(args, console)
    directory = _directory(config, console)
    try:
        tenant = directory.tenant_by_domain(args.domain)
        samples = health(directory.scope(tenant.id), args.name, args.limit)
    finally:
        directory.db.close()
    rows = [
        (
            format_time(sample.at),
            "up" if sample.up else "down",
            "-" if sample.status is None else str(sample.status),
            "-" if sample.rtt is None else f"{sample.rtt * 1000:.0f} ms",
        )
        for sample in samples
    ]
    _table(console, ("AT", "STATE", "ANSWER", "ROUND-TRIP"), rows)
    return 0


def cmd_trunk_list(args: argparse.Namespace, console: Console) -> int:
    """``trunk list DOMAIN``: settings and usernames, never passwords."""
    with _trunks(args, console) as trunks:
        rows = [
            (
                t.name,
                "yes" if t.enabled else "no",
                t.transport,
                t.host,
                "-" if t.port is None else str(t.port),
                t.username or "-",
                t.caller_id or "pass",
                t.verify_domain,
                "custom" if t.ca_bundle else "system",
                "sha256" if t.fingerprint else "-",
                ",".join(t.inbound_networks) or "-",
                "sha256" if t.inbound_fingerprint else "-",
                t.srtp.value,
            )
            for t in trunks.list()
        ]
    _table(
        console,
        (
            "NAME",
            "ENABLED",
            "TRANSPORT",
            "HOST",
            "PORT",
            "USERNAME",
            "CALLER-ID",
            "TLS-DOMAIN",
            "CA",
            "PIN",
            "INBOUND",
            "INBOUND-PIN",
            "SRTP",
        ),
        rows,
    )
    return 0


def cmd_trunk_remove(args: argparse.Namespace, console: Console) -> int:
    """``trunk remove DOMAIN NAME``."""
    with _trunks(args, console) as trunks:
        trunks.remove(console.actor(), args.name)
    console.out(f"removed trunk {args.name}")
    return 0


def cmd_did_add(args: argparse.Namespace, console: Console) -> int:
    """``did add DOMAIN NUMBER EXTENSION``."""
    with _trunks(args, console) as trunks:
        did = trunks.add_did(console.actor(), args.number, args.extension)
    console.out(f"{did.number} now rings extension {did.extension}")
    return 0


def cmd_did_list(args: argparse.Namespace, console: Console) -> int:
    """``did list DOMAIN``."""
    with _trunks(args, console) as trunks:
        rows = [(d.number, d.extension, d.created_at) for d in trunks.dids()]
    _table(console, ("NUMBER", "EXTENSION", "CREATED"), rows)
    return 0


def cmd_did_remove(args: argparse.Namespace, console: Console) -> int:
    """``did remove DOMAIN NUMBER``."""
    with _trunks(args, console) as trunks:
        trunks.remove_did(console.actor(), args.number)
    console.out(f"removed DID {args.number}")
    return 0


def cmd_route_add(args: argparse.Namespace, console: Console) -> int:
    """``route add DOMAIN PREFIX TRUNK [--position N] [--strip N] [--prepend DIGITS]``."""
    with _trunks(args, console) as trunks:
        route = trunks.add_route(
            console.actor(),
            args.prefix,
            args.trunk,
            position=args.position,
            strip=args.strip,
            prepend=args.prepend,
        )
    console.out(f"added route {route.position}: {route.prefix} via {route.trunk}")
    return 0


def cmd_route_list(args: argparse.Namespace, console: Console) -> int:
    """``route list DOMAIN``: rules in the order they are tried."""
    with _trunks(args, console) as trunks:
        rows = [
            (str(r.position), r.prefix, r.trunk, str(r.strip), r.prepend or "-")
            for r in trunks.routes()
        ]
    _table(console, ("POSITION", "PREFIX", "TRUNK", "STRIP", "PREPEND"), rows)
    return 0


def cmd_route_remove(args: argparse.Namespace, console: Console) -> int:
    """``route remove DOMAIN POSITION``."""
    with _trunks(args, console) as trunks:
        trunks.remove_route(console.actor(), args.position)
    console.out(f"removed route {args.position}")
    return 0


def cmd_dialplan_set(args: argparse.Namespace, console: Console) -> int:
    """``dialplan set DOMAIN [--country-code CC] [--national-prefix P]
    [--international-prefix P]``: the options not given keep their values."""
    given = (args.country_code, args.national_prefix, args.international_prefix)
    if all(value is None for value in given):
        return _usage(
            console,
            "dialplan set",
            "give at least one of --country-code, --national-prefix, --international-prefix",
        )
    with _trunks(args, console) as trunks:
        trunks.set_number_settings(
            console.actor(),
            country_code=args.country_code,
            national_prefix=args.national_prefix,
            international_prefix=args.international_prefix,
        )
        _print_settings(console, trunks)
    return 0


def cmd_dialplan_show(args: argparse.Namespace, console: Console) -> int:
    """``dialplan show DOMAIN``."""
    with _trunks(args, console) as trunks:
        _print_settings(console, trunks)
    return 0


def _print_settings(console: Console, trunks: TrunkRepository) -> None:
    settings = trunks.number_settings()
    console.out(f"country code: {settings.country_code or '(unset)'}")
    console.out(f"national prefix: {settings.national_prefix or '(none)'}")
    console.out(f"international prefix: {settings.international_prefix or '(none)'}")
