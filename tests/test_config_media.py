"""The ``[media]`` section: the relay's address, what SDP advertises, its port
range and idle limit, each problem reported under its key path."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from appliance.config import MediaConfig, load, media_port_pairs, redacted_summary
from appliance.devinstance import DEV_CONFIG
from appliance.media.relay import PortPool
from tests.test_config import BASE_CONFIG, _edit, _instance, _problems

#: The dev config's [media] section, as the tests below replace it.
DEV_MEDIA = """\
[media]
listen = "127.0.0.1"
port_min = 20000
port_max = 29999
idle_timeout = 60
"""
#: The IPv4 wildcard, as a config value (compared, never bound here).
WILDCARD = "0.0.0.0"  # noqa: S104 (a config value in a test, not a bind)
#: The dev config with no [media] section, to append one of the tests' own.
NO_MEDIA = _edit(BASE_CONFIG, DEV_MEDIA, "")


def _with_media(tmp_path: Path, section: str, base: str = NO_MEDIA) -> Path:
    return _instance(tmp_path, base + "\n[media]\n" + section)


def _wildcard_sip(text: str) -> str:
    return _edit(text, 'tls_listen = "127.0.0.1:5061"', 'tls_listen = "0.0.0.0:5061"')


def test_dev_instance_writes_a_media_section() -> None:
    """init --dev writes [media] like [sip]: the relay on loopback, default range."""
    assert "\n[media]\n" in DEV_CONFIG
    assert DEV_MEDIA in BASE_CONFIG  # the dev config without its comments


def test_dev_config_loads_media(tmp_path: Path) -> None:
    """The dev [media] section loads into a frozen MediaConfig at config.media."""
    config = load(_instance(tmp_path), {})
    assert config.media == MediaConfig("127.0.0.1", "127.0.0.1", 20000, 29999, 60)
    assert config.media.port_pairs == 5000
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.media.port_min = 1  # type: ignore[misc]


def test_without_a_media_section_the_relay_follows_sip(tmp_path: Path) -> None:
    """With no [media] at all the relay listens (and advertises) where SIP over TLS
    listens, and takes the default range and idle timeout."""
    config = load(_instance(tmp_path, NO_MEDIA), {})
    assert config.media == MediaConfig("127.0.0.1", "127.0.0.1", 20000, 29999, 60)
    v6 = _edit(NO_MEDIA, 'tls_listen = "127.0.0.1:5061"', 'tls_listen = "[::1]:5061"')
    assert load(_instance(tmp_path, v6), {}).media.advertised_address == "::1"


def test_every_key_is_read(tmp_path: Path) -> None:
    """Each key is taken as written; IPv6 addresses come back compressed."""
    section = """\
listen = "0:0:0:0:0:0:0:0"
advertised_address = "2001:DB8:0:0::10"
port_min = 1024
port_max = 1027
idle_timeout = 1
"""
    config = load(_with_media(tmp_path, section), {})
    assert config.media == MediaConfig("::", "2001:db8::10", 1024, 1027, 1)
    assert config.media.port_pairs == 2


@pytest.mark.parametrize("wildcard", [WILDCARD, "::"])
def test_wildcard_listen_needs_an_advertised_address(tmp_path: Path, wildcard: str) -> None:
    """A wildcard listen address cannot go into SDP: advertised_address is then
    required, reported at its key path; given, it is used."""
    problems = _problems(_with_media(tmp_path, f'listen = "{wildcard}"\n'))
    assert [key for key, _ in problems] == ["media.advertised_address"]
    assert problems[0][1].startswith(f"is required when media.listen is the wildcard {wildcard}")
    given = f'listen = "{wildcard}"\nadvertised_address = "192.0.2.10"\n'
    assert load(_with_media(tmp_path, given), {}).media.advertised_address == "192.0.2.10"


def test_wildcard_sip_listener_makes_the_address_required(tmp_path: Path) -> None:
    """SIP on 0.0.0.0 with no [media] means a relay on 0.0.0.0: the missing
    advertised address is reported, never guessed."""
    problems = _problems(_instance(tmp_path, _wildcard_sip(NO_MEDIA)))
    assert [key for key, _ in problems] == ["media.advertised_address"]
    text = _wildcard_sip(NO_MEDIA) + '\n[media]\nadvertised_address = "203.0.113.5"\n'
    config = load(_instance(tmp_path, text), {})
    assert (config.media.listen, config.media.advertised_address) == (WILDCARD, "203.0.113.5")


@pytest.mark.parametrize(
    ("section", "key", "message"),
    [
        ('listen = "localhost"\n', "media.listen", "not an IP address: 'localhost'"),
        ('listen = "127.0.0.1:20000"\n', "media.listen", "not an IP address"),
        ('listen = "[::1]"\n', "media.listen", "not an IP address"),
        ("listen = 127\n", "media.listen", "expected an IP address string, got int"),
        (
            'advertised_address = "pbx.example.com"\n',
            "media.advertised_address",
            "not an IP address",
        ),
        ('advertised_address = "0.0.0.0"\n', "media.advertised_address", "must be a unicast"),
        ('advertised_address = "224.0.0.1"\n', "media.advertised_address", "must be a unicast"),
        ('advertised_address = "::1"\n', "media.advertised_address", "is IPv6 but media.listen"),
        ("port_min = 1023\n", "media.port_min", "must be between 1024 and 65535, got 1023"),
        ("port_max = 65536\n", "media.port_max", "must be between 1024 and 65535, got 65536"),
        ('port_min = "20000"\n', "media.port_min", "expected an integer, got str"),
        ("port_min = 30000\n", "media.port_max", "must be greater than port_min (30000)"),
        ("port_min = 20000\nport_max = 20000\n", "media.port_max", "must be greater"),
        ("port_min = 20000\nport_max = 20002\n", "media.port_max", "holds 1 RTP/RTCP pair"),
        ("port_min = 20001\nport_max = 20004\n", "media.port_max", "holds 1 RTP/RTCP pair"),
        ("idle_timeout = 0\n", "media.idle_timeout", "must be between 1 and 86400, got 0"),
        ("idle_timeout = -5\n", "media.idle_timeout", "must be between 1 and 86400"),
        ("idle_timeout = 2.5\n", "media.idle_timeout", "expected an integer, got float"),
        ("idle_timeout = true\n", "media.idle_timeout", "expected an integer, got bool"),
        ('relay = "on"\n', "media.relay", "unknown key"),
    ],
)
def test_bad_values_are_reported_at_their_key(
    tmp_path: Path, section: str, key: str, message: str
) -> None:
    """Each bad [media] value is exactly one problem, under its key path, saying
    what was expected (a bad port is not reported again as a bad range)."""
    problems = _problems(_with_media(tmp_path, section))
    assert [k for k, _ in problems] == [key]
    assert message in problems[0][1]


def test_media_problems_are_collected_with_the_others(tmp_path: Path) -> None:
    """Problems in [media] come back in the same ConfigError as any other, so a
    file is fixed in one pass."""
    text = _edit(NO_MEDIA, 'level = "info"', 'level = "loud"')
    section = 'listen = "nowhere"\nport_min = 5\nidle_timeout = 0\n'
    keys = [k for k, _ in _problems(_with_media(tmp_path, section, text))]
    assert keys == ["log.level", "media.listen", "media.port_min", "media.idle_timeout"]


@pytest.mark.parametrize(
    ("port_min", "port_max", "pairs"),
    [
        (20000, 29999, 5000),
        (20000, 20003, 2),
        (20001, 20004, 1),
        (20001, 20005, 2),
        (1024, 1025, 1),
    ],
)
def test_port_pairs_match_the_relays_allocation(port_min: int, port_max: int, pairs: int) -> None:
    """A pair is an even RTP port and the odd RTCP port above it, both in range,
    exactly as many as appliance.media.relay.PortPool hands out."""
    assert media_port_pairs(port_min, port_max) == pairs
    pool = PortPool(port_min, port_max)
    handed_out = []
    while (port := pool.allocate()) is not None:
        handed_out.append(port)
    assert len(handed_out) == pairs
    assert all(p % 2 == 0 and port_min <= p and p + 1 <= port_max for p in handed_out)


def test_redacted_summary_lists_media(tmp_path: Path) -> None:
    """check-config's summary shows every [media] value."""
    summary = list(redacted_summary(load(_instance(tmp_path), {})))
    assert summary[-5:] == [
        "media.listen: 127.0.0.1",
        "media.advertised_address: 127.0.0.1",
        "media.port_min: 20000",
        "media.port_max: 29999",
        "media.idle_timeout: 60",
    ]
