"""Parakeet EOU on random weights (synthetic): export wall time and peak RSS per component (320 ms
chunk), each export in a fresh process; per-chunk latency of the streaming encoder on kiln's
executor (fp32, fp16) vs torch (NeMo's own ``cache_aware_stream_step`` and the traced wrapper),
with caches carried over real streamed chunks, and the real-time factor per chunk (latency / chunk
duration). For the tiny test architecture and the full 120M geometry.

    python benchmarks/bench_parakeet_eou.py [--only tiny|full] [--out results.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from common import emit, run_measured  # noqa: E402

CHUNK_SAMPLES = 5120   # 320 ms at 16 kHz
COMPONENTS = ("preprocessor", "streaming_encoder", "decoder", "joint_decision")
PRECISION = {"preprocessor": "float32"}   # log of near-zero bins loses in fp16

BUILD = """
import sys
from kiln.models.parakeet_eou import checkpoint
print("PATH=" + str(checkpoint.build_random(sys.argv[1], seed=0, overrides={}, out_dir=sys.argv[2])))
"""

CHILD_COMMON = """
import json, sys, dataclasses, time
import numpy as np, torch
from kiln.config import build_config
from kiln.family.contract import resolve
from kiln.models import get_family
from kiln.models.parakeet_eou import build as eou, net as _eou, pipeline as eou_pipeline

def component(facts, path, name, precision):
    # every component's contract resolved from the facts and the chunk (the family's symbolic contracts)
    family, chunk_ms = get_family("parakeet_eou"), %d * 1000 // facts["sample_rate"]
    entries = {}
    for spec in family.components:
        options = {"chunk_ms": chunk_ms} if spec.options else {}
        resolved = resolve(spec.contract, facts, options)
        entries[spec.name] = {"options": options, **{side: resolved[side] for side in ("inputs", "outputs")}}
    raw = {"models": {"bench": {"family": "parakeet_eou", "task": "stt",
                                "source": {"kind": "path", "path": path}, "components": entries}}}
    comp = build_config(raw).component("bench", name)
    return dataclasses.replace(comp, export=dataclasses.replace(comp.export, compute_precision=precision))
""" % CHUNK_SAMPLES

EXPORT = CHILD_COMMON + """
from kiln.export.convert import trace_component, convert_traced
from kiln.export.package import save_mlpackage
path, name, precision, out, record = sys.argv[1:6]
started = time.perf_counter()
src = _eou.load(path)
facts = eou.facts(src)
loaded = time.perf_counter()
comp = component(facts, path, name, precision)
spec = get_family("parakeet_eou").check_contract(comp)
traced = trace_component(spec.wrapper(src, comp, facts), comp, spec.example_inputs(comp, facts))
traced_at = time.perf_counter()
mlmodel = convert_traced(traced, comp, comp.export)
converted_at = time.perf_counter()
save_mlpackage(mlmodel, out)
json.dump({"load_s": round(loaded - started, 3), "trace_s": round(traced_at - loaded, 3),
           "convert_s": round(converted_at - traced_at, 3),
           "save_s": round(time.perf_counter() - converted_at, 3)}, open(record, "w"))
"""

LATENCY = CHILD_COMMON + """
from kiln.export.convert import trace_component
from kiln.mil import load_model
path, package, chunks, record = sys.argv[1:5]
chunks = int(chunks)
# one torch thread: on a shared 2-core machine torch's pool spins against other processes
# (measured under load ~18: 654 ms per tiny chunk with 2 threads); the executor is single-threaded
torch.set_num_threads(1)
src = _eou.load(path)
facts = eou.facts(src)
comp = component(facts, path, "streaming_encoder", "float16")
spec = get_family("parakeet_eou").check_contract(comp)
traced = trace_component(spec.wrapper(src, comp, facts), comp, spec.example_inputs(comp, facts))
pre = component(facts, path, "preprocessor", "float32")
pre_spec = get_family("parakeet_eou").check_contract(pre)
pre_traced = trace_component(pre_spec.wrapper(src, pre, facts), pre, pre_spec.example_inputs(pre, facts))
audio = eou_pipeline.eou_audio(facts["sample_rate"], multiple=%d)
mels = [m["mel"] for m in eou_pipeline.stream_mel(_eou.torch_predict(pre_traced, pre_spec.inputs, pre_spec.outputs),
                                         facts, audio, %d)][:chunks]

def timed_stream(predict):
    times = []
    def timed(feed):
        t0 = time.perf_counter(); out = predict(feed); times.append(time.perf_counter() - t0); return out
    eou_pipeline.stream_encoder(timed, facts, mels[:2])           # warm-up
    times.clear()
    eou_pipeline.stream_encoder(timed, facts, mels)
    return times

enc = src.encoder
frames = mels[0].shape[-1] // facts["subsampling_factor"]
with torch.no_grad(), _eou._nemo.typecheck_disabled(), _eou._nemo.quiet_nemo():
    enc.setup_streaming_params(chunk_size=frames, shift_size=frames)
    state = enc.get_initial_cache_state(batch_size=1)
    pre_cache = torch.zeros(1, facts["n_mels"], facts["pre_encode_cache_size"])
    nemo_times = []
    for i, mel in enumerate([mels[0], mels[1]] + mels):
        x = torch.cat([pre_cache, torch.from_numpy(mel)], dim=2)
        t0 = time.perf_counter()
        out = enc.cache_aware_stream_step(processed_signal=x, processed_signal_length=torch.tensor([x.shape[2]]),
                                          cache_last_channel=state[0], cache_last_time=state[1],
                                          cache_last_channel_len=state[2], keep_all_outputs=False,
                                          drop_extra_pre_encoded=enc.streaming_cfg.drop_extra_pre_encoded)
        if i >= 2:
            nemo_times.append(time.perf_counter() - t0)
        state = out[2:]
        pre_cache = x[:, :, -facts["pre_encode_cache_size"]:]
        if i == 1:   # warm-up done: restart the stream
            state = enc.get_initial_cache_state(batch_size=1)
            pre_cache = torch.zeros(1, facts["n_mels"], facts["pre_encode_cache_size"])

chunk_s = %d / facts["sample_rate"]
def summary(times):
    times = sorted(times)
    median = times[len(times) // 2]
    return {"median_ms": round(median * 1e3, 2), "p90_ms": round(times[int(0.9 * (len(times) - 1))] * 1e3, 2),
            "rtf": round(median / chunk_s, 4)}

out = {"chunks": len(mels), "chunk_ms": chunk_s * 1e3, "threads": torch.get_num_threads(),
       "torch_nemo_stream_step": summary(nemo_times),
       "torch_traced_wrapper": summary(timed_stream(_eou.torch_predict(traced, spec.inputs, spec.outputs)))}
model = load_model(package)
for mode in ("fp32", "fp16"):
    plan = model.plan(precision=mode)
    out[f"kiln_{mode}"] = summary(timed_stream(lambda feed: dict(plan.run(feed))))
    ratio = out[f"kiln_{mode}"]["median_ms"] / out["torch_nemo_stream_step"]["median_ms"]
    out[f"kiln_{mode}_vs_nemo_step"] = round(ratio, 3)
json.dump(out, open(record, "w"))
""" % (CHUNK_SAMPLES, CHUNK_SAMPLES, CHUNK_SAMPLES)


def bench_architecture(architecture: str, workdir: Path, chunks: int) -> dict:
    built = run_measured([sys.executable, "-c", BUILD, architecture, str(workdir)])
    path = next(line[5:] for line in built["output"].splitlines() if line.startswith("PATH="))
    out: dict = {"architecture": architecture, "synthetic": True, "chunk_samples": CHUNK_SAMPLES,
                 "checkpoint_bytes": Path(path).stat().st_size,
                 "build_random": {"wall_s": built["wall_s"], "peak_rss_mib": built["peak_rss_mib"]},
                 "components": {}}
    for name in COMPONENTS:
        precision = PRECISION.get(name, "float16")
        package = workdir / f"{name}.mlpackage"
        record = workdir / f"{name}.json"
        measured = run_measured([sys.executable, "-c", EXPORT, path, name, precision, str(package), str(record)])
        size = sum(p.stat().st_size for p in package.rglob("*") if p.is_file())
        out["components"][name] = {"precision": precision, "process_wall_s": measured["wall_s"],
                                   "peak_rss_mib": measured["peak_rss_mib"], "package_bytes": size,
                                   **json.loads(record.read_text())}
        print(f"[bench_parakeet_eou] {architecture}/{name}: {measured['wall_s']:.1f} s, "
              f"{measured['peak_rss_mib']:.0f} MiB", file=sys.stderr, flush=True)
    record = workdir / "latency.json"
    run_measured([sys.executable, "-c", LATENCY, path, str(workdir / "streaming_encoder.mlpackage"),
                  str(chunks), str(record)])
    out["streaming_encoder_latency"] = json.loads(record.read_text())
    return out


def run(architectures: tuple[str, ...] = ("tiny", "full")) -> dict:
    results = {"model": "parakeet_eou (random weights)", "synthetic": True,
               "note": "export wall time includes process start, imports (NeMo ~15 s) and restoring the "
                       ".nemo; each export runs in a fresh process; latency is per 320 ms chunk with "
                       "caches carried over streamed espeak-ng speech", "architectures": {}}
    for architecture in architectures:
        started = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix=f"kiln-bench-eou-{architecture}-") as tmp:
            results["architectures"][architecture] = bench_architecture(
                architecture, Path(tmp), chunks=12 if architecture == "full" else 25)
        results["architectures"][architecture]["bench_wall_s"] = round(time.perf_counter() - started, 1)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=["tiny", "full"])
    parser.add_argument("--out")
    args = parser.parse_args()
    result = run((args.only,) if args.only else ("tiny", "full"))
    return emit(result, args.out)


if __name__ == "__main__":
    raise SystemExit(main())
