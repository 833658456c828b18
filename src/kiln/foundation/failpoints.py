"""Named failure points for crash-safety tests (the etcd/FreeBSD "failpoint" pattern).

``KILN_FAILPOINT=<name>:<action>`` makes :func:`hit` fail at that point: ``raise`` raises
:class:`InjectedFailure`, ``kill`` ends the process at once with SIGKILL, as an OOM killer or a
cluster pre-emption would. Unset (the normal case), :func:`hit` is a dictionary lookup and nothing else.
"""

from __future__ import annotations

import os
import signal

from kiln.foundation.errors import KilnError

ENV = "KILN_FAILPOINT"


class InjectedFailure(KilnError):
    """Raised at a failpoint armed with the ``raise`` action."""


def hit(name: str) -> None:
    armed = os.environ.get(ENV)
    if not armed:
        return
    point, _, action = armed.partition(":")
    if point != name:
        return
    if action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    raise InjectedFailure(f"failpoint '{name}' hit ({ENV}={armed})")
