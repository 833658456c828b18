"""MIL text tokenizer: token kinds, offsets, comments."""

from __future__ import annotations

from kiln.coreml.mil_text.tokenizer import tokenize


def test_tokenizer_keeps_offsets_and_skips_comments():
    tokens = tokenize("a // note\n -0x1p+1 ...")
    assert [(t.kind, t.text, t.offset) for t in tokens] == [
        ("IDENT", "a", 0), ("NUMBER", "-0x1p+1", 11), ("PUNCT", "...", 19), ("END", "", 22)]
