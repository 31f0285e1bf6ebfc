from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path
from subprocess import PIPE

import pytest
from cryptography import x509

from interop.errors import ConfigurationError
from interop.pki.devpki import DevPki, tls_host
from relay.config import embedded_default, from_mapping, load
from relay.context import build_context, verifiers_for
from relay.keys import write_pki

ROOT = Path(__file__).resolve().parents[2]


def test_embedded_default_is_hs01_on_loopback() -> None:
    config = embedded_default()
    assert config.provider.id == "hs01"
    assert config.peer_listener.host == "127.0.0.1"
    assert not config.submission_listener.require_tls
    assert config.dev_pki == Path("var/pki")
    assert config.limits.own_message_limit == 100 * 1024 * 1024


@pytest.mark.parametrize("name", ["hs01.toml", "hs02.toml"])
def test_example_configurations_load(name: str) -> None:
    config = load(ROOT / "config" / name)
    assert config.provider.id == name[:4]
    assert config.peers and all(p.route for p in config.peers)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"node": {"dev_pki": "p"}}, "x.toml: node.provider: required"),
        (
            {"node": {"provider": "hs01", "dev_pki": "p", "colour": "red"}},
            "x.toml: node.colour: unknown key",
        ),
        ({"node": {"provider": "hs01"}}, "give either [identity] files or node.dev_pki"),
        ({"node": {"provider": "hs99", "dev_pki": "p"}}, "node.provider: 'hs99' is not hs01-hs08"),
        (
            {"node": {"provider": "hs01", "dev_pki": "p"}, "timers": {"relay_timeout": "soon"}},
            "timers.relay_timeout: 'soon' is not a duration",
        ),
        (
            {"node": {"provider": "hs01", "dev_pki": "p"}, "peers": {"hs02": {"route": "nowhere"}}},
            "peers.hs02.route: 'nowhere' is not host:port",
        ),
        (
            {
                "node": {"provider": "hs01", "dev_pki": "p"},
                "listen": {"submission": {"address": "0.0.0.0:2587", "require_tls": False}},
            },
            "needs mutual TLS",
        ),
        (
            {"node": {"provider": "hs01", "dev_pki": "p"}, "limits": {"max_connections": "many"}},
            "limits.max_connections: expected int",
        ),
        (
            {
                "node": {"provider": "hs01", "dev_pki": "p"},
                "accounts": [{"address": "a@hs01.kep.tr", "type": "vip"}],
            },
            "accounts[0].type: send-receive or receive-only",
        ),
        (
            # An older release's key: a clear word instead of "unknown key".
            {"node": {"provider": "hs01", "dev_pki": "p"}, "limits": {"crypto_workers": 2}},
            "limits.crypto_workers: no longer used; remove it",
        ),
        (
            # Evidence names every recipient and holds at most interop's limit of them.
            {"node": {"provider": "hs01", "dev_pki": "p"}, "limits": {"max_recipients": 5000}},
            "limits.max_recipients: at most 1000",
        ),
        (
            {"node": {"provider": "hs01", "dev_pki": "p"}, "limits": {"max_junk_commands": 0}},
            "limits.max_junk_commands: must be positive",
        ),
        (
            {
                "node": {"provider": "hs01", "dev_pki": "p"},
                "accounts": [{"address": "a@hs01.kep.tr", "holder": "10000000147"}],
            },
            "accounts[0].holder: '10000000147': the check digits are wrong",
        ),
        (
            {
                "node": {"provider": "hs01", "dev_pki": "p"},
                "accounts": [{"address": "a@hs01.kep.tr", "operators": ["123"]}],
            },
            "accounts[0].operators: '123': a TC Kimlik No or YKN is 11 digits",
        ),
    ],
)
def test_bad_configuration_names_file_key_and_problem(raw: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        from_mapping(raw, "x.toml", Path("/tmp"))
    assert message in caught.value.detail


def test_node_processes_default_to_the_cpus_each_signing_for_itself() -> None:
    node = {"provider": "hs01", "dev_pki": "p"}
    default = from_mapping({"node": node}, "x.toml", Path("/tmp"))
    assert default.processes == (os.cpu_count() or 1)
    assert default.store.url is None and default.store.lease == 60.0
    assert default.store_url == f"sqlite:///{Path('/tmp/var/state.sqlite3')}"
    for bad in ({"processes": 0}, {"processes": 65}, {"name": "a b"}):
        with pytest.raises(ConfigurationError, match=f"node.{next(iter(bad))}"):
            from_mapping({"node": {**node, **bad}}, "x.toml", Path("/tmp"))
    for store, why in (
        ({"url": "mysql://x"}, "store.url"),
        ({"lease": "2s"}, "store.lease"),
        ({"connections": 1}, "store.connections"),
    ):
        with pytest.raises(ConfigurationError, match=why):
            from_mapping({"node": node, "store": store}, "x.toml", Path("/tmp"))
    shared = from_mapping(
        {"node": node, "store": {"url": "postgresql://kep@db/kep", "lease": "30s"}},
        "x.toml",
        Path("/tmp"),
    )
    assert shared.store_url == "postgresql://kep@db/kep" and shared.store.lease == 30.0


def test_bad_toml_and_missing_file(tmp_path: Path) -> None:
    broken = tmp_path / "broken.toml"
    broken.write_text("[node\nprovider = 1")
    with pytest.raises(ConfigurationError, match=r"broken\.toml: not valid TOML"):
        load(broken)
    with pytest.raises(ConfigurationError, match="cannot be read"):
        load(tmp_path / "missing.toml")


def test_nodes_starting_together_share_one_dev_pki(tmp_path: Path) -> None:
    """Two nodes sharing a dev_pki folder, started at once (as in the README's walk-through):
    one makes the PKI, the other waits for it and reads the same one."""
    configs = []
    for provider in ("hs01", "hs02"):
        path = tmp_path / f"{provider}.toml"
        path.write_text(
            f'[node]\nprovider = "{provider}"\ndata_dir = "{provider}"\ndev_pki = "pki"\n'
        )
        configs.append(path)
    code = (
        "import sys; from pathlib import Path; from relay.config import load;"
        "from relay.context import build_context;"
        "c = build_context(load(Path(sys.argv[1])));"
        "print(c.process.certificate.issuer.rfc4514_string(), c.tls_cafile.read_bytes()[-40:])"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    runs = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(c)], stdout=PIPE, stderr=PIPE, text=True, env=env
        )
        for c in configs
    ]
    outputs = [run.communicate(timeout=120) for run in runs]
    assert all(run.returncode == 0 for run in runs), outputs
    issuers = [out.strip().splitlines()[-1] for out, _err in outputs]
    assert issuers[0] == issuers[1]  # the same CAs
    made = [out + err for out, err in outputs if "development_pki_made" in out + err]
    assert len(made) == 1, outputs


def test_a_configured_node_reads_its_identity_and_trust_once(pki: DevPki, tmp_path: Path) -> None:
    """The production layout: [identity] files and one [peers] table per provider."""
    write_pki(pki, tmp_path / "pki")
    ca = tmp_path / "pki" / "ca"
    peers = "".join(
        f'[peers.{p}]\nroute = "127.0.0.1:1"\nprocess_cas = ["{ca}/process-ca.crt"]\n'
        f'tls_cas = ["{ca}/tls-ca.crt"]\ntls_names = ["{tls_host(p)}"]\n'
        for p in ("hs01", "hs02")
    )
    own = tmp_path / "pki" / "providers" / "hs01"
    (tmp_path / "hs01.toml").write_text(
        f'[node]\nprovider = "hs01"\ndata_dir = "data"\n'
        f'[identity]\nprocess_cert = "{own}/process.crt"\nprocess_key = "{own}/process.key"\n'
        f'tls_cert = "{own}/tls.crt"\ntls_key = "{own}/tls.key"\n'
        f'[trust]\nuser_cas = ["{ca}/user-ca.crt"]\n'
        f'crls = ["{ca}/process-ca.crl", "{ca}/tls-ca.crl", "{ca}/user-ca.crl"]\n'
        f"{peers}"
    )
    # Profile §5: a production configuration must name its TSA.
    with pytest.raises(ConfigurationError, match="needs a time-stamping authority"):
        load(tmp_path / "hs01.toml")
    with (tmp_path / "hs01.toml").open("a") as toml:
        toml.write('[tsa]\nurl = "https://tsa.example.kep.tr/rfc3161"\n')
    config = load(tmp_path / "hs01.toml")
    assert config.tsa is not None and config.tsa.url == "https://tsa.example.kep.tr/rfc3161"
    unnamed = dataclasses.replace(
        config, peers=tuple(dataclasses.replace(p, tls_names=()) for p in config.peers)
    )
    with pytest.raises(ConfigurationError, match=r"hs01\.toml: peers\.hs01: .*no TLS names"):
        build_context(unnamed)
    context = build_context(config)
    try:
        assert context.process.certificate == pki.providers["hs01"].process.certificate
        assert [e.id for e in context.verifiers.trust] == ["hs01", "hs02"]
        # The peers' TLS CAs, one per [peers] table, make the bundle the TLS contexts load.
        bundle = x509.load_pem_x509_certificates(context.tls_cafile.read_bytes())
        assert bundle == [pki.tls_ca.certificate] * 2
        assert context.server_tls() and context.client_tls()
        assert [e.id for e in verifiers_for(config).trust] == ["hs01", "hs02"]
    finally:
        context.store.close()
