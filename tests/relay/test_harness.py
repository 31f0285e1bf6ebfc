"""The test harness itself: what the gateway tests rely on to be repeatable."""

from __future__ import annotations

from typing import Any

import pytest

from tests.relay import gateways


class _Probe:
    """A socket whose kernel hands out the ports of ``ports`` in turn."""

    def __init__(self, ports: list[int]) -> None:
        self.ports = ports

    def __call__(self, *args: Any) -> _Probe:
        return self

    def __enter__(self) -> _Probe:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def bind(self, address: tuple[str, int]) -> None:
        return None

    def getsockname(self) -> tuple[str, int]:
        return ("127.0.0.1", self.ports.pop(0))


def test_free_port_never_gives_the_same_port_twice(monkeypatch: pytest.MonkeyPatch) -> None:
    # The kernel gave a closed probe's port again: a node's peer and monitoring listeners got
    # the same port and it refused its configuration (CI, test_storage_faults).
    monkeypatch.setattr(gateways, "_GIVEN", set())
    monkeypatch.setattr("socket.socket", _Probe([40001, 40001, 40002]))
    assert [gateways.free_port(), gateways.free_port()] == [40001, 40002]
