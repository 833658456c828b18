"""Kokoro on random weights (synthetic): export wall time and peak RSS per variant and compute
precision, each export in a fresh process; kiln's executor vs torch on the 5 s variant (latency,
real-time factor, parity: pred_dur equality, waveform correlation, log-mel distance, max abs error),
with both waveforms written as WAV and a waveform/spectrogram plot.

    python benchmarks/bench_kokoro.py [--arch full|tiny] [--variants kokoro_5s,kokoro_15s]
                                      [--precisions float32,float16] [--out results.json]

Contracts: the `kokoro` block of config.yaml (the real model's) for `full`, `kokoro_tiny`'s for
`tiny`; the source is the random architecture either way.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from common import REPO, emit, run_measured  # noqa: E402

CONTRACT_OF = {"full": "kokoro", "tiny": "kokoro_tiny"}

BUILD = """
import sys
from kiln.models.kokoro.checkpoint import build_random
print("PATH=" + str(build_random(sys.argv[1], seed=0, overrides={}, out_dir=sys.argv[2])))
"""

CHILD_COMMON = """
import dataclasses, json, sys, time
import numpy as np, torch
from pathlib import Path
from kiln.config import load_config
from kiln.models import kokoro as K
from kiln.models.kokoro import build, feeds as kokoro_feeds, judge, waveform
from kiln.sources import SourceRecord, describe_file

def setup(bundle, model, name, precision):
    from kiln.workflow.jobs import resolved_contracts

    record = SourceRecord(kind="random", id="random:kokoro", revision=None, version=None, synthetic=True,
                          files=[describe_file(Path(bundle))])
    source = build.load(record)
    config = load_config(sys.argv[1])
    # config.yaml states only the knobs: the entry bound to its contract resolved from the facts
    config = config.bound(model, resolved_contracts(config, model, build.facts(source)))
    comp = config.component(model, name)
    comp = dataclasses.replace(comp, export=dataclasses.replace(comp.export, compute_precision=precision))
    return comp, source
"""

EXPORT = CHILD_COMMON + """
from kiln.export.convert import export_component
comp, source = setup(sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5])
report = export_component(K.FAMILY, source, comp, sys.argv[6])
print("REPORT=" + json.dumps(report))
"""

COMPARE = CHILD_COMMON + """
from kiln.mil import load_model
comp, source = setup(sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5])
precision_mode = {"float32": "fp32", "float16": "fp16"}[sys.argv[5]]
facts = build.facts(source)
wrapper = K.FAMILY.build_component(source, comp, facts)
feeds = kokoro_feeds.sentence_steps(facts, comp)
names = [s.name for s in comp.outputs]
def torch_run(feed):
    with torch.no_grad():
        out = wrapper(*[torch.from_numpy(feed[s.name]) for s in comp.inputs])
    return {n: o.numpy() for n, o in zip(names, out)}
plan = load_model(sys.argv[6]).plan(precision=precision_mode)
torch_run(feeds[0]); plan.run(feeds[0])       # warm-up
ref, got, t_torch, t_kiln = [], [], [], []
for feed in feeds:
    t = time.perf_counter(); ref.append(torch_run(feed)); t_torch.append(time.perf_counter() - t)
    t = time.perf_counter(); got.append(plan.run(feed)); t_kiln.append(time.perf_counter() - t)
metrics = waveform.waveform_metrics(ref, got, facts)
judge.write_audio_artifacts(sys.argv[7], f"{comp.name}_{sys.argv[5]}", facts, ref, {f"kiln_{precision_mode}": got})
window_s = comp.outputs[0].shape[-1] / facts["sample_rate"]
median = lambda xs: float(np.median(xs))
print("REPORT=" + json.dumps({
    "cases": len(feeds), "window_s": window_s,
    "torch_s_median": round(median(t_torch), 3), "kiln_s_median": round(median(t_kiln), 3),
    "kiln_over_torch": round(median(t_kiln) / median(t_torch), 2),
    "rtf_torch": round(median(t_torch) / window_s, 3), "rtf_kiln": round(median(t_kiln) / window_s, 3),
    "parity": metrics}))
"""


def _report(output: str) -> dict:
    line = next(l for l in output.splitlines() if l.startswith("REPORT="))
    return json.loads(line[len("REPORT="):])


def run(arch: str = "full", variants=("kokoro_5s", "kokoro_15s"), precisions=("float32", "float16"),
        work: Path | None = None) -> dict:
    py = sys.executable
    config = str(REPO / "config.yaml")
    model = CONTRACT_OF[arch]
    with tempfile.TemporaryDirectory(prefix="bench_kokoro_") as tmp:
        work = Path(work or tmp)
        work.mkdir(parents=True, exist_ok=True)
        built = run_measured([py, "-c", BUILD, arch, str(work)])
        bundle = next(l for l in built["output"].splitlines() if l.startswith("PATH="))[5:]
        out = {"architecture": arch, "synthetic": True, "contracts_from": model,
               "build": {"wall_s": built["wall_s"], "peak_rss_mib": built["peak_rss_mib"]},
               "export": {}, "compare_5s": {}}
        for name in variants:
            for precision in precisions:
                pkg = work / f"{name}_{precision}.mlpackage"
                m = run_measured([py, "-c", EXPORT, config, bundle, model, name, precision, str(pkg)])
                out["export"][f"{name}/{precision}"] = {"wall_s": m["wall_s"], "peak_rss_mib": m["peak_rss_mib"],
                                                        **_report(m["output"])}
                print(f"[bench_kokoro] export {name}/{precision}: {m['wall_s']} s, "
                      f"{m['peak_rss_mib']} MiB", file=sys.stderr, flush=True)
                if name == "kokoro_5s":
                    plots = work / "plots"
                    plots.mkdir(exist_ok=True)
                    try:
                        c = run_measured([py, "-c", COMPARE, config, bundle, model, name, precision, str(pkg),
                                          str(plots)])
                    except RuntimeError as exc:   # a comparison that fails (e.g. out of memory): record it, go on
                        out["compare_5s"][precision] = {"error": str(exc).strip().splitlines()[-1]}
                        continue
                    out["compare_5s"][precision] = {"peak_rss_mib": c["peak_rss_mib"], **_report(c["output"])}
        out["artifacts"] = str(work / "plots") if work != Path(tmp) else None
        return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="full", choices=sorted(CONTRACT_OF))
    parser.add_argument("--variants", default="kokoro_5s,kokoro_15s")
    parser.add_argument("--precisions", default="float32,float16")
    parser.add_argument("--work", help="keep packages, WAVs and plots here")
    parser.add_argument("--out")
    args = parser.parse_args()
    result = run(args.arch, args.variants.split(","), args.precisions.split(","),
                 Path(args.work) if args.work else None)
    return emit(result, args.out)


if __name__ == "__main__":
    raise SystemExit(main())
