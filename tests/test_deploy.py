"""Flower Deployment Engine: TLS material, SuperNode keys, and a loopback federation."""

import dataclasses
import json
import ssl
import stat
import sys
import time
import urllib.error
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_ssh_private_key
from flwr.cli.supernode.register import try_load_public_key
from flwr.common.config import parse_config_args

from fedpit.cli.main import main
from fedpit.config.load import from_flat, load_toml
from fedpit.data.load import load_examples
from fedpit.deploy import (
    DeployError,
    LocalFederation,
    NodeSpec,
    check_not_packed,
    descendants,
    https_open,
    make_node_keys,
    make_test_certificates,
    run_config_for,
    run_local_federation,
    split_to_nodes,
    write_examples,
)
from fedpit.deploy.processes import _alive
from fedpit.privacy.policy import policy_for, write_policy
from fedpit.runs.rundir import read_jsonl
from tests.helpers import examples

ROOT = Path(__file__).resolve().parents[1]


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_test_certificates_chain_to_the_ca_and_name_the_hosts(tmp_path):
    files = make_test_certificates(tmp_path / "tls", hosts=("127.0.0.1", "link.example.org"))
    ca = x509.load_pem_x509_certificate(files.ca_cert.read_bytes())
    server = x509.load_pem_x509_certificate(files.server_cert.read_bytes())
    server.verify_directly_issued_by(ca)  # raises if the signature does not verify
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert san.get_values_for_type(x509.DNSName) == ["link.example.org"]
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert mode(files.ca_key) == 0o600 and mode(files.server_key) == 0o600
    # Python's TLS stack accepts the pair as a server identity trusted by the CA.
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(files.server_cert, files.server_key)
    ssl.create_default_context(cafile=str(files.ca_cert))


def test_node_keys_are_what_flower_reads(tmp_path):
    keys = make_node_keys(tmp_path / "keys", "hospital-a")
    private = load_ssh_private_key(keys.private_key.read_bytes(), None)
    assert isinstance(private, ec.EllipticCurvePrivateKey)
    assert private.curve.name == "secp384r1"
    assert mode(keys.private_key) == 0o600
    assert keys.public_key.read_text().startswith("ecdsa-sha2-nistp384 ")
    assert try_load_public_key(keys.public_key)  # what `flwr supernode register` does


def test_node_config_round_trips_through_flowers_parser(tmp_path):
    node = NodeSpec(3, tmp_path / "my data.jsonl", tmp_path / "state", tmp_path / "t.jsonl")
    parsed = parse_config_args([node.node_config()])
    assert parsed == {
        "data-path": str((tmp_path / "my data.jsonl").resolve()),
        "state-dir": str((tmp_path / "state").resolve()),
        "test-path": str((tmp_path / "t.jsonl").resolve()),
        "client-id": 3,
    }


def test_node_files_reload_as_the_same_examples(tmp_path):
    original = examples(5)
    path = write_examples(tmp_path / "n" / "data.jsonl", original)
    assert mode(path) == 0o600
    again = load_examples(path)
    assert [(e.id, e.instruction, e.output, dict(e.meta)) for e in again] == [
        (e.id, e.instruction, e.output, dict(e.meta)) for e in original
    ]


def test_run_config_holds_only_keys_flower_knows(tmp_path):
    cfg = from_flat({"method": "fedavg", "fed.rounds": 1, "run-dir": str(tmp_path / "r")})
    run_config = run_config_for(cfg)
    assert run_config == {"method": "fedavg", "fed.rounds": 1, "run-dir": str(tmp_path / "r")}
    assert set(run_config) <= set(load_toml(ROOT / "pyproject.toml"))


def test_certs_and_node_key_commands(tmp_path, capsys):
    assert main(["certs", str(tmp_path / "tls")]) == 0
    assert main(["node-key", str(tmp_path / "keys"), "a", "b"]) == 0
    out = capsys.readouterr().out
    assert "--root-certificates" in out and "register" in out
    assert {p.name for p in (tmp_path / "tls").iterdir()} == {
        "ca.pem",
        "ca.key",
        "server.pem",
        "server.key",
    }
    assert {p.name for p in (tmp_path / "keys").iterdir()} == {"a", "a.pub", "b", "b.pub"}


def test_stop_ends_started_processes_and_their_children(tmp_path):
    code = (
        "import subprocess, sys, time;"
        "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'],"
        " start_new_session=True);"  # detached, as Flower starts SuperExec
        "time.sleep(600)"
    )
    fed = LocalFederation(tmp_path, app_dir=ROOT, echo=None)
    started = fed.start("sleeper", [sys.executable, "-c", code], tmp_path / "home")
    deadline = time.monotonic() + 60
    while not descendants(started.proc.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    pids = [started.proc.pid, *descendants(started.proc.pid)]
    assert len(pids) == 2
    fed.stop(grace=5)
    assert not any(_alive(pid) for pid in pids)


def test_private_files_must_stay_out_of_the_app_flwr_run_ships(tmp_path):
    app = tmp_path / "app"
    check_not_packed(tmp_path / "work", app)
    check_not_packed(app / "runs" / "federation-1", app)  # git-ignored
    with pytest.raises(DeployError, match="every node"):
        check_not_packed(app / "data" / "hospital.jsonl", app)
    cfg = from_flat({"method": "fedavg"})
    with pytest.raises(DeployError, match="every node"):
        run_local_federation(cfg, ROOT / "federation-here", app_dir=ROOT, echo=None)
    assert not (ROOT / "federation-here").exists()  # refused before writing anything


# --------------------------------------------------------------------------- loopback


def write_corpus(path: Path) -> Path:
    rows = [
        {"id": e.id, "instruction": e.instruction, "input": "", "output": e.output, **e.meta}
        for e in examples(24)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_loopback_federation_refuses_unregistered_nodes_and_completes_a_round(
    tiny_model_dir, tmp_path
):
    """One SuperLink (TLS + node auth), 2 registered SuperNodes, 2 refused ones, 1 round;
    then a run the nodes' own policy forbids, refused with nothing sent."""
    run_dir = tmp_path / "server"
    cfg = from_flat(
        {
            "method": "fedavg",  # no synthetic generation: the round is about transport
            "model.name": str(tiny_model_dir),
            "model.max-length": 64,
            "data.name": str(write_corpus(tmp_path / "corpus.jsonl")),
            "data.partition": "iid",
            "data.num-clients": 2,
            "data.examples-per-client": 4,
            "data.test-size": 4,
            "eval.client-test-size": 2,
            "fed.rounds": 1,
            "train.batch-size": 2,
            "lora.rank": 4,
            "lora.alpha": 8,
            "run-dir": str(run_dir),
        }
    )
    # Each node's operator allows the FedAvg baseline (the default policy refuses it).
    nodes = [
        dataclasses.replace(
            n, policy_path=write_policy(tmp_path / f"policy-{n.client_id}.toml", policy_for(cfg))
        )
        for n in split_to_nodes(cfg, tmp_path / "nodes")
    ]
    tls = make_test_certificates(tmp_path / "tls")
    fed = LocalFederation(tmp_path / "work", app_dir=ROOT, echo=None)
    spawned: list[int] = []
    try:
        ids = fed.up(nodes, tls, timeout=600)
        assert fed.superlink is not None

        # TLS is on, and only the test CA vouches for the SuperLink.
        url = f"https://{fed.address}/health"
        trusted = ssl.create_default_context(cafile=str(tls.ca_cert))
        with https_open(url, trusted, 30) as resp:
            assert resp.status == 200
        with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
            https_open(url, ssl.create_default_context(), 30)

        # A SuperNode whose key was never registered, and one without any key: refused.
        rogue_keys = make_node_keys(tmp_path / "rogue-keys", "rogue")
        rogue = fed.start_supernode(
            "rogue",
            NodeSpec(7, nodes[0].data_path, tmp_path / "rogue-state"),
            rogue_keys.private_key,
        )
        keyless = fed.start_supernode(
            "keyless", NodeSpec(8, nodes[1].data_path, tmp_path / "keyless-state"), None
        )
        assert rogue.proc.wait(timeout=300) != 0
        assert keyless.proc.wait(timeout=300) != 0
        assert "Failed to activate SuperNode" in rogue.log_text()
        assert "All SuperNodes must be registered" in keyless.log_text()
        assert "No SuperNode found with the given public key" in fed.superlink.log_text()
        online = {n["node-id"] for n in fed.list_nodes() if n["status"] == "online"}
        assert online == {str(i) for i in ids}  # only the registered two

        # The authorised federation completes a round with both nodes.
        result = fed.submit(run_config_for(cfg), stream=None, timeout=1500)
        assert result.ok, (result, (fed.logs / "flwr-run.log").read_text()[-3000:])
        # The coordinator now asks for FedMIT (its upload mixes W_l with nothing): each
        # node refuses before any work, so the run fails and no node sends or keeps a thing.
        before = {n.client_id: sorted(n.state_dir.rglob("*")) for n in nodes}
        forbidden = dataclasses.replace(cfg, method="fedmit", run_dir=str(tmp_path / "server2"))
        refused = fed.submit(run_config_for(forbidden), stream=None, timeout=1500)
        assert not refused.ok
        assert {n.client_id: sorted(n.state_dir.rglob("*")) for n in nodes} == before
        failures = read_jsonl(tmp_path / "server2" / "failures.jsonl")
        assert len(failures) == 2 and all(f["kind"] == "error" for f in failures)
        refusal = "node policy refuses the round: the server asks for method = 'fedmit'"
        assert all(refusal in f["reason"] for f in failures)
        assert not (tmp_path / "server2" / "global").exists()
        spawned = [d for p in fed.processes for d in descendants(p.proc.pid)]
        spawned += [p.proc.pid for p in fed.processes]
    finally:
        fed.stop()

    rows = read_jsonl(run_dir / "metrics.jsonl")
    assert [r["round"] for r in rows] == [0, 1]
    assert rows[1]["clients"]["clients"] == 2 and rows[1]["clients"]["num-examples"] == 8
    assert rows[1]["client_eval_loss"] > 0  # each node scored its own held-out file
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["client_rounds"] == 2
    assert (run_dir / "global" / "adapter_model.safetensors").exists()

    # The refused nodes never got work.
    assert not any((tmp_path / "rogue-state").iterdir())
    assert not any((tmp_path / "keyless-state").iterdir())

    # Private data and adapters stay on the nodes: each node's state dir holds its own
    # record; the server's run dir holds no client directory and no private text.
    for node in nodes:
        [own] = list((node.state_dir / "runs").iterdir())  # this run's private state only
        assert (own / "metrics.jsonl").exists()
        assert (own / "adapters" / "upload").is_dir()
        audit = read_jsonl(node.state_dir / "audit.jsonl")  # one log per node
        assert len(audit) == 1 and audit[0]["policy"]["values"]["methods"] == ["fedavg"]
    server_files = [p for p in run_dir.rglob("*") if p.is_file()]
    assert not (run_dir / "clients").exists()
    assert all(p.relative_to(run_dir).parts[0] != "clients" for p in server_files)
    blob = b"".join(p.read_bytes() for p in server_files)
    for node in nodes:
        for ex in load_examples(node.data_path):
            assert ex.output.encode() not in blob and ex.instruction.encode() not in blob

    # Every process (and everything it started) is gone.
    deadline = time.monotonic() + 30
    while any(_alive(pid) for pid in spawned) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not any(_alive(pid) for pid in spawned)
