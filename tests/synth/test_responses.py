from __future__ import annotations

from fedpit.data.example import Example
from fedpit.model.prompts import PromptFormat
from fedpit.synth.responses import response_prompt, response_spec, truncate_words


def render(messages: list[dict[str, str]], add_generation_prompt: bool) -> str:
    text = "".join(f"<{m['role']}>{m['content']}</>" for m in messages)
    return text + ("<assistant>" if add_generation_prompt else "")


CHAT = PromptFormat("chat", "</>", render)
ALPACA = PromptFormat("alpaca", "<eos>")
DEMOS = [
    Example("p0", "What causes Gout ?", "", "Uric acid. It builds up. In joints."),
    Example("p1", "Is Asthma inherited ?", "Family history", "Often it runs in families."),
]


def test_truncate_words_cuts_at_the_last_sentence_end() -> None:
    text = "One two three. Four five six! Seven eight nine ten."
    assert truncate_words(text, 7) == "One two three. Four five six!"
    assert truncate_words(text, 3) == "One two three."
    assert truncate_words(text, 100) == text
    assert truncate_words("Key Points\n- First point. - Second point here.", 5) == (
        "Key Points\n- First point."
    )


def test_truncate_words_without_sentence_end_cuts_at_a_word() -> None:
    assert truncate_words("alpha beta gamma delta", 2) == "alpha beta"
    assert truncate_words("e.g. this is Dr. Who", 3) == "e.g."  # abbreviations count as ends


def test_chat_prompt_has_demos_as_prior_turns() -> None:
    prompt = response_prompt("What are the symptoms of Gout ?", DEMOS, CHAT, demo_words=3)
    assert prompt == (
        "<user>What causes Gout ?</><assistant>Uric acid.</>"
        "<user>Is Asthma inherited ?\n\nFamily history</><assistant>Often it runs</>"
        "<user>What are the symptoms of Gout ?</><assistant>"
    )


def test_alpaca_prompt_has_demo_blocks_then_open_response() -> None:
    prompt = response_prompt("What are the symptoms of Gout ?", DEMOS, ALPACA, demo_words=80)
    assert prompt.startswith("Below is an instruction")
    assert prompt.count("Below is an instruction") == 1
    assert prompt.count("### Instruction:\n") == 3
    assert "### Input:\nFamily history\n\n### Response:\nOften it runs in families.\n\n" in prompt
    assert prompt.endswith("### Instruction:\nWhat are the symptoms of Gout ?\n\n### Response:\n")


def test_response_spec_per_format() -> None:
    chat, alpaca = response_spec(CHAT), response_spec(ALPACA, 100, 1.1)
    assert (chat.max_new_tokens, chat.repetition_penalty, chat.stop) == (160, 1.2, ())
    assert (alpaca.max_new_tokens, alpaca.repetition_penalty, alpaca.stop) == (100, 1.1, ("###",))
    assert not chat.do_sample
