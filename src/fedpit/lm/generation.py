"""The text-generation interface shared by synthesis, evaluation and attacks.

Components take a :data:`GenerateFn` so they can be unit-tested with a fake and
integration-tested with a real model (see :mod:`fedpit.lm.batched_generation` for the real one).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class GenerationSpec:
    """How to continue a batch of prompts.

    Attributes:
        max_new_tokens: Upper bound on generated tokens per prompt.
        stop: Strings that end a continuation; the returned text is cut before the
            first one. The model's end-of-sequence token always stops.
        repetition_penalty: 1.0 disables it.
        do_sample: Greedy decoding when False (the default everywhere in FedPIT).
        temperature: Sampling temperature (only with ``do_sample``).
        top_p: Nucleus sampling: sample from the smallest set of tokens whose
            probability reaches ``top_p`` (only with ``do_sample``; 1.0 = the whole
            vocabulary).
    """

    max_new_tokens: int
    stop: tuple[str, ...] = ()
    repetition_penalty: float = 1.0
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0


@dataclass(frozen=True)
class Generation:
    """One continuation of a prompt.

    Attributes:
        text: The continuation, without the prompt and without the stop string.
        finished: True when it ended on a stop string or end-of-sequence; False when
            ``max_new_tokens`` cut it.
    """

    text: str
    finished: bool


GenerateFn = Callable[[Sequence[str], GenerationSpec], list[Generation]]
"""Continue each prompt; returns one :class:`Generation` per prompt, in order."""
