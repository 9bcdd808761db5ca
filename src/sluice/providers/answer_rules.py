"""Answer-side rules shared by the Anthropic and Bedrock translators.

Both adapters can emulate `text.format` json_schema with a forced tool (`structured_output: tool`)
and both read reasoning whose token count the upstream may not report; the same decisions apply to
both, so they are made here once.
"""

from __future__ import annotations

from sluice.accounting.estimate import tokens_for


class HeldPreamble:
    """Free text of an answer whose structured output arrives through a forced tool.

    A model forced to call the answer tool may still write a sentence first ("Here is the JSON:").
    That sentence is held back: once the answer tool is called it is dropped (it is preamble, and
    glued to the JSON it would break `output_text` and the SDK's `parse()`); if the tool is never
    called (the model answered in text or called a function instead), the text is the answer and
    is given at the end.
    """

    __slots__ = ("_active", "_answered", "_held")

    def __init__(self, active: bool) -> None:
        self._active = active  # the request forced an answer tool
        self._answered = False
        self._held: list[str] = []

    def holds(self, text: str) -> bool:
        """Keep `text` back (True) or let it through now (False)."""
        if not self._active or self._answered:
            return False
        self._held.append(text)
        return True

    def answered(self) -> None:
        """The answer tool was called: what was held is preamble and is dropped."""
        self._held.clear()
        self._answered = True

    def release(self) -> str:
        """What is still held (the tool was not called): the answer's text, given at the end."""
        text, self._held = "".join(self._held), []
        return text


def estimate_reasoning_tokens(characters: int, output_tokens: int) -> int:
    """Reasoning tokens estimated from the reasoning text's length, when the upstream gives no count.

    About one token per four characters, rounded up, never more than the answer's output tokens
    (which include reasoning). An estimate, documented as such: Claude 4's thinking text is a
    summary of the thinking it is billed for, so the true count is usually higher.
    """
    return min(tokens_for(characters), output_tokens) if characters > 0 else 0
