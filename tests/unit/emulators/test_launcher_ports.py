"""Ports the launcher (and the tests) pick: distinct, free, and outside the kernel's
ephemeral range, where no outgoing connection can take one before its server binds it."""

from __future__ import annotations

import socket

import pytest

from emulators.launcher import EPHEMERAL_RANGE, free_ports


def ephemeral() -> range:
    low, high = (int(n) for n in EPHEMERAL_RANGE.read_text().split())
    return range(low, high + 1)


def test_ports_are_distinct_free_and_below_the_ephemeral_range() -> None:
    if not EPHEMERAL_RANGE.is_file():
        pytest.skip("no /proc ephemeral range on this kernel: the kernel picks the ports")
    ports = free_ports(40)
    assert len(set(ports)) == 40
    assert not [p for p in ports if p in ephemeral()]
    for port in ports:
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))
