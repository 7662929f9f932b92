"""Flower ClientApp: Message in → FedPIT client round → Message out.

In simulation a node is identified by ``partition-id`` and keeps its private record in
``RUN_DIR/clients/<id>``; in deployment the node config names its own ``data-path``
and ``state-dir``. Only the adapter upload and allowlisted counters are sent back.

Before any work the node checks the round's configuration against its own privacy
policy (:mod:`fedpit.privacy.policy`) and its base model's fingerprint against the server's, and
refuses the round when either fails; every upload is appended to the node's audit log
with the policy in force. A deployed node keeps each run's private state in its own
directory (``<state-dir>/runs/<run id>``) and one audit log for all runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, cast

from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from fedpit.adapters import PUBLIC, set_state
from fedpit.config.schema import RunConfig
from fedpit.data.example import Example
from fedpit.data.load import load_examples
from fedpit.data.prepare import client_examples, client_test_examples
from fedpit.errors import ConfigError
from fedpit.fed.client import RoundInfo, run_client_round
from fedpit.fed.records import (
    ARRAYS,
    CFG_PREFIX,
    CONFIG,
    METRICS,
    NUM_ROUNDS,
    RUN_DIR,
    record_to_config,
    record_to_fingerprint,
    record_to_state,
    state_to_record,
)
from fedpit.lm.fingerprint import check_base
from fedpit.lm.runtime import Runtime, get_runtime, set_threads
from fedpit.lm.scoring import mean_loss
from fedpit.privacy.allowlist import EVAL_COUNTERS, EVAL_LOSS, NUM_EXAMPLES, check_counters
from fedpit.privacy.audit import append_audit, upload_record
from fedpit.privacy.policy import NodePolicy, check_evaluate, check_train, policy_from_node_config

if TYPE_CHECKING:
    from flwr.app.typing import MetricRecordValues

app = ClientApp()


def deployed(context: Context) -> bool:
    """Whether this node brings its own data (deployment), rather than a simulated one."""
    return "data-path" in context.node_config


def node_policy(context: Context) -> NodePolicy | None:
    """The policy this node enforces (None: a simulated node given none)."""
    return policy_from_node_config(context.node_config, deployed(context))


def node_root(context: Context) -> Path:
    """A deployed node's state directory (its audit log lives here)."""
    return Path(str(context.node_config.get("state-dir", Path.home() / ".fedpit" / "node")))


def node_data(
    cfg: RunConfig, context: Context, run_dir: str, held_out: bool = False
) -> tuple[int, list[Example], Path]:
    """This node's id, private examples (training, or held-out) and this run's state dir."""
    node = context.node_config
    if deployed(context):  # the node brings its own data; its state is kept per run
        client_id = int(node.get("client-id", context.node_id))
        key = "test-path" if held_out else "data-path"
        examples = load_examples(str(node[key])) if key in node else []
        return client_id, examples, node_root(context) / "runs" / str(context.run_id)
    partition_id = int(node["partition-id"])
    if partition_id >= cfg.data.num_clients:
        raise ConfigError(
            f"SuperNode partition-id {partition_id} but data.num-clients = "
            f"{cfg.data.num_clients}: run as many SuperNodes as clients"
        )
    if held_out:
        examples = client_test_examples(cfg, partition_id)
    else:
        examples = client_examples(cfg, partition_id)
    return partition_id, examples, Path(run_dir) / "clients" / str(partition_id)


def checked_runtime(config: ConfigRecord, cfg: RunConfig) -> Runtime:
    """This process's runtime, after checking its base against the server's fingerprint.

    Raises:
        BaseModelMismatchError: The base differs (Flower sends the message back to the
            server as this node's error reply; the server logs it).
    """
    set_threads(cfg.train.threads or cfg.fed.cpus_per_client)
    rt = get_runtime(cfg.model, cfg.lora)
    check_base(record_to_fingerprint(config), rt.fingerprint, cfg.model.name)
    return rt


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Run one client round of the configured method and reply with the upload."""
    # The server's message: CONFIG is a ConfigRecord, ARRAYS an ArrayRecord.
    config = cast(ConfigRecord, msg.content[CONFIG])
    cfg = record_to_config(config)
    policy = node_policy(context)
    if policy is not None:
        check_train(cfg, policy)  # before any work: nothing is loaded, trained or sent
    rt = checked_runtime(config, cfg)
    client_id, private, state_dir = node_data(cfg, context, str(config[CFG_PREFIX + RUN_DIR]))
    # Both are ints, set by Flower (server-round) and config_to_record (NUM_ROUNDS).
    server_round, num_rounds = cast(int, config["server-round"]), cast(int, config[NUM_ROUNDS])
    info = RoundInfo(client_id, int(server_round), int(num_rounds), cfg.seed)
    update = run_client_round(
        rt, cfg, info, private, record_to_state(cast(ArrayRecord, msg.content[ARRAYS])), state_dir
    )
    check_counters(update.counters)
    arrays = state_to_record(update.state)
    audit = upload_record(
        arrays=record_to_state(arrays),  # hashed as sent
        counters=update.counters,
        server_round=info.server_round,
        method=cfg.method,
        base_fingerprint=rt.fingerprint.digest,
        run_id=context.run_id,
        policy=policy.audit() if policy is not None else None,
    )
    # Before sending: an unlogged upload never leaves. One log per node, across runs.
    append_audit(node_root(context) if deployed(context) else state_dir, audit)
    # Cast: MetricRecord only reads the dict; dict's invariance rejects dict[str, float].
    counters = cast("dict[str, MetricRecordValues]", update.counters)
    reply = RecordDict({ARRAYS: arrays, METRICS: MetricRecord(counters)})
    return Message(reply, reply_to=msg)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    """Federated evaluation: the global model's loss on this node's private held-out set.

    Only the aggregate (mean response NLL and the number of examples) leaves the node.
    """
    config = cast(ConfigRecord, msg.content[CONFIG])  # the server's: see train
    cfg = record_to_config(config)
    most = check_evaluate(cfg, node_policy(context))  # before any work
    rt = checked_runtime(config, cfg)
    _, held_out, _ = node_data(cfg, context, str(config[CFG_PREFIX + RUN_DIR]), held_out=True)
    held_out = held_out[:most] if most else held_out
    set_state(rt.model, PUBLIC, record_to_state(cast(ArrayRecord, msg.content[ARRAYS])))
    rt.model.set_adapter(PUBLIC)
    loss = mean_loss(rt, held_out, cfg.model.max_length)
    metrics: dict[str, MetricRecordValues] = {
        NUM_EXAMPLES: float(len(held_out)),
        EVAL_LOSS: loss if held_out else 0.0,
    }
    check_counters(metrics, EVAL_COUNTERS)
    return Message(RecordDict({METRICS: MetricRecord(metrics)}), reply_to=msg)
