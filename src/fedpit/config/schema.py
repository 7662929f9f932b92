"""Run configuration: typed, validated dataclasses built once from flat dotted keys.

Every key has one default, here. The same flat keys (``fed.beta``, ``model.name`` …) are
used by ``pyproject.toml`` ``[tool.flwr.app.config]`` (kept equal to these defaults by a
test), by ``flwr run --run-config`` and by ``fedpit run --config FILE key=value``.
Below this module, components take plain typed arguments.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from fedpit.errors import ConfigError

FEDERATED_METHODS = (
    "fedpit",
    "fedpit-v1",
    "fedavg",
    "fedavg-damped",
    "fedprox",
    "fedadam",
    "fedmit",
)
STANDALONE_METHODS = ("local", "local-selfgen", "centralized")
METHODS = FEDERATED_METHODS + STANDALONE_METHODS
PARTITIONS = ("natural", "iid", "dirichlet", "kmeans")
MIX_MODES = ("factors",)
AGGREGATIONS = ("mean", "trimmed-mean", "median", "krum", "multi-krum", "bulyan")
POISONS = ("none", "scale", "flip")
DP_MODES = ("off", "central-fixed", "client-fixed")
DP_METHODS = ("fedpit", "fedpit-v1", "fedavg", "fedavg-damped", "fedprox", "fedmit")
"""Methods whose server aggregates with FedAvg's maths, as Flower's DP accounting requires."""
BETA_METHODS = ("fedpit", "fedpit-v1", "fedavg-damped")
"""Methods whose upload depends on ``fed.beta``."""
TEMPLATES = ("auto", "alpaca", "chat")
"""``model.template``: ``auto`` picks ``chat`` when the tokenizer has a chat template."""
NOVELTY_CHECKS = ("rouge", "focus")
SELECTIONS = ("ifs", "random")
ON_EMPTY = ("damped", "skip")
BASE_DTYPES = ("auto", "float32", "bfloat16")
"""Dtypes of the frozen base while SynGen decodes or a client trains (``auto``: by CPU)."""
DEVICE_PATTERN = re.compile(r"auto|cpu|mps|cuda(:\d+)?")

Scalar = str | int | float | bool


@dataclass(frozen=True)
class SynthSettings:
    """SynGen settings (run-config section ``synth``); defaults measured with the default model.

    Attributes:
        attempts: Instruction prompts per round (candidates before filtering).
        keep: M, the candidates kept after IFS selection (the lowest scores).
        novelty: Instruction novelty check, ``focus`` (entity + question type) or
            ``rouge`` (the paper's ROUGE-L rule).
        novelty_threshold: ROUGE-L above which an instruction is not novel.
        copy_threshold: ROUGE-L to a local example above which a candidate is dropped.
        max_copied_span: A candidate sharing this many consecutive words with a private
            example is dropped (the verbatim-span guard; 0 = off).
        format_retries: Response generations per instruction before dropping it.
        instruction_demos: Local questions shown in the instruction prompt.
        response_demos: Local examples shown in the response prompt.
        shared_demos: Response prompts of one round that share one set of
            demonstrations (1: each draws its own, as the paper does). Prompts that
            share them share a prefix, whose keys and values the decoder computes once.
        demo_answer_words: Demonstration answers are cut to about this many words.
        max_instruction_tokens: New-token limit of the instruction phase.
        max_response_tokens: New-token limit of the response phase.
        repetition_penalty: Response phase only (answers loop without it).
        min_instruction_words: Fewest words in an instruction.
        min_response_words: Fewest words in a response.
        min_distinct_trigram_ratio: Responses below it count as degenerate.
        trim_unfinished: Salvage a response cut by ``max_response_tokens`` by trimming it
            to its last full sentence (False: count it as a format failure and retry).
        do_sample: Sample instead of greedy decoding (both phases).
        temperature: Sampling temperature (with ``do_sample`` only).
        top_p: Nucleus sampling threshold (with ``do_sample`` only; 1.0 = off).
        selection: How the M kept candidates are chosen: ``ifs`` (the paper's lowest
            IFS under the fresh local model) or ``random`` (a control of IFS).
        score_random: With ``selection = random``, still compute every candidate's IFS
            for the client's private log (a diagnostic that costs the scoring pass;
            False: the log records no score).
        ifs_same_tokens: Score L(y) on exactly the response tokens that L(y|x) scores
            (a response cut by ``model.max-length`` after its prompt is cut alike for
            L(y)); False scores L(y) on the whole response, which biases the ranking
            against long candidates.
        on_empty: What a FedPIT client uploads in a round where SynGen kept no
            candidate (W_s stays W_g): ``damped`` (β·W_l + (1−β)·W_g, as the mix then
            is) or ``skip`` (no upload: the client reports the round as failed).
        generation_dtype: The frozen base's dtype while SynGen decodes (``float32``;
            ``bfloat16``: faster on CPUs with bf16 instructions, the adapters stay in
            their own dtype; ``auto``: bfloat16 on a CPU with bf16 instructions, else the
            loaded dtype). Scoring (IFS) and training keep the loaded dtype.
        distill_top_k: 0 trains W_s on the sampled tokens; k > 0 trains it on the
            teacher's top-k token distributions over each kept response
            (soft-label context distillation; the teacher is the global model with the
            demonstrations the response was generated with in context).
    """

    attempts: int = 12
    keep: int = 8
    novelty: str = "focus"
    novelty_threshold: float = 0.7
    copy_threshold: float = 0.7
    max_copied_span: int = 8
    format_retries: int = 3
    instruction_demos: int = 8
    response_demos: int = 2
    shared_demos: int = 1
    demo_answer_words: int = 80
    max_instruction_tokens: int = 32
    max_response_tokens: int = 160
    repetition_penalty: float = 1.0
    min_instruction_words: int = 3
    min_response_words: int = 10
    min_distinct_trigram_ratio: float = 0.5
    trim_unfinished: bool = True
    do_sample: bool = True
    temperature: float = 1.0
    top_p: float = 1.0
    selection: str = "random"
    score_random: bool = False
    ifs_same_tokens: bool = True
    distill_top_k: int = 0
    generation_dtype: str = "auto"
    on_empty: str = "damped"

    def __post_init__(self) -> None:
        checks = [
            ("attempts", self.attempts >= 1, "an integer ≥ 1"),
            ("novelty", self.novelty in NOVELTY_CHECKS, ", ".join(NOVELTY_CHECKS)),
            ("novelty-threshold", 0 <= self.novelty_threshold <= 1, "[0, 1]"),
            ("copy-threshold", 0 <= self.copy_threshold <= 1, "[0, 1]"),
            ("max-copied-span", self.max_copied_span >= 0, "an integer ≥ 0 (0 = off)"),
            ("format-retries", self.format_retries >= 1, "an integer ≥ 1"),
            ("instruction-demos", self.instruction_demos >= 1, "an integer ≥ 1"),
            ("response-demos", self.response_demos >= 0, "an integer ≥ 0"),
            ("shared-demos", self.shared_demos >= 1, "an integer ≥ 1 (1 = not shared)"),
            ("demo-answer-words", self.demo_answer_words >= 1, "an integer ≥ 1"),
            (
                "max-instruction-tokens",
                self.max_instruction_tokens >= 1,
                "an integer ≥ 1",
            ),
            ("max-response-tokens", self.max_response_tokens >= 1, "an integer ≥ 1"),
            ("repetition-penalty", self.repetition_penalty > 0, "> 0"),
            (
                "min-distinct-trigram-ratio",
                0 <= self.min_distinct_trigram_ratio <= 1,
                "[0, 1]",
            ),
            ("temperature", self.temperature > 0, "> 0"),
            ("top-p", 0 < self.top_p <= 1, "(0, 1]"),
            ("selection", self.selection in SELECTIONS, ", ".join(SELECTIONS)),
            ("distill-top-k", self.distill_top_k >= 0, "an integer ≥ 0 (0 = hard labels)"),
            ("on-empty", self.on_empty in ON_EMPTY, ", ".join(ON_EMPTY)),
            (
                "generation-dtype",
                self.generation_dtype in BASE_DTYPES,
                ", ".join(BASE_DTYPES),
            ),
        ]
        for key, ok, allowed in checks:
            if not ok:
                value = getattr(self, key.replace("-", "_"))
                raise ConfigError(f"synth.{key} = {value!r} is invalid; allowed: {allowed}")


@dataclass(frozen=True)
class ModelConfig:
    """The frozen base model."""

    name: str = "smollm2"
    template: str = "auto"
    max_length: int = 256
    device: str = "auto"
    dtype: str = "float32"


@dataclass(frozen=True)
class DataConfig:
    """Which data, and how it is split into clients and a held-out test set."""

    name: str = "auto"
    seed: int = 0
    partition: str = "natural"
    partition_column: str = ""
    num_clients: int = 3
    examples_per_client: int = 16
    test_size: int = 32
    dirichlet_alpha: float = 1.0
    num_clusters: int = 100
    non_members_per_client: int = 0


@dataclass(frozen=True)
class LoraSettings:
    """LoRA adapter shape (Decision: alpha = 2·rank, dropout 0.05, q/v projections)."""

    rank: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: str = "q_proj,v_proj"

    @property
    def modules(self) -> list[str]:
        """Target module names as a list."""
        return [m.strip() for m in self.target_modules.split(",") if m.strip()]


@dataclass(frozen=True)
class TrainConfig:
    """Local supervised fine-tuning."""

    lr: float = 2e-3
    lr_min: float = 0.0
    batch_size: int = 8
    micro_batch_size: int = 4
    local_epochs: int = 1
    centralized_epochs: int = 10
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    threads: int = 0
    base_dtype: str = "auto"
    """The frozen base's dtype while an adapter trains: ``auto`` (bf16 where the CPU has
    bf16 instructions, else as loaded), ``float32`` (as loaded) or ``bfloat16`` (bf16
    matmuls under the fp32 adapter: ≈ 2× faster training on a CPU with bf16 instructions,
    emulated and slower elsewhere). The adapter, its gradients, the optimiser and the loss
    stay fp32."""
    public_lr: float = 0.0
    """Learning rate of W_s on the synthetic data (0 = ``lr``), with the same cosine decay."""
    public_epochs: int = 0
    """Epochs of W_s on the synthetic data per round (0 = ``local-epochs``)."""


@dataclass(frozen=True)
class FedConfig:
    """Federation: rounds, sampling, mixing and the server optimiser."""

    rounds: int = 2
    clients_per_round: int = 0
    beta: float = 0.5
    mix: str = "factors"
    proximal_mu: float = 0.01
    server_lr: float = 0.001
    server_tau: float = 1e-3
    cpus_per_client: int = 1
    gpus_per_client: float = 0.0
    parallel_clients: int = 0
    min_clients: int = 1
    round_timeout: float = 0.0
    aggregation: str = "mean"
    """``mean`` (FedAvg weighted by n_k), or a robust aggregator of Flower's: ``trimmed-mean``
    (``fed.trim-fraction`` cut at each end), ``median``, ``krum``, ``multi-krum``, ``bulyan``
    (these two assume at most ``fed.malicious-clients``)."""
    trim_fraction: float = 0.2
    malicious_clients: int = 1
    norm_bound: float = 0.0
    """Cap each update's distance from the global model at this multiple of the round's
    median distance (0 = off)."""


@dataclass(frozen=True)
class EvalConfig:
    """Evaluation during a run."""

    client_test_size: int = 8
    with_dp: bool = False
    """Ask for federated evaluation also when ``dp.mode`` is on (off by default: its reply
    carries an un-noised loss on the node's private data); nodes still apply their policy."""


@dataclass(frozen=True)
class AttackConfig:
    """Privacy auditing: canaries planted in one client's private data."""

    canaries: int = 0
    canary_client: int = 0
    poison: str = "none"
    """Robustness experiments in simulation: client ``attack.poison-client`` uploads its
    update ``scale``-d by ``attack.poison-factor`` or sign-``flip``-ped (a node refuses it)."""
    poison_client: int = 0
    poison_factor: float = 100.0


@dataclass(frozen=True)
class DPConfig:
    """Client-level differential privacy on the upload (see :mod:`fedpit.privacy.dp`)."""

    mode: str = "off"
    clip_norm: float = 1.0
    noise_multiplier: float = 1.0
    delta: float = 1e-5
    max_epsilon: float = 0.0

    @property
    def enabled(self) -> bool:
        """Whether uploads are clipped and the aggregate noised."""
        return self.mode != "off"


@dataclass(frozen=True)
class RunConfig:
    """Everything one run needs, parsed once from the flat keys."""

    method: str = "fedpit"
    seed: int = 0
    run_dir: str = ""
    arm: str = ""
    """A label naming the study arm a run belongs to (set by ``fedpit sweep``); it changes
    nothing in the run, and reports group runs by method, arm and β."""
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    lora: LoraSettings = field(default_factory=LoraSettings)
    train: TrainConfig = field(default_factory=TrainConfig)
    fed: FedConfig = field(default_factory=FedConfig)
    synth: SynthSettings = field(default_factory=SynthSettings)
    eval: EvalConfig = field(default_factory=EvalConfig)
    attack: AttackConfig = field(default_factory=AttackConfig)
    dp: DPConfig = field(default_factory=DPConfig)

    @property
    def uses_synthetic(self) -> bool:
        """Whether the method self-generates data."""
        return self.method in ("fedpit", "fedpit-v1", "fedmit", "local-selfgen")

    @property
    def is_federated(self) -> bool:
        """Whether the method runs under Flower."""
        return self.method in FEDERATED_METHODS
