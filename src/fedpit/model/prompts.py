"""Prompt templates: Alpaca and the model's chat template, one interface for both.

A :class:`PromptFormat` turns an example into the text before its response (the prompt
``x``), the text that ends a response (EOS or end-of-turn), and the bare response header
used to score ``L(y)`` for the instruction-following score.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from fedpit.config.schema import TEMPLATES
from fedpit.data.example import Example
from fedpit.errors import ConfigError

if TYPE_CHECKING:
    from transformers.tokenization_utils_base import PreTrainedTokenizerBase

ALPACA = "alpaca"
CHAT = "chat"

ALPACA_RESPONSE_HEADER = "### Response:\n"
_ALPACA_INTRO = (
    "Below is an instruction that describes a task. "
    "Write a response that appropriately completes the request.\n\n"
)
_ALPACA_INTRO_WITH_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides "
    "further context. Write a response that appropriately completes the request.\n\n"
)

Message = dict[str, str]
ChatRenderer = Callable[[list[Message], bool], str]
"""Renders chat messages to text; the flag asks for the assistant generation prompt."""


def user_text(example: Example) -> str:
    """The user turn of an example in chat form: instruction, then input if any."""
    if example.input:
        return f"{example.instruction}\n\n{example.input}"
    return example.instruction


def alpaca_prompt(example: Example) -> str:
    """The Alpaca prompt of an example, up to and including the response header."""
    intro = _ALPACA_INTRO_WITH_INPUT if example.input else _ALPACA_INTRO
    text = f"{intro}### Instruction:\n{example.instruction}\n\n"
    if example.input:
        text += f"### Input:\n{example.input}\n\n"
    return text + ALPACA_RESPONSE_HEADER


@dataclass(frozen=True)
class PromptFormat:
    """How prompts and responses are laid out for one model.

    Attributes:
        kind: ``alpaca`` or ``chat``.
        end_text: Appended to every training response (the EOS or end-of-turn token).
        render_chat: The tokenizer's chat template (``chat`` only).
    """

    kind: str
    end_text: str
    render_chat: ChatRenderer | None = None

    def prompt(self, example: Example) -> str:
        """Everything the model sees before the response of ``example``."""
        if self.kind == ALPACA:
            return alpaca_prompt(example)
        return self.chat([{"role": "user", "content": user_text(example)}])

    def chat(self, messages: Sequence[Message]) -> str:
        """Render a conversation ending in an open assistant turn."""
        if self.render_chat is None:
            raise ConfigError("this prompt format has no chat template")
        return self.render_chat(list(messages), True)

    def response_header(self) -> str:
        """The bare header before a response: the context for scoring ``L(y)``.

        Decision (docs/decisions.md): no system prompt and no user turn, only the header.
        """
        if self.kind == ALPACA:
            return ALPACA_RESPONSE_HEADER
        probe = [{"role": "user", "content": "x"}]
        assert self.render_chat is not None
        with_header = self.render_chat(probe, True)
        without = self.render_chat(probe, False)
        if not with_header.startswith(without):
            raise ConfigError("cannot isolate the assistant header of this chat template")
        return with_header[len(without) :]


def chat_text(
    tokenizer: PreTrainedTokenizerBase, messages: list[Message], add_generation_prompt: bool
) -> str:
    """``messages`` rendered as text by the tokenizer's chat template."""
    text = tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=add_generation_prompt
    )
    if not isinstance(text, str):  # with tokenize=False transformers returns the text
        raise TypeError(f"the chat template returned {type(text).__name__}, not text")
    return text


def make_prompt_format(template: str, tokenizer: PreTrainedTokenizerBase | None) -> PromptFormat:
    """Build the prompt format named by ``model.template`` for ``tokenizer``.

    ``auto`` picks the chat template when the tokenizer has one, Alpaca otherwise; the
    Alpaca format needs no tokenizer (None) but for its EOS.
    """
    if template not in TEMPLATES:
        raise ConfigError(f"model.template = {template!r}; allowed: {', '.join(TEMPLATES)}")
    has_chat = bool(getattr(tokenizer, "chat_template", None))
    kind = (CHAT if has_chat else ALPACA) if template == "auto" else template
    if kind == CHAT and not has_chat:
        raise ConfigError("model.template = 'chat' but the tokenizer has no chat template")
    eos = getattr(tokenizer, "eos_token", None) or ""
    if kind == ALPACA or tokenizer is None:  # no tokenizer, no chat template: Alpaca
        return PromptFormat(ALPACA, eos)

    def render(messages: list[Message], add_generation_prompt: bool) -> str:
        return chat_text(tokenizer, messages, add_generation_prompt)

    return PromptFormat(CHAT, eos, render)
