import pytest

from fedpit.config.load import from_flat
from fedpit.errors import ConfigError
from fedpit.eval.attack.targets import resolve_target
from fedpit.runs.rundir import create_run_dir


def test_targets_map_to_the_runs_adapter_directories(tmp_path):
    rd = create_run_dir(from_flat({"run-dir": str(tmp_path / "run")}))
    for path in (
        rd.final_adapter,
        rd.round_adapter(2),
        rd.client_dir(1) / "adapters" / "local",
        rd.client_dir(1) / "adapters" / "upload",
    ):
        path.mkdir(parents=True)
        (path / "adapter_model.safetensors").write_bytes(b"x")
    assert resolve_target(rd.root, "base").adapter_dir is None
    assert resolve_target(rd.root, "global").adapter_dir == rd.final_adapter
    assert resolve_target(rd.root, "round:2").adapter_dir == rd.round_adapter(2)
    assert resolve_target(rd.root, "client:1").adapter_dir.name == "local"
    assert resolve_target(rd.root, "upload:1").adapter_dir.name == "upload"
    with pytest.raises(ConfigError, match="no adapter"):
        resolve_target(rd.root, "upload:0")
    with pytest.raises(ConfigError, match="expected round:<integer>"):
        resolve_target(rd.root, "round:x")
    with pytest.raises(ConfigError, match="allowed: base, global"):
        resolve_target(rd.root, "server")


def test_final_targets_are_global_else_each_clients_own_model(tmp_path):
    from fedpit.eval.attack.targets import default_targets, final_targets

    def adapter(path):
        path.mkdir(parents=True)
        (path / "adapter_model.safetensors").write_bytes(b"")

    assert final_targets(tmp_path) == ["global"]  # nothing yet: resolving it will say so
    for cid in (1, 0, 10):
        adapter(tmp_path / "clients" / str(cid) / "adapters" / "model")
    (tmp_path / "clients" / "2" / "adapters" / "local").mkdir(parents=True)  # not a model
    assert final_targets(tmp_path) == ["client:0", "client:1", "client:10"]
    adapter(tmp_path / "global")
    assert default_targets(tmp_path) == ["base", "global"]
