# kiln: two commands on a fresh machine.
#   make run    set up .venv and build the default target (Silero VAD, every stage that exists)
#   make test   set up .venv and run the whole test suite
SHELL := /bin/bash
.SHELLFLAGS := -ec
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
CORES ?= 2
# silero-vad 6.0.0 is the release FluidAudio loads (contracts/silero_vad.yaml source_version) and the
# one the golden Core ML fixtures were made from: config.yaml's silero_vad takes its weights from here
# (source.version). It is installed beside the environment's 6.2.3 (in its own folder, without
# dependencies: 6.0.0 requires torchaudio, whose PyPI build needs CUDA), where kiln.sources finds it.
SILERO_GOLDEN_DIR := $(VENV)/extra/silero-vad-6.0.0

.PHONY: run test test-fast bench setup system-deps clean conformance conformance-slice pull docs

# kiln's own modules compiled to byte-code (an editable install leaves them as source): where Python
# may not write byte-code caches (PYTHONDONTWRITEBYTECODE, as in many CI images), every Snakemake
# start and every job would compile them again (~20 ms per no-op `snakemake -n`); an edited module's
# cache is checked against the source's hash (not its mtime, which the content ledger may set back)
setup: $(VENV)/.installed system-deps
	@$(BIN)/python -m compileall -q --invalidation-mode checked-hash src/kiln

$(VENV)/.installed: pyproject.toml constraints.txt
	@command -v $(PYTHON) >/dev/null || { echo "kiln needs $(PYTHON) on PATH" >&2; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "installing pinned dependencies into $(VENV) (log: $(VENV)/pip.log)"
	$(BIN)/pip install --disable-pip-version-check -c constraints.txt -e '.[test,nemo,kokoro]' > $(VENV)/pip.log 2>&1 \
	  || { tail -n 40 $(VENV)/pip.log; exit 1; }
	$(BIN)/pip install --disable-pip-version-check --no-deps --target $(SILERO_GOLDEN_DIR) silero-vad==6.0.0 \
	  >> $(VENV)/pip.log 2>&1 || { tail -n 40 $(VENV)/pip.log; exit 1; }
	# onnx2torch (the `onnx` extra) without its torchvision requirement: see pyproject.toml
	$(BIN)/pip install --disable-pip-version-check --no-deps -c constraints.txt onnx2torch==1.5.15 \
	  >> $(VENV)/pip.log 2>&1 || { tail -n 40 $(VENV)/pip.log; exit 1; }
	touch $@

# another apt (e.g. a second checkout's setup) holding the lock is waited for, not a failure
APT_WAIT := -o DPkg::Lock::Timeout=600
# espeak-ng makes the real speech used by parity tests; git is needed by the DVC scenario tests;
# chromium renders the Snakemake report for its screenshot test; slurm-wlm, slurmdbd, munge and
# mariadb-server run the one-node cluster of the slurm executor test (tests/scenarios/test_slurm.py;
# no service is enabled: the test starts its own daemons). Command -> Debian package:
SYSTEM_DEPS := espeak-ng:espeak-ng git:git chromium:chromium slurmctld:slurm-wlm slurmdbd:slurmdbd \
  munged:munge mariadbd:mariadb-server

system-deps:
	@missing=""; for dep in $(SYSTEM_DEPS); do command -v $${dep%%:*} >/dev/null || [ -x /usr/sbin/$${dep%%:*} ] \
	  || missing="$$missing $${dep#*:}"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing system packages:$$missing"; \
	  if [ "$$(id -u)" = 0 ]; then sudo=; else sudo=sudo; fi; \
	  $$sudo apt-get $(APT_WAIT) update -qq && $$sudo apt-get $(APT_WAIT) install -y -qq $$missing >/dev/null; \
	fi

run: setup
	$(BIN)/snakemake --cores $(CORES) all

# the build recorded in dvc.lock, from the default DVC remote, after kiln's checks: a recorded build,
# every object on the remote, no local file overwritten (PULL=results/<model> fetches one model)
pull: setup
	$(BIN)/kiln pull $(PULL)

# Tests run in $(CORES) xdist workers: tests/conftest.py makes the work units (a shared workspace's
# tests together, a module with module-scoped fixtures together, every other test alone) and queues
# them longest first (tests/durations.json); --durations prints the 15 slowest.
PYTEST_PARALLEL := -n $(CORES) --dist loadgroup --durations=15

test: setup
	$(BIN)/python -m pytest -q -ra $(PYTEST_PARALLEL) tests

test-fast: setup
	$(BIN)/python -m pytest -q -ra $(PYTEST_PARALLEL) -m "not slow" tests

# the generated sections of docs/ (configuration.md from the config schema, command-line.md from the
# kiln parser); tests/test_docs.py fails when they are out of date
docs: setup
	$(BIN)/python -m kiln.docs

bench: setup
	$(BIN)/python benchmarks/run.py --out benchmarks/results.json

# coremltools' own MIL op test suite (inside the installed wheel) with kiln's executor as the Core ML
# backend: ML Programs only, fp16 and fp32 backends. Summary (cases executed on kiln, passed, failed
# per op, skipped/xfailed by reason, per precision): tests/conformance/results/summary.json.
CONFORMANCE_SUITE := coremltools.converters.mil.mil.ops.tests
CONFORMANCE_RESULTS := tests/conformance/results
# ~690 cases compute their expected values with TensorFlow (non_max_suppression, scatter,
# layer_norm against Keras). It lives in its own folder, on the path of `make conformance` only:
# coremltools imports TensorFlow whenever it can, which would slow every other kiln process.
# tensorflow-cpu and the dependencies the main environment lacks, pinned (resolved against
# constraints.txt: nothing there changes).
CONFORMANCE_TF_DIR := $(VENV)/extra/tensorflow
CONFORMANCE_TF := tensorflow-cpu==2.21.0 keras==3.15.1 h5py==3.14.0 astunparse==1.6.3 gast==0.7.0 \
  google-pasta==0.2.0 libclang==18.1.1 namex==0.1.0 opt_einsum==3.4.0 optree==0.20.0
CONFORMANCE_PYTEST := PYMIL_TEST_TARGETS=mlprogram INCLUDE_MIL_FP32_UNIT_TESTS=1 \
  $(BIN)/python -m pytest -q -p tests.conformance.plugin -p no:cacheprovider --pyargs $(CONFORMANCE_SUITE)

$(CONFORMANCE_TF_DIR)/.installed: $(VENV)/.installed
	@echo "installing TensorFlow for the conformance suite into $(CONFORMANCE_TF_DIR) (log: $(VENV)/pip.log)"
	$(BIN)/pip install --disable-pip-version-check --no-deps --target $(CONFORMANCE_TF_DIR) $(CONFORMANCE_TF) \
	  >> $(VENV)/pip.log 2>&1 || { tail -n 40 $(VENV)/pip.log; exit 1; }
	touch $@

conformance: setup $(CONFORMANCE_TF_DIR)/.installed
	PYTHONPATH=$(CONFORMANCE_TF_DIR) $(CONFORMANCE_PYTEST) -n $(CORES) --kiln-summary $(CONFORMANCE_RESULTS)/summary.json

# Regenerate the fast slice `make test` runs (tests/conformance/fast_slice.txt) and the op coverage
# `kiln ops --coverage` reports (src/kiln/mil/conformance_coverage.json): run the first case of every
# test function per opset, keep a set of passing cases covering every (opset, op) pair they executed,
# run that slice and record what it executed; then kiln's own op cases (tests/mil/op_cases.py, the ops
# no conformance case executes) and what they executed (src/kiln/mil/kiln_op_cases.json).
# (without TensorFlow: the slice runs in `make test`, whose environment has none)
conformance-slice: setup
	-$(CONFORMANCE_PYTEST) -n $(CORES) --kiln-candidates --kiln-summary $(CONFORMANCE_RESULTS)/candidates.json
	$(BIN)/python -m tests.conformance.slice select $(CONFORMANCE_RESULTS)/candidates.json --out tests/conformance/fast_slice.txt
	$(CONFORMANCE_PYTEST) -n $(CORES) --kiln-slice tests/conformance/fast_slice.txt --kiln-summary $(CONFORMANCE_RESULTS)/fast_slice.json
	$(BIN)/python -m tests.conformance.slice coverage $(CONFORMANCE_RESULTS)/fast_slice.json --out src/kiln/mil/conformance_coverage.json
	$(BIN)/python -m tests.mil.op_cases --out src/kiln/mil/kiln_op_cases.json

clean:
	rm -rf results logs .kiln .snakemake
