"""The response phase: answer a new instruction with local examples as demonstrations.

With a chat model (the best layout found with the default model): the demonstrations are prior
user/assistant turns, answers cut to about 80 words at a sentence end, then the new
question as the last user turn; greedy with repetition penalty 1.2 (without it answers
loop), stopping at the end-of-turn token. With the Alpaca format: one Alpaca intro,
the demonstrations as consecutive "### Instruction / ### Response" blocks, then the new
instruction's block ending in "### Response:"; "###" stops the next block.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from fedpit.data.example import Example
from fedpit.lm.generation import GenerationSpec
from fedpit.model.prompts import ALPACA, Message, PromptFormat, alpaca_prompt, user_text

ALPACA_STOP = "###"
_WORD = re.compile(r"\S+")
_SENTENCE_END = re.compile(r"[.!?][\"')\]]*(?=\s|$)")


def truncate_words(text: str, max_words: int) -> str:
    """Cut ``text`` to at most ``max_words`` words, ending at a sentence end.

    Whitespace inside the kept part is preserved. When no sentence ends within the
    first ``max_words`` words, the cut falls after the last whole word.
    """
    words = list(_WORD.finditer(text))
    if len(words) <= max_words:
        return text.strip()
    head = text[: words[max_words - 1].end()] if max_words > 0 else ""
    ends = list(_SENTENCE_END.finditer(head))
    return (head[: ends[-1].end()] if ends else head).strip()


def trim_to_sentence(text: str) -> str | None:
    """The longest prefix of ``text`` that ends at a sentence end, or None if none does.

    Used to salvage a response cut by the token budget: what it said up to its last
    full sentence is well-formed, only shorter.
    """
    ends = list(_SENTENCE_END.finditer(text))
    return text[: ends[-1].end()].strip() if ends else None


def _alpaca_block(example: Example) -> str:
    """An example's Alpaca prompt without the intro paragraph."""
    prompt = alpaca_prompt(example)
    return prompt[prompt.index("### Instruction:") :]


def response_prompt(
    instruction: str, demos: Sequence[Example], fmt: PromptFormat, demo_words: int = 80
) -> str:
    """The prompt that asks for the response to ``instruction`` after ``demos``."""
    new = Example(id="new", instruction=instruction, input="", output="")
    if fmt.kind == ALPACA:
        prompt = alpaca_prompt(new)
        intro = prompt[: prompt.index("### Instruction:")]
        shown = "".join(
            f"{_alpaca_block(d)}{truncate_words(d.output, demo_words)}\n\n" for d in demos
        )
        return intro + shown + _alpaca_block(new)
    messages: list[Message] = []
    for d in demos:
        messages.append({"role": "user", "content": user_text(d)})
        messages.append({"role": "assistant", "content": truncate_words(d.output, demo_words)})
    messages.append({"role": "user", "content": instruction})
    return fmt.chat(messages)


def response_spec(
    fmt: PromptFormat,
    max_new_tokens: int = 160,
    repetition_penalty: float = 1.2,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_p: float = 1.0,
) -> GenerationSpec:
    """Decoding for the response phase; Alpaca also stops at the next "###"."""
    return GenerationSpec(
        max_new_tokens=max_new_tokens,
        stop=(ALPACA_STOP,) if fmt.kind == ALPACA else (),
        repetition_penalty=repetition_penalty,
        do_sample=do_sample,
        temperature=temperature,
        top_p=top_p,
    )
