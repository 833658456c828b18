"""Kokoro's validation inputs (the reference job): the validation sentences as phoneme ids."""

from __future__ import annotations

from typing import Any, Mapping

from kiln.config import ComponentConfig
from kiln.family.spec import Context, Feeds, require_fact
from kiln.models.kokoro.contract import contract_lengths, make_feed


def sentence_steps(facts_: Mapping[str, Any], component: ComponentConfig) -> list[dict]:
    """One input per validation sentence, its phonemes cut to the token buffer."""
    max_tokens = contract_lengths(component)[0]
    phonemes = [p[:max_tokens - 2] for p in require_fact(facts_, "validation_phonemes", "kokoro")]
    return [make_feed(facts_, component, p, seed=i) for i, p in enumerate(phonemes)]


def sentence_feeds(ctx: Context, component: ComponentConfig) -> Feeds:
    """The validation sentences (espeak-ng phonemes), each cut to the token buffer; the longest
    overflows the 5 s window and must come back flagged ``clamped``."""
    steps = sentence_steps(ctx.facts, component)
    return Feeds(steps, f"{len(steps)} espeak-ng sentences as phoneme ids (voice "
                        f"'{ctx.facts['voice']}'), vocoder noise drawn from seeds 0..{len(steps) - 1}")
