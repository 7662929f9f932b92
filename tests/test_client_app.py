"""The ClientApp boundary: base-model check before any work, audit line per upload."""

import dataclasses
import json
import time

import pytest
from flwr.app import Context, Message, Metadata, RecordDict
from flwr.common import MessageType

from fedpit import client_app
from fedpit.adapters import PUBLIC, get_state, initial_state
from fedpit.audit import AUDIT_FILE
from fedpit.errors import BaseModelMismatchError
from fedpit.fingerprint import tensors_sha256
from fedpit.records import (
    ARRAYS,
    CONFIG,
    FINGERPRINT,
    METRICS,
    config_to_record,
    record_to_state,
    state_to_record,
)
from fedpit.runtime import get_runtime
from tests.helpers import examples
from tests.test_client import tiny_cfg


@pytest.fixture
def node(tiny_model_dir, tmp_path):
    """A deployment-style node (own data file and state dir) on the tiny model."""
    data = tmp_path / "private.jsonl"
    data.write_text(
        "".join(
            json.dumps({"instruction": e.instruction, "input": "", "output": e.output}) + "\n"
            for e in examples(4)
        )
    )
    cfg = tiny_cfg(method="fedavg", **{"model.name": str(tiny_model_dir)})
    context = Context(
        run_id=4242,
        node_id=7,
        node_config={
            "data-path": str(data),
            "state-dir": str(tmp_path / "state"),
            # The operator allows the FedAvg baseline explicitly (the default refuses it).
            "policy-methods": "fedavg",
            "policy-max-beta": 1.0,
            "policy-federated-eval": "true",
        },
        state=RecordDict(),
        run_config={},
    )
    return cfg, context, tmp_path / "state"


def message(cfg, fingerprint, server_round=1, kind=MessageType.TRAIN):
    rt = get_runtime(cfg.model, cfg.lora)
    config = config_to_record(cfg, "unused-run-dir", fingerprint)
    config["server-round"] = server_round
    arrays = state_to_record(initial_state(get_state(rt.model, PUBLIC), 0))
    content = RecordDict({ARRAYS: arrays, CONFIG: config})
    metadata = Metadata(4242, f"msg-{server_round}", 1, 7, "", "", time.time(), 3600, kind)
    return Message(content, metadata=metadata)


def test_a_node_with_another_base_refuses_before_any_work(node):
    cfg, context, state_dir = node
    rt = get_runtime(cfg.model, cfg.lora)
    server = dataclasses.replace(rt.fingerprint, weights="0" * 64)
    with pytest.raises(BaseModelMismatchError) as err:
        client_app.train(message(cfg, server), context)
    text = str(err.value)
    assert f"base model mismatch for {cfg.model.name!r}" in text
    assert "differs from the server's in its weights (weights: server 000000000000" in text
    assert "tokenizer" not in text.split(";")[0]
    assert not state_dir.exists()  # nothing trained, logged or saved
    # The same refusal through the ClientApp object Flower calls, and for evaluation.
    with pytest.raises(BaseModelMismatchError, match="in its weights"):
        client_app.app(message(cfg, server), context)
    with pytest.raises(BaseModelMismatchError, match="in its weights"):
        client_app.evaluate(message(cfg, server, kind=MessageType.EVALUATE), context)


def test_a_message_without_fingerprint_is_refused(node):
    cfg, context, state_dir = node
    msg = message(cfg, get_runtime(cfg.model, cfg.lora).fingerprint)
    config = msg.content[CONFIG]
    for key in [k for k in config if k.startswith(FINGERPRINT)]:
        del config[key]
    with pytest.raises(BaseModelMismatchError, match="sent no base-model fingerprint"):
        client_app.train(msg, context)
    assert not state_dir.exists()


def test_every_upload_is_audited_as_sent(node):
    cfg, context, state_dir = node
    fingerprint = get_runtime(cfg.model, cfg.lora).fingerprint
    replies = [client_app.train(message(cfg, fingerprint, r), context) for r in (1, 2)]
    lines = [json.loads(x) for x in (state_dir / AUDIT_FILE).read_text().splitlines()]
    assert [line["round"] for line in lines] == [1, 2]
    for line, reply in zip(lines, replies, strict=True):
        sent = record_to_state(reply.content[ARRAYS])
        assert line["sha256"] == tensors_sha256(sent)  # recomputed from the reply
        assert line["keys"] == len(sent) == sum(line["shapes"].values())
        assert line["numel"] == sum(t.numel() for t in sent.values())
        assert line["dtype"] == "float32"
        assert line["counters"] == dict(reply.content[METRICS])
        assert line["num_examples"] == 4
        assert (line["method"], line["run_id"]) == ("fedavg", 4242)
        assert line["base_fingerprint"] == fingerprint.digest
        assert line["time"].endswith("+00:00")
    assert lines[0]["sha256"] != lines[1]["sha256"]  # each round's own upload
