"""A node's own privacy policy: what the coordinator may make this node do.

A SuperNode parses its run configuration from the server's message. Without a policy it
would obey whatever it is sent — ``method=fedavg`` or ``fed.beta=1`` hands the server the
raw private adapter W_l. The node operator therefore writes a policy, and the node checks
every round's configuration against it *before any work*: a violating round is refused
with an error naming the key, the server's value and the node's limit; nothing is
trained, generated, evaluated or uploaded for it.

Where the policy comes from (SuperNode node config, ``flower-supernode --node-config``):

- ``policy-file='/path/policy.toml'``: a TOML file with a ``[policy]`` table (keys below);
- ``policy-<key>=value``: single keys, overriding the file's (e.g. ``policy-max-beta=0.25``).

Keys (defaults are the safe policy a deployed node applies when it is given none):

========================  ==============================================  ===============
key                       meaning                                         default
========================  ==============================================  ===============
``methods``               methods the node runs                           fedpit,
                                                                          fedpit-v1,
                                                                          fedavg-damped
``max-beta``              largest β of a β-mixed upload                   0.5
``require-dp``            refuse rounds without client-level DP           false
``min-noise-multiplier``  smallest DP noise multiplier (with DP)          0
``max-clip-norm``         largest DP clip norm (0 = no limit)             0
``max-copied-span``       the verbatim-span guard must be on, blocking    8
                          spans of at most this many words (0 = no
                          requirement)
``federated-eval``        allow evaluation on the node's held-out data    false
``max-eval-examples``     held-out examples evaluated at most (0 = all)   0
``max-rounds``            largest ``fed.rounds`` of a run (0 = no limit)  0
========================  ==============================================  ===============

The safe default refuses every configuration that uploads the private adapter unmixed
(``fedavg``, ``fedprox``, ``fedadam``, ``fedmit``, β = 1); an operator who wants to take
part in those baselines lists them in ``methods`` and raises ``max-beta``. Simulation
(``fedpit run``) applies no policy unless a node config names one: there one person holds
every role.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedpit.config.schema import METHODS, RunConfig
from fedpit.errors import ConfigError, FedPITError

POLICY_FILE = "policy-file"
PREFIX = "policy-"
MIXING_BETA = ("fedpit", "fedavg-damped")
"""Methods whose upload holds β·W_l (fedpit-v1 uploads W_s only, whatever β)."""


class PolicyError(FedPITError):
    """The server asked this node for a round its policy forbids."""


@dataclass(frozen=True)
class NodePolicy:
    """What this node accepts (see the module docstring for each key)."""

    methods: tuple[str, ...] = ("fedpit", "fedpit-v1", "fedavg-damped")
    max_beta: float = 0.5
    require_dp: bool = False
    min_noise_multiplier: float = 0.0
    max_clip_norm: float = 0.0
    max_copied_span: int = 8
    federated_eval: bool = False
    max_eval_examples: int = 0
    max_rounds: int = 0
    source: str = "the default policy"

    def __post_init__(self) -> None:
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown:
            raise ConfigError(
                f"{self.source}: policy methods has {unknown[0]!r}; allowed: {', '.join(METHODS)}"
            )
        if not 0 <= self.max_beta <= 1:
            raise ConfigError(f"{self.source}: policy max-beta = {self.max_beta}; allowed: [0, 1]")
        for key in (
            "min_noise_multiplier",
            "max_clip_norm",
            "max_copied_span",
            "max_eval_examples",
            "max_rounds",
        ):
            if getattr(self, key) < 0:
                raise ConfigError(f"{self.source}: policy {key.replace('_', '-')} must be ≥ 0")

    def values(self) -> dict[str, Any]:
        """The policy's keys and values (what the audit log records)."""
        return {
            f.name.replace("_", "-"): (
                list(getattr(self, f.name)) if f.name == "methods" else getattr(self, f.name)
            )
            for f in dataclasses.fields(self)
            if f.name != "source"
        }

    @property
    def digest(self) -> str:
        """sha256 of the policy's values (canonical JSON)."""
        return hashlib.sha256(json.dumps(self.values(), sort_keys=True).encode()).hexdigest()

    def audit(self) -> dict[str, Any]:
        """The audit log's record of the policy in force."""
        return {"sha256": self.digest, "source": self.source, "values": self.values()}


_FIELDS = {
    f.name.replace("_", "-"): f for f in dataclasses.fields(NodePolicy) if f.name != "source"
}


def _coerce(key: str, raw: Any, default: Any, where: str) -> Any:
    try:
        if isinstance(default, tuple):
            items = raw if isinstance(raw, list) else str(raw).split(",")
            return tuple(str(m).strip() for m in items if str(m).strip())
        if isinstance(default, bool):
            if isinstance(raw, bool):
                return raw
            if str(raw).lower() in ("true", "false"):
                return str(raw).lower() == "true"
            raise ValueError
        if isinstance(default, int):
            if isinstance(raw, bool) or float(raw) != int(float(raw)):
                raise ValueError
            return int(float(raw))
        return float(raw)
    except (TypeError, ValueError):
        kind = type(default).__name__ if not isinstance(default, tuple) else "a list of methods"
        raise ConfigError(f"{where}: policy {key} = {raw!r}; expected {kind}") from None


def _from_table(table: Mapping[str, Any], where: str, base: NodePolicy) -> NodePolicy:
    changes = {}
    for key, raw in table.items():
        if key not in _FIELDS:
            raise ConfigError(
                f"{where}: unknown policy key {key!r}; allowed: {', '.join(sorted(_FIELDS))}"
            )
        name = _FIELDS[key].name
        changes[name] = _coerce(key, raw, getattr(base, name), where)
    return dataclasses.replace(base, source=where, **changes)


def policy_from_node_config(node_config: Mapping[str, Any], deployed: bool) -> NodePolicy | None:
    """The policy a node's config sets; the safe default for a deployed node without one.

    Args:
        node_config: The SuperNode's node config.
        deployed: Whether the node brings its own data (deployment), not a simulation.

    Returns:
        The policy, or None for a simulated node whose config names none.

    Raises:
        ConfigError: An unreadable policy file, an unknown key or a bad value.
    """
    singles = {k[len(PREFIX) :]: v for k, v in node_config.items() if k.startswith(PREFIX)}
    singles.pop("file", None)
    if POLICY_FILE not in node_config and not singles:
        return NodePolicy() if deployed else None
    policy = NodePolicy()
    if POLICY_FILE in node_config:
        path = Path(str(node_config[POLICY_FILE])).expanduser()
        try:
            doc = tomllib.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"node policy file {path} does not exist") from None
        except tomllib.TOMLDecodeError as err:
            raise ConfigError(f"node policy file {path}: invalid TOML: {err}") from None
        table = doc.get("policy")
        if not isinstance(table, dict):
            raise ConfigError(f"node policy file {path}: no [policy] table")
        policy = _from_table(table, str(path), policy)
    if singles:
        where = f"{policy.source} + node config" if POLICY_FILE in node_config else "node config"
        policy = _from_table(singles, where, policy)
    return policy


def policy_for(cfg: RunConfig) -> NodePolicy:
    """The narrowest policy that allows exactly this run's configuration.

    For a federation one person runs on one machine (``fedpit deploy local``), where the
    operator of every node is the one choosing the configuration.
    """
    return NodePolicy(
        methods=(cfg.method,),
        max_beta=cfg.fed.beta if cfg.method in MIXING_BETA else NodePolicy.max_beta,
        max_copied_span=cfg.synth.max_copied_span if cfg.uses_synthetic else 0,
        federated_eval=cfg.eval.client_test_size > 0,
        max_rounds=cfg.fed.rounds,
        source="policy_for",
    )


def write_policy(path: Path, policy: NodePolicy) -> Path:
    """Write ``policy`` as a node policy file (a ``[policy]`` table)."""

    def toml(value: Any) -> str:
        if isinstance(value, bool):
            return str(value).lower()
        if isinstance(value, list):
            return "[" + ", ".join(json.dumps(v) for v in value) + "]"
        return json.dumps(value)

    lines = ["[policy]", *(f"{k} = {toml(v)}" for k, v in policy.values().items())]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def _refuse(key: str, value: Any, limit: str, policy: NodePolicy) -> PolicyError:
    return PolicyError(
        f"node policy refuses the round: the server asks for {key} = {value!r}, this node "
        f"allows {limit} ({policy.source})"
    )


def check_train(cfg: RunConfig, policy: NodePolicy) -> None:
    """Refuse a training round whose configuration the policy forbids.

    Raises:
        PolicyError: Naming the key, the server's value and the node's limit.
    """
    if cfg.attack.poison != "none":
        raise _refuse("attack.poison", cfg.attack.poison, "none (an experiment harness)", policy)
    if cfg.method not in policy.methods:
        raise _refuse("method", cfg.method, f"only {', '.join(policy.methods)}", policy)
    if cfg.method in MIXING_BETA and cfg.fed.beta > policy.max_beta:
        raise _refuse("fed.beta", cfg.fed.beta, f"at most {policy.max_beta:g}", policy)
    if policy.max_rounds and cfg.fed.rounds > policy.max_rounds:
        raise _refuse("fed.rounds", cfg.fed.rounds, f"at most {policy.max_rounds}", policy)
    if policy.require_dp:
        if not cfg.dp.enabled:
            raise _refuse("dp.mode", cfg.dp.mode, "only client-level DP (dp.mode ≠ off)", policy)
        if cfg.dp.noise_multiplier < policy.min_noise_multiplier:
            raise _refuse(
                "dp.noise-multiplier",
                cfg.dp.noise_multiplier,
                f"at least {policy.min_noise_multiplier:g}",
                policy,
            )
        if policy.max_clip_norm and cfg.dp.clip_norm > policy.max_clip_norm:
            raise _refuse(
                "dp.clip-norm", cfg.dp.clip_norm, f"at most {policy.max_clip_norm:g}", policy
            )
    if policy.max_copied_span and cfg.uses_synthetic:
        span = cfg.synth.max_copied_span
        if span == 0 or span > policy.max_copied_span:
            raise _refuse(
                "synth.max-copied-span",
                span,
                f"the span guard on at 1 to {policy.max_copied_span} words",
                policy,
            )


def check_evaluate(cfg: RunConfig, policy: NodePolicy | None) -> int:
    """Refuse federated evaluation the policy forbids; the most examples it may use.

    Without a policy (simulation), evaluation under DP is refused unless the run asks for
    it with ``eval.with-dp``: its reply would carry an un-noised private-data loss.

    Returns:
        How many held-out examples may be evaluated (0 = all).
    """
    if policy is None:
        if cfg.dp.enabled and not cfg.eval.with_dp:
            raise PolicyError(
                "federated evaluation under DP sends an un-noised loss on private data; "
                "the run must ask for it with eval.with-dp = true"
            )
        return 0
    if not policy.federated_eval:
        raise PolicyError(
            f"node policy refuses federated evaluation on its held-out data ({policy.source}: "
            "federated-eval = false)"
        )
    return policy.max_eval_examples
