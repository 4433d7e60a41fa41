"""Strict ``${VAR}`` substitution for config string values.

``string.Template`` and ``os.path.expandvars`` both have a silent mode that
leaves ``${VAR}`` in place; for secrets and paths that is wrong, so this is a
small exact grammar instead:

- ``${NAME}``: the variable's value; unset is an error (empty is allowed).
- ``${NAME:-default}``: the default when the variable is unset or empty.
- ``${NAME:?message}``: an error carrying ``message`` when unset or empty.
- ``$$``: a literal ``$``.

Any other ``$`` is an error, so a value can never keep an unresolved reference.
Defaults and messages are literal text and may not contain ``$`` or ``}``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

_REFERENCE = re.compile(
    r"\$(?:(?P<dollar>\$)|\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:[-?])(?P<arg>[^$}]*))?\})"
)


class InterpolationError(ValueError):
    """A reference that cannot be resolved; the message says which and why."""


def interpolate(value: str, environ: Mapping[str, str]) -> str:
    """Return ``value`` with every reference resolved from ``environ``."""
    out: list[str] = []
    pos = 0
    while (dollar := value.find("$", pos)) != -1:
        out.append(value[pos:dollar])
        match = _REFERENCE.match(value, dollar)
        if match is None:
            raise InterpolationError(
                f"malformed reference at offset {dollar} (write $$ for a literal $,"
                " ${NAME}, ${NAME:-default} or ${NAME:?message})"
            )
        out.append(_resolve(match, environ))
        pos = match.end()
    out.append(value[pos:])
    return "".join(out)


def _resolve(match: re.Match[str], environ: Mapping[str, str]) -> str:
    if match["dollar"]:
        return "$"
    name, op, arg = match["name"], match["op"], match["arg"]
    current = environ.get(name)
    if op is None:
        if current is None:
            raise InterpolationError(f"environment variable {name} is not set")
        return current
    if current:
        return current
    if op == ":-":
        return arg
    raise InterpolationError(arg or f"environment variable {name} is not set or empty")
