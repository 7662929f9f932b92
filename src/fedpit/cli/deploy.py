"""``fedpit certs``, ``fedpit node-key`` and ``fedpit federation local``."""

from __future__ import annotations

import signal
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fedpit.cli.console import print_summary
from fedpit.config.load import build_config
from fedpit.deploy.credentials import LOOPBACK, make_node_keys, make_test_certificates
from fedpit.deploy.errors import DeployError
from fedpit.deploy.local import default_work_dir, run_local_federation
from fedpit.deploy.nodes import NodeSpec

FEDERATION_HELP = """\
Try FedPIT on Flower's Deployment Engine on this machine: a flower-superlink with TLS
(a throw-away CA from `fedpit certs`) and SuperNode authentication, one
flower-supernode per client (its own key pair, registered with `flwr supernode
register`; its own data-path, test-path, state-dir and client-id as node
configuration), and `flwr run` submitting the job. Ports are picked free at run time;
everything listens on 127.0.0.1. Ctrl-C stops the run and every process.

Configuration as for `fedpit run` (--config FILE, key=value). By default each client's
share of the run's data split is written to WORK_DIR/nodes/<i>/data.jsonl; --node-data
gives the nodes' own files instead (one per node, in client-id order).

Layout of WORK_DIR: tls/ (CA + server certificate), keys/ (node key pairs), nodes/<i>/
(data and private state of node i), logs/ (superlink, supernode-<i>, flwr-run),
server/ (the server's run directory, unless run-dir is set).
"""


def _parse_node_data(items: Sequence[str], work: Path) -> list[NodeSpec]:
    nodes = []
    for i, item in enumerate(items):
        data, _, test = item.partition(",")
        for path in filter(None, (data, test)):
            if not Path(path).expanduser().is_file():
                raise DeployError(f"--node-data {item!r}: {path} is not a file")
        nodes.append(
            NodeSpec(
                client_id=i,
                data_path=Path(data).expanduser().resolve(),
                state_dir=work / "nodes" / str(i) / "state",
                test_path=Path(test).expanduser().resolve() if test else None,
            )
        )
    return nodes


def cmd_certs(args: Any) -> int:
    """``fedpit certs DIR``: a test CA and a SuperLink certificate."""
    hosts = list(dict.fromkeys([*(args.host or []), *LOOPBACK]))
    files = make_test_certificates(args.dir, hosts, args.days)
    print(f"names in the server certificate: {', '.join(hosts)}")
    print(f"CA certificate     {files.ca_cert}   (SuperNodes: --root-certificates)")
    print(f"CA private key     {files.ca_key}   (0600; keep offline)")
    print(f"server certificate {files.server_cert}   (SuperLink: --ssl-certfile)")
    print(f"server private key {files.server_key}   (0600; SuperLink: --ssl-keyfile)")
    print("For testing only: a real deployment uses certificates from your own CA.")
    return 0


def cmd_node_key(args: Any) -> int:
    """``fedpit node-key DIR NAME ...``: SuperNode authentication key pairs."""
    for name in args.names:
        keys = make_node_keys(args.dir, name)
        print(f"{name}: private {keys.private_key} (0600, stays on the node)")
        print(f"{' ' * len(name)}  public  {keys.public_key} (register it on the SuperLink)")
    return 0


def cmd_federation_local(args: Any) -> int:
    """``fedpit federation local``: a loopback deployment running one job."""
    cfg = build_config(args.config, args.overrides)
    work = Path(args.work_dir or default_work_dir()).expanduser().resolve()
    nodes = _parse_node_data(args.node_data, work) if args.node_data else None

    def terminate(signum: int, frame: object) -> None:
        del signum, frame
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        print(f"Work directory: {work}", flush=True)
        _, summary = run_local_federation(
            cfg, work, nodes, app_dir=args.app, timeout=args.timeout or None
        )
    finally:
        signal.signal(signal.SIGTERM, previous)
    print_summary(summary)
    return 0


def add_commands(subparsers: Any) -> None:
    """Add ``certs``, ``node-key`` and ``federation`` to the ``fedpit`` command."""
    import argparse

    certs = subparsers.add_parser(
        "certs",
        help="create a test CA and a SuperLink TLS certificate",
        description="Create a throw-away CA (ca.pem, ca.key) and a SuperLink certificate "
        "(server.pem, server.key) signed by it, for trying TLS. Private keys are 0600.",
    )
    certs.add_argument("dir", help="output directory")
    certs.add_argument(
        "--host",
        action="append",
        help="a name or IP address SuperNodes use to reach the SuperLink (repeatable); "
        "127.0.0.1 and localhost are always added: the SuperLink's own SuperExec connects "
        "to it on 127.0.0.1 when it listens on 0.0.0.0",
    )
    certs.add_argument("--days", type=int, default=30, help="validity (default 30)")
    certs.set_defaults(func=cmd_certs)

    node_key = subparsers.add_parser(
        "node-key",
        help="create SuperNode authentication key pairs",
        description="Create an EC P-384 key pair per NAME in OpenSSH format: NAME (private, "
        "0600, for flower-supernode --auth-supernode-private-key) and NAME.pub (for "
        "flwr supernode register).",
    )
    node_key.add_argument("dir", help="output directory")
    node_key.add_argument("names", nargs="+", metavar="NAME", help="e.g. hospital-a")
    node_key.set_defaults(func=cmd_node_key)

    federation = subparsers.add_parser("federation", help="Flower Deployment Engine helpers")
    fed_sub = federation.add_subparsers(dest="federation_command", required=True)
    local = fed_sub.add_parser(
        "local",
        help="run a job on a local multi-process federation (TLS + node authentication)",
        description=FEDERATION_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    local.add_argument("--config", metavar="FILE", help="TOML file of configuration keys")
    local.add_argument("--work-dir", metavar="DIR", help="default runs/federation-<time>")
    local.add_argument(
        "--node-data",
        action="append",
        metavar="DATA[,TEST]",
        help="a node's private training file and optional held-out file (repeat per node)",
    )
    local.add_argument("--timeout", type=float, default=0, help="seconds (default: none)")
    local.add_argument("--app", metavar="DIR", help="the Flower app (default: this checkout)")
    local.add_argument("overrides", nargs="*", metavar="key=value", help="configuration overrides")
    local.set_defaults(func=cmd_federation_local)
