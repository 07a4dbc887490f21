"""Writes a Nova deployment's databases the way Nova's services write them, with Nova's own
objects (``nova.objects``), under contexts targeted at the cells (``nova.context.target_cell``).

Runs with the side environment's python (Nova lives only there)::

    .nova-venv/bin/python writer.py --config-file nova.conf

Protocol: one JSON object per line on stdin, ``{"op": NAME, ...arguments}``; one JSON line
per command on stdout, ``{"ok": true, "result": ...}`` or ``{"ok": false, "error": TEXT,
"traceback": TEXT}``. Nova's own output goes to stderr. ``tests/realnova/novadb.py`` drives it.

The sequences follow nova/compute/api.py (the API's writes), nova/conductor/manager.py
(schedule_and_build_instances, _bury_in_cell0) and nova/compute/manager.py (build, stop,
start, resize, delete) closely enough that each table is written by the same object calls,
in the same transactions, as in a running cloud. Nothing here talks to RabbitMQ, Glance,
Neutron or Placement: what those would answer is given in the command.

The operations live by noun in ``catalog_ops.py``, ``host_ops.py``, ``build_ops.py`` and
``lifecycle_ops.py`` (mixins sharing ``base.WriterBase``); this file is the protocol.
"""

from __future__ import annotations

import json
import os
import sys
import traceback

# The protocol owns the real stdout; anything else printed goes to stderr.
PROTOCOL_OUT = os.fdopen(os.dup(1), "w", buffering=1)
os.dup2(2, 1)
sys.stdout = sys.stderr

from nova import config as nova_config  # noqa: E402
from nova import objects  # noqa: E402

objects.register_all()

from base import WriterBase  # noqa: E402
from build_ops import BuildOps  # noqa: E402
from catalog_ops import CatalogOps  # noqa: E402
from host_ops import HostOps  # noqa: E402
from lifecycle_ops import LifecycleOps  # noqa: E402


class Deployment(CatalogOps, HostOps, BuildOps, LifecycleOps, WriterBase):
    """Every ``op_NAME`` method of the mixins is a command of the protocol."""

    def op_ping(self):
        return {"cells": sorted(self.cells)}


def main(argv):
    nova_config.parse_args([argv[0]] + argv[1:])
    deployment = Deployment()
    PROTOCOL_OUT.write(json.dumps({"ok": True, "result": "ready"}) + "\n")
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            command = json.loads(line)
            op = command.pop("op")
            handler = getattr(deployment, f"op_{op}", None)
            if handler is None:
                raise ValueError(f"unknown op {op!r}")
            reply = {"ok": True, "result": handler(**command)}
        except Exception as exc:
            reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}",
                     "traceback": traceback.format_exc()}
        PROTOCOL_OUT.write(json.dumps(reply, default=str) + "\n")
    # Every write is committed; skip the interpreter's slow joins of Nova's thread pools.
    PROTOCOL_OUT.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
