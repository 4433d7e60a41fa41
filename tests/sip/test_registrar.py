"""The registrar's expiry: refreshed bindings live on to their new expiry, and
the expiry queue holds one entry per binding however often phones refresh."""

from __future__ import annotations

from appliance.sip.message import parse_datagram
from appliance.sip.registrar import Flow, Registrar
from appliance.testing.sipclient import SipTestClient

PHONE = Flow("udp", ("127.0.0.10", 5062))
NOW = 1_800_000_000.0
TENANT, EXTENSION = 1, 7


def _register(registrar: Registrar, phone: SipTestClient, now: float, expires: int) -> int:
    message = parse_datagram(phone.register(expires=expires))
    return registrar.register(TENANT, EXTENSION, message, PHONE, now).status


def test_refreshes_keep_one_queued_expiry_per_binding() -> None:
    registrar = Registrar(min_expires=60)
    phone = SipTestClient("1001", "acme.example", "secret")
    for second in range(1_000):
        assert _register(registrar, phone, NOW + second, 600) == 200
    assert len(registrar._expiry) == 1  # the bound is what is tested
    [binding] = registrar.bindings(EXTENSION, NOW + 999)
    assert binding.expires_at == NOW + 999 + 600


def test_a_refreshed_binding_outlives_its_first_expiry_and_expires_at_its_last() -> None:
    registrar = Registrar(min_expires=60)
    phone = SipTestClient("1001", "acme.example", "secret")
    assert _register(registrar, phone, NOW, 600) == 200
    assert _register(registrar, phone, NOW + 300, 600) == 200
    assert registrar.next_timer() == NOW + 600  # queued when first bound
    assert registrar.handle_timer(NOW + 600) == []
    assert len(registrar.bindings(EXTENSION, NOW + 600)) == 1
    assert registrar.next_timer() == NOW + 900  # re-queued at its refreshed expiry
    [expired] = registrar.handle_timer(NOW + 900)
    assert expired.expires_at == NOW + 900
    assert registrar.bindings(EXTENSION, NOW + 900) == []
    assert registrar.next_timer() is None


def test_a_binding_removed_and_made_again_expires_once_at_its_new_time() -> None:
    registrar = Registrar(min_expires=60)
    phone = SipTestClient("1001", "acme.example", "secret")
    assert _register(registrar, phone, NOW, 600) == 200
    assert _register(registrar, phone, NOW + 10, 0) == 200  # unregistered
    assert registrar.bindings(EXTENSION, NOW + 10) == []
    assert _register(registrar, phone, NOW + 20, 3600) == 200
    assert registrar.handle_timer(NOW + 600) == []
    assert len(registrar.bindings(EXTENSION, NOW + 600)) == 1
    assert [b.expires_at for b in registrar.handle_timer(NOW + 3620)] == [NOW + 3620]
    assert registrar.handle_timer(NOW + 10_000) == []


def test_a_binding_refreshed_to_expire_sooner_expires_at_the_sooner_time() -> None:
    registrar = Registrar(min_expires=60)
    phone = SipTestClient("1001", "acme.example", "secret")
    assert _register(registrar, phone, NOW, 3600) == 200
    assert _register(registrar, phone, NOW + 10, 60) == 200
    assert registrar.next_timer() == NOW + 70
    assert [b.expires_at for b in registrar.handle_timer(NOW + 70)] == [NOW + 70]
    assert registrar.handle_timer(NOW + 3600) == []
