from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from interop.pki.devpki import DevPki, generate
from interop.verifiers import Verifiers
from relay.keys import verifiers_from_pki, write_pki
from tests.helpers import NOW, postgres_database


@pytest.fixture(scope="session")
def pki() -> DevPki:
    return generate(NOW, ["hs01", "hs02", "hs03"], "ec")


@pytest.fixture(scope="session")
def rsa_pki() -> DevPki:
    return generate(NOW, ["hs01", "hs02"], "rsa")


@pytest.fixture(scope="session")
def verifiers(pki: DevPki) -> Verifiers:
    return verifiers_from_pki(pki)


@pytest.fixture(scope="session")
def rsa_verifiers(rsa_pki: DevPki) -> Verifiers:
    return verifiers_from_pki(rsa_pki)


@pytest.fixture(scope="session")
def pki_dir(pki: DevPki, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("pki")
    write_pki(pki, folder)
    return folder


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A new store's URL on each database the relay supports ([store] url)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/state.sqlite3"
        return
    with postgres_database() as url:
        yield url
