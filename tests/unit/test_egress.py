"""Where tenant-given webhook URLs may make yoloq connect (routing/egress.py): public addresses, inside ones only
where an operator allowed the network."""

from __future__ import annotations

import pytest

from routing.egress import address_problem, host_problem, networks

pytestmark = pytest.mark.unit

NONE = networks("")


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("::ffff:127.0.0.1", "loopback"),  # IPv4 written as IPv6 is judged as IPv4
        ("169.254.169.254", "link-local"),  # the cloud metadata service
        ("fe80::1%eth0", "link-local"),
        ("224.0.0.1", "multicast"),
        ("0.0.0.0", "unspecified"),
        ("10.1.2.3", "private"),
        ("192.168.1.1", "private"),
        ("fd00::1", "private"),
        ("240.0.0.1", "private"),  # reserved, and private by Python's table
        ("100.64.0.1", "non-public"),  # shared address space (CGNAT)
    ],
)
def test_inside_addresses_are_refused_with_their_kind(address: str, kind: str) -> None:
    problem = address_problem(address, NONE)
    assert problem is not None and f"a {kind} address, inside the fleet" in problem


@pytest.mark.parametrize("address", ["8.8.8.8", "2606:4700:4700::1111", "::ffff:8.8.8.8"])
def test_public_addresses_pass(address: str) -> None:
    assert address_problem(address, NONE) is None


def test_an_allowed_network_opens_exactly_itself_and_only_its_ip_version() -> None:
    allowed = networks(" 10.20.0.0/16 , ,127.0.0.1")
    assert address_problem("10.20.5.5", allowed) is None and address_problem("127.0.0.1", allowed) is None
    assert address_problem("10.21.0.1", allowed) is not None and address_problem("127.0.0.2", allowed) is not None
    assert address_problem("::1", networks("127.0.0.0/8")) is not None


def test_not_an_address_and_bad_networks_are_named() -> None:
    assert "is not an IP address" in str(address_problem("example.com", NONE))
    with pytest.raises(ValueError, match=r"'10\.0\.0\.0/33' is not a network"):
        networks("10.0.0.0/8,10.0.0.0/33")


@pytest.mark.parametrize(
    ("host", "refused"),
    [("127.0.0.1", True), ("[::1]", True), ("example.com", False), ("8.8.8.8", False), ("2130706433", False)],
)
def test_hosts_are_judged_before_lookup_only_when_they_are_ip_literals(host: str, refused: bool) -> None:
    # a name (even a decimal one that resolves to loopback) is judged on every address it resolves to, at connect time
    assert (host_problem(host, NONE) is not None) is refused
