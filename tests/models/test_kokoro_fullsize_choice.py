"""The full-size Kokoro stand-in's validation-input choice, on random weights of the Kokoro-82M
architecture, as the prepare job makes it (issue 29 item 3): random duration predictors speak the
shortest validation sentence past kokoro_5s's window, so the faithfulness input is cut to the longest
prefix found that fits every window, and the choice says so. The whole prepare job (tracing both
variants, minutes) is tests/scenarios/test_fullsize_kokoro_prepare.py, opt-in (KILN_FULLSIZE=1)."""

from __future__ import annotations

import pytest

from tests.helpers.fullsize_facts import FULLSIZE_SOURCE

pytestmark = pytest.mark.slow


def test_the_faithfulness_sentence_is_cut_to_fit_the_real_entrys_windows(kiln_config, tmp_path):
    from kiln.family.registry import get_family
    from kiln.models.kokoro.build import faithfulness_input
    from kiln.models.kokoro.contract import contract_lengths
    from kiln.sources import fetch

    family = get_family("kokoro")
    record = fetch("kokoro", family.name, FULLSIZE_SOURCE, tmp_path, build_random=family.make_random)
    source = family.load(record)
    facts = family.facts(source)
    components = kiln_config.model("kokoro").components
    windows = {name: contract_lengths(component)[:2] for name, component in components.items()}
    assert windows == {"kokoro_5s": (128, 120000), "kokoro_15s": (384, 360000)}

    choice, (ids, _, audio, durations, _) = faithfulness_input(source, facts, windows)
    # cut, and said so: a prefix of the shortest sentence, whose audio fits the smallest window
    assert choice["cut"] and choice["sentence_phonemes"].startswith(choice["phonemes"])
    assert 0 < len(choice["phonemes"]) < len(choice["sentence_phonemes"])
    assert choice["window"] == {"tokens": 128, "samples": 120000}
    assert choice["tokens"] == len(choice["phonemes"]) + 2 == ids.shape[-1]
    assert choice["samples"] == audio.numel() <= 120000
    # every prefix tried before the chosen one made kokoro speak past the window
    assert choice["tried"][-1] == {"phonemes": len(choice["phonemes"]), "samples": choice["samples"]}
    assert all(t["samples"] > 120000 for t in choice["tried"][:-1]) and len(choice["tried"]) >= 2
    # kokoro's own output: one duration per token, audio of frame_samples per predicted frame
    assert durations.numel() == choice["tokens"]
    assert audio.numel() == int(durations.sum()) * facts["frame_samples"]
