"""One job on a loopback federation: from a run configuration to its summary.

:func:`run_local_federation` reads top to bottom: check the configuration and the
nodes' files, write certificates, bring the federation up, submit, read ``summary.json``.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

from fedpit.deploy.credentials import make_test_certificates
from fedpit.deploy.errors import DeployError
from fedpit.deploy.federation import LocalFederation, RunResult
from fedpit.deploy.nodes import NodeSpec, check_not_packed, find_app_dir, split_to_nodes
from fedpit.privacy.policy import policy_for, write_policy


def run_config_for(cfg: Any) -> dict[str, Any]:
    """The Flower run configuration of ``cfg``: the keys that differ from the defaults."""
    from fedpit.config.load import default_flat, to_flat

    defaults = default_flat()
    return {k: v for k, v in to_flat(cfg).items() if v != defaults.get(k) or k == "run-dir"}


def default_work_dir() -> Path:
    """``runs/federation-<timestamp>`` under the current directory."""
    return Path("runs") / f"federation-{time.strftime('%Y%m%d-%H%M%S')}"


def run_local_federation(
    cfg: Any,
    work_dir: str | Path | None = None,
    nodes: Sequence[NodeSpec] | None = None,
    app_dir: str | Path | None = None,
    timeout: float | None = None,
    startup_timeout: float = 180.0,
    echo: IO[str] | None = sys.stdout,
) -> tuple[RunResult, dict[str, Any]]:
    """Run ``cfg`` on a loopback deployment: SuperLink, one SuperNode per client, ``flwr run``.

    Args:
        cfg: The run's :class:`~fedpit.config.schema.RunConfig` (a federated method).
        work_dir: Where certificates, keys, node directories, logs and (unless
            ``run-dir`` is set) the server's run directory ``server/`` go.
        nodes: The nodes' data; by default each client's share of the run's data split
            is written to ``work_dir/nodes/<i>/``.
        app_dir: The Flower app directory (default: this FedPIT checkout).
        timeout: Seconds the run may take (``None``: no limit).
        startup_timeout: Seconds the SuperLink and SuperNodes may take to come up.
        echo: Where progress and the streamed run log go.

    Returns:
        The run's final status and its ``summary.json``.

    Raises:
        DeployError: A process did not start, a node was refused, or the run failed.
    """
    import dataclasses

    if not cfg.is_federated:
        raise DeployError(
            f"method {cfg.method!r} has no server; a federation needs a federated one"
        )
    work = Path(work_dir or default_work_dir()).expanduser().resolve()
    run_dir = Path(cfg.run_dir).expanduser().resolve() if cfg.run_dir else work / "server"
    if run_dir.exists() and any(run_dir.iterdir()):
        raise DeployError(f"run-dir {run_dir} exists and is not empty; choose another")
    cfg = dataclasses.replace(cfg, run_dir=str(run_dir))
    app = Path(app_dir).expanduser().resolve() if app_dir else find_app_dir()
    check_not_packed(work, app)
    work.mkdir(parents=True, exist_ok=True)
    nodes = list(nodes) if nodes is not None else split_to_nodes(cfg, work / "nodes")
    # One person plays every node here: each node gets a policy allowing exactly this
    # run's configuration (a real node operator writes their own; see fedpit.privacy.policy).
    nodes = [
        n
        if n.policy_path is not None
        else dataclasses.replace(
            n,
            policy_path=write_policy(
                work / "nodes" / str(n.client_id) / "policy.toml", policy_for(cfg)
            ),
        )
        for n in nodes
    ]
    for node in nodes:
        for path in filter(None, (node.data_path, node.test_path)):
            check_not_packed(path, app)
    if len(nodes) != cfg.data.num_clients:
        raise DeployError(
            f"{len(nodes)} nodes but data.num-clients = {cfg.data.num_clients}; make them equal"
        )
    if cfg.eval.client_test_size > 0 and all(n.test_path is None for n in nodes):
        raise DeployError(
            "federated evaluation is on (eval.client-test-size > 0) but no node has a "
            "held-out file; give nodes test files or set eval.client-test-size=0"
        )
    tls = make_test_certificates(work / "tls")
    with LocalFederation(work, app, echo=echo) as fed:
        fed.up(nodes, tls, startup_timeout)
        result = fed.submit(run_config_for(cfg), stream=echo, timeout=timeout)
        fed.say(f"run {result.run_id}: {result.status}")
    if not result.ok:
        raise DeployError(
            f"run {result.run_id} ended {result.status}: {result.details or 'no details'}; "
            f"logs in {work / 'logs'}"
        )
    summary_path = run_dir / "summary.json"
    if not summary_path.exists():
        raise DeployError(f"run {result.run_id} completed but wrote no {summary_path}")
    return result, json.loads(summary_path.read_text())
