from __future__ import annotations

from pathlib import Path

import pytest

from interop.pki.devpki import DevPki, generate
from interop.verifiers import Verifiers
from relay.pkidir import verifiers_from_pki, write_pki
from tests.helpers import NOW


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
