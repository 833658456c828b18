"""Silero VAD (16 kHz): one 512-sample LSTM step, or eight carried over a 256 ms window.

``build``: the network rebuilt from the shipped TorchScript's weights (bit-identical to
``silero_vad.load_silero_vad()``, state explicit); ``judge``: speech windows, decisions, the
probability plot.
"""

from __future__ import annotations

from kiln.family.spec import ComponentSpec, DeferredPart, FamilySpec, Metric, Option, PlotSeries, StatePair, declared
from kiln.models.silero_vad import feeds, judge
from kiln.models.silero_vad.contract import CONTRACT

#: the network part, imported when a hook is first called (torch: judging jobs never import it); not
#: named ``build``, which would hide the submodule from ``from ... import build``
build_part = DeferredPart("kiln.models.silero_vad.build")

#: one spec, built at any window: config.yaml's ``unified`` (steps 1) and ``unified_256ms`` (``spec:
#: unified``, steps 8) are two entries of it
STEPS = Option("steps", "512-sample LSTM steps per call (the window is 64 context + steps x 512 samples)")


def vad_component(name: str = "unified") -> ComponentSpec:
    return ComponentSpec(
        name, **declared(CONTRACT), wrapper=build_part.window, feeds=feeds.speech_windows, options=(STEPS,),
        state=(StatePair("hidden_state", "new_hidden_state"), StatePair("cell_state", "new_cell_state")),
        metrics=(Metric("decisions", judge.decisions, rank_by="decision_agreement"),),
        plot=PlotSeries("speech probability", judge.probabilities))


FAMILY = FamilySpec(name="silero_vad", load=build_part.load, facts=build_part.facts, components=(vad_component(),))
