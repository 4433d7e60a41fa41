"""Log output for ``telemancer run``: JSON lines for journald and collectors,
readable text on a terminal. Events use ``twisted.logger`` with ``{field}``
keys; secrets, passwords, digest responses and SRTP keys are never fields.
"""

from __future__ import annotations

from typing import TextIO

from twisted.logger import (
    FilteringLogObserver,
    ILogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    globalLogBeginner,
    jsonFileLogObserver,
    textFileLogObserver,
)

from appliance.config import LogConfig


def make_observer(config: LogConfig, stream: TextIO) -> ILogObserver:
    """The observer for ``config``: JSON unless ``auto`` and ``stream`` is a terminal."""
    as_json = config.format == "json" or (config.format == "auto" and not stream.isatty())
    # recordSeparator="": JSON lines, not RFC 7464 sequences, for journald and collectors.
    observer = (
        jsonFileLogObserver(stream, recordSeparator="") if as_json else textFileLogObserver(stream)
    )
    predicate = LogLevelFilterPredicate(LogLevel.levelWithName(config.level))
    return FilteringLogObserver(observer, [predicate])


def start_logging(config: LogConfig, stream: TextIO) -> None:
    """Send all log events to ``stream`` for the rest of the process."""
    globalLogBeginner.beginLoggingTo([make_observer(config, stream)], redirectStandardIO=False)
