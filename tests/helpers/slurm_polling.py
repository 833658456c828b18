"""`snakemake` (its own command line, every argument passed on) with the Slurm executor plugin asking
`sacct` for its jobs' states every ``KILN_SLURM_POLL_SECONDS`` seconds (default 2).

The plugin waits 40 s after a check that saw a job finish, 10 s more after each that did not (up to
180 s): sensible on a busy site, where slurmdbd lags, but on the test's one-node cluster, which
answers at once, most of a build's wall time was those waits between its three grouped jobs. The
test already starts checking after 2 s (``--slurm-init-seconds-before-status-checks``); this keeps
that cadence. What runs, how the jobs are submitted and how their states are read are unchanged.

    python tests/helpers/slurm_polling.py --profile profiles/slurm all_silero_vad
"""

from __future__ import annotations

import os
import sys

from snakemake.cli import main
from snakemake_executor_plugin_slurm import Executor

POLL_SECONDS = float(os.environ.get("KILN_SLURM_POLL_SECONDS", "2"))

_check_active_jobs = Executor.check_active_jobs


async def _check_then_poll_again_soon(self, active_jobs):
    async for job in _check_active_jobs(self, active_jobs):
        yield job
    self.next_seconds_between_status_checks = POLL_SECONDS   # the plugin set 40 s or more


Executor.check_active_jobs = _check_then_poll_again_soon

if __name__ == "__main__":
    sys.exit(main())
