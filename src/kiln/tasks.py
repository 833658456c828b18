"""The task labels a model's ``task`` may take: an open registry, not a closed list.

``task`` says what a model does (metadata.json, the model card's tags, the report). kiln knows the
labels below; a family adds its own with :func:`register_task` (or a ``TASKS`` mapping in its
module), and a config file with a top-level ``tasks:`` block (label -> what it is). Every configured
model's task is checked against the union before any job runs (:func:`kiln.models.check_models`),
naming the model's ``task`` key and the known labels.

This module stays import-light (no torch): the workflow imports it at start-up.
"""

from __future__ import annotations

from typing import Mapping

from kiln.foundation.errors import ConfigError

TASKS: dict[str, str] = {
    "vad": "voice activity detection: speech probability per window",
    "stt": "speech to text",
    "tts": "text to speech",
    "speaker_embedding": "a vector per utterance that identifies the speaker",
    "wake_word": "keyword spotting: a probability that a phrase was said",
    "pitch": "fundamental frequency per frame",
    "audio_classification": "a label (or label scores) per clip",
    "speech_enhancement": "cleaner audio from noisy audio",
    "feature_extraction": "features for another model (mel frames, embeddings)",
}


def register_task(name: str, description: str) -> str:
    """Add ``name`` to the registry (a family module calls this at import); returns ``name``."""
    existing = TASKS.get(name)
    if existing is not None and existing != description:
        raise ValueError(f"task '{name}' is registered already as {existing!r}")
    TASKS[name] = description
    return name


def known_tasks(config_tasks: Mapping[str, str] | None = None,
                family_tasks: Mapping[str, str] | None = None) -> dict[str, str]:
    return {**TASKS, **dict(family_tasks or {}), **dict(config_tasks or {})}


def check_task(model: str, task: str, *, config_tasks: Mapping[str, str] | None = None,
               family_tasks: Mapping[str, str] | None = None, file: str | None = None) -> None:
    """Raise :class:`ConfigError` at ``models.<model>.task`` unless ``task`` is a known label."""
    known = known_tasks(config_tasks, family_tasks)
    if task not in known:
        raise ConfigError(f"unknown task '{task}' (known: {', '.join(sorted(known))}; add it under the "
                          f"top-level 'tasks:' key with a one-line description, or register it in the "
                          f"family with kiln.tasks.register_task)", key=f"models.{model}.task", file=file)
