import random

from fedpit.lm.generation import Generation
from fedpit.model.prompts import PromptFormat
from fedpit.synth.pipeline import SynthSettings, generate_synthetic
from fedpit.synth.responses import trim_to_sentence
from tests.helpers import examples


def test_trim_to_sentence_keeps_whole_sentences_only():
    assert trim_to_sentence("Gout is arthritis. It hurts a lot. It is caus") == (
        "Gout is arthritis. It hurts a lot."
    )
    assert trim_to_sentence("no sentence end here") is None
    assert trim_to_sentence('He said "stop." Then') == 'He said "stop."'


def _fake(unfinished_text):
    def generate(prompts, spec):
        if spec.stop == ("\n",):  # instruction phase
            return [Generation(f"lupus variant {i} ?", True) for i, _ in enumerate(prompts)]
        return [Generation(unfinished_text, False) for _ in prompts]

    return generate


def test_unfinished_responses_are_trimmed_or_retried():
    fmt = PromptFormat("chat", "<|im_end|>", lambda msgs, gen: str(msgs))
    long = (
        "Lupus is an autoimmune disease that affects the skin and joints of many people. "
        "Treatment includes several medicines and regular follow up with a doctor who"
    )
    on = generate_synthetic(
        examples(4), _fake(long), fmt, SynthSettings(attempts=3), random.Random(0)
    )
    assert len(on.examples) == 3
    assert all(e.output.endswith("people.") for e in on.examples)
    off = generate_synthetic(
        examples(4),
        _fake(long),
        fmt,
        SynthSettings(attempts=3, trim_unfinished=False),
        random.Random(0),
    )
    assert not off.examples and off.rejected["format"] == 3
