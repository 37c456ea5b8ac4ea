"""The client's address: who is believed about it, and who is not."""

import ipaddress

import pytest

from tracking.address import client_address, parse

PROXIES = (ipaddress.ip_network("10.0.0.5/32"), ipaddress.ip_network("172.16.0.0/12"),
           ipaddress.ip_network("2001:db8:cafe::/48"))


def client(remote, forwarded=None, proxies=PROXIES):
    meta = {"REMOTE_ADDR": remote}
    if forwarded is not None:
        meta["HTTP_X_FORWARDED_FOR"] = forwarded
    found = client_address(meta, proxies)
    return None if found is None else str(found)


def test_without_trusted_proxies_the_peer_is_the_client_whatever_it_forwards():
    assert client("203.0.113.9", "198.51.100.7", proxies=()) == "203.0.113.9"
    assert client("203.0.113.9") == "203.0.113.9"


def test_an_untrusted_peer_cannot_name_another_address():
    assert client("203.0.113.9", "198.51.100.7") == "203.0.113.9"
    assert client("10.0.0.6", "198.51.100.7") == "10.0.0.6"


def test_behind_a_trusted_proxy_the_client_is_the_address_it_saw():
    assert client("10.0.0.5", "198.51.100.7") == "198.51.100.7"
    assert client("172.20.1.1", " 198.51.100.7 ") == "198.51.100.7"


def test_what_a_client_writes_itself_is_left_of_its_own_address_and_never_reached():
    # The banned client sends `X-Forwarded-For: 192.0.2.50`; the proxy appends what it saw.
    assert client("10.0.0.5", "192.0.2.50, 198.51.100.7") == "198.51.100.7"
    assert client("10.0.0.5", "10.0.0.5, 198.51.100.7") == "198.51.100.7"


def test_a_chain_of_trusted_proxies_is_walked_to_the_first_untrusted_hop():
    # CDN edge (172.16.x) -> load balancer (10.0.0.5) -> Django.
    assert client("10.0.0.5", "192.0.2.50, 198.51.100.7, 172.16.3.4") == "198.51.100.7"
    # Every hop trusted: the leftmost is the best there is.
    assert client("10.0.0.5", "172.16.3.4") == "172.16.3.4"


def test_a_trusted_proxy_without_a_header_or_with_garbage_is_itself_the_client():
    assert client("10.0.0.5") == "10.0.0.5"
    assert client("10.0.0.5", "") == "10.0.0.5"
    assert client("10.0.0.5", "unknown") == "10.0.0.5"
    assert client("10.0.0.5", "198.51.100.7, _hidden") == "10.0.0.5"


def test_ipv6_ports_brackets_zones_and_mapped_addresses():
    assert client("2001:db8:cafe::1", "2001:db8::7") == "2001:db8::7"
    assert client("10.0.0.5", "[2001:db8::7]:443") == "2001:db8::7"
    assert client("10.0.0.5", "198.51.100.7:5555") == "198.51.100.7"
    assert client("::ffff:10.0.0.5", "::ffff:198.51.100.7") == "198.51.100.7"
    assert parse("fe80::1%eth0") == ipaddress.ip_address("fe80::1")


@pytest.mark.parametrize("remote", ["", None, "unix:/run/gunicorn.sock", "not an address"])
def test_a_peer_without_an_address_has_none(remote):
    assert client_address({"REMOTE_ADDR": remote} if remote is not None else {}, PROXIES) is None
