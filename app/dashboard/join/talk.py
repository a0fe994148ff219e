"""What a phone on `/join` may write, checked before anything changes.

Three taps, three keys every phone shares (the talk's keys; the audience-counter scenario counts
votes in `votes-{run}`, the hall's own votes go to `votes`):

- `vote`: +1 on the counter `votes` (`counters` namespace).
- `emoji`: add one of `EMOJI` to the set `audience-emoji` (so the set holds at most that many).
- `word`: write a word to the register `audience-word` (`kv`): 1 to `MAX_WORD_CHARS` characters
  after trimming and NFC normalisation, no control, format or separator characters other than
  the plain space (no zero-width tricks, no line breaks). Any other text is allowed, `<b>`
  included: every page renders words as text, never as markup.

A bad tap is a `JoinError` (422 with its code) and writes nothing.
"""

from __future__ import annotations

import unicodedata

VOTES = ("counters", "votes")
EMOJIS = ("sets", "audience-emoji")
WORD = ("kv", "audience-word")
KEYS = (VOTES, EMOJIS, WORD)

EMOJI = ("👍", "❤️", "🎉", "🤯", "🚀", "🌍", "🔥", "😂")
MAX_WORD_CHARS = 24


class JoinError(ValueError):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def check_word(word: object) -> str:
    if not isinstance(word, str):
        raise JoinError("invalid_word", "a word is a string")
    w = unicodedata.normalize("NFC", word).strip()
    if not w:
        raise JoinError("invalid_word", "the word is empty")
    if len(w) > MAX_WORD_CHARS:
        raise JoinError("word_too_long", f"a word is at most {MAX_WORD_CHARS} characters")
    for ch in w:
        cat = unicodedata.category(ch)
        # C*: control, format (zero-width...), surrogate, private, unassigned; Z* but the space: line breaks
        if cat[0] == "C" or (cat[0] == "Z" and ch != " "):
            raise JoinError("invalid_word", f"the word has a character that is not allowed (U+{ord(ch):04X})")
    return w


def operation(action: str, value: object) -> tuple[str, str, dict]:
    """(namespace, key, operation) for a tap, or JoinError."""
    if action == "vote":
        if value is not None:
            raise JoinError("invalid_operation", "a vote carries no value")
        return (*VOTES, {"add": 1})
    if action == "emoji":
        if value not in EMOJI:
            raise JoinError("invalid_emoji", "the emoji must be one of " + " ".join(EMOJI))
        return (*EMOJIS, {"add": [value]})
    if action == "word":
        return (*WORD, {"value": check_word(value), "context": None})
    raise JoinError("invalid_operation", "the action is one of vote, emoji, word")
