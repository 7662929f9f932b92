"""The ClientApp boundary: base-model check before any work, audit line per upload."""

import dataclasses
import json
import struct
import time

import pytest
import torch
from flwr.app import Context, Message, Metadata, RecordDict
from flwr.common import MessageType
from flwr.common.serde import message_to_proto
from safetensors.torch import load_file

from fedpit.adapters import PUBLIC, get_state, initial_state
from fedpit.errors import BaseModelMismatchError
from fedpit.fed import client as client_mod
from fedpit.fed import client_app
from fedpit.fed.records import (
    ARRAYS,
    CONFIG,
    FINGERPRINT,
    METRICS,
    config_to_record,
    record_to_state,
    state_to_record,
)
from fedpit.lm.fingerprint import tensors_sha256
from fedpit.lm.runtime import get_runtime
from fedpit.privacy.allowlist import ALLOWED_COUNTERS, NUM_EXAMPLES
from fedpit.privacy.audit import AUDIT_FILE
from fedpit.synth.pipeline import SynthResult
from tests.helpers import examples
from tests.test_client import SYNTHETIC, tiny_cfg


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


def test_the_train_reply_carries_no_private_text_ifs_or_loss(tiny_model_dir, tmp_path, monkeypatch):
    """The reply of the ClientApp's train handler, as serialised for the wire."""
    private = examples(4)
    data = tmp_path / "private.jsonl"
    data.write_text(
        "".join(
            json.dumps({"instruction": e.instruction, "input": "", "output": e.output}) + "\n"
            for e in private
        )
    )
    monkeypatch.setattr(
        client_mod,
        "synthesize",
        lambda rt, cfg, info, private, adapter: SynthResult(list(SYNTHETIC), attempts=5),
    )
    state_dir = tmp_path / "state"
    node_config = {"data-path": str(data), "state-dir": str(state_dir)}  # the default policy
    context = Context(4242, 7, node_config, RecordDict(), {})
    keys = {"fed.beta": 0.3, "model.name": str(tiny_model_dir), "synth.selection": "ifs"}
    cfg = tiny_cfg(method="fedpit", **keys)  # IFS scored: private numbers to look for
    msg = message(cfg, get_runtime(cfg.model, cfg.lora).fingerprint)
    reply = client_app.train(msg, context)

    assert set(reply.content) == {ARRAYS, METRICS}
    assert not reply.content.config_records and len(reply.content.array_records) == 1
    counters = dict(reply.content[METRICS])
    assert set(counters) == ALLOWED_COUNTERS
    assert counters[NUM_EXAMPLES] == 4 and counters["synth-selected"] == 2
    sent = record_to_state(reply.content[ARRAYS])
    kept = load_file(str(run_dir(state_dir) / "adapters" / "upload" / "adapter_model.safetensors"))
    assert set(sent) == set(kept) and all(torch.equal(sent[k], kept[k]) for k in kept)
    # What the client knows and keeps: the texts, each candidate's IFS, its losses.
    rows = [json.loads(x) for x in (run_dir(state_dir) / "synthetic" / "round-001.jsonl").open()]
    assert [r["output"] for r in rows] == [c.output for c in SYNTHETIC]
    (log,) = [json.loads(x) for x in (run_dir(state_dir) / "metrics.jsonl").open()]
    private_numbers = [r["ifs"] for r in rows] + [log["loss-local"], log["loss-public"]]
    assert None not in private_numbers
    # None of it is anywhere in the message as it goes on the wire.
    wire = message_to_proto(reply).SerializeToString()
    for text in [t for e in private + SYNTHETIC for t in (e.instruction, e.output)]:
        assert text.encode() not in wire and text[:16].encode() not in wire, text
    for value in private_numbers:
        assert struct.pack("<d", value) not in wire, value
        assert repr(value)[:7].encode() not in wire, value
    names = [*reply.content, *counters, *sent]
    assert not [n for n in names if "ifs" in n.lower() or "loss" in n.lower()]


def run_dir(state_dir):
    """A deployed node's private state for the run (run id 4242)."""
    return state_dir / "runs" / "4242"
