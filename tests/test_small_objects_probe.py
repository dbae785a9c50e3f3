"""A step that records which modules its worker process has imported (no tests here).

Pipelines name it by reference, ``test_small_objects_probe:ModulesProbe``, after the
step under test, so its output tells what a fresh worker imported to run that step.
This module imports nothing but pixelfleet (no pytest), so it adds nothing itself.
"""

from __future__ import annotations

import json
import sys

from pixelfleet.models import Entry, OutputRecord
from pixelfleet.ops import Op, OpConfig, OpContext, render_key

PROBE = "test_small_objects_probe:ModulesProbe"


class ModulesProbe(Op):
    """Writes ``{stem}.modules.json``: the sorted names in ``sys.modules``."""

    name = "modules-probe"
    Config = OpConfig

    def output_keys(self, entry: Entry) -> list[str]:
        """One JSON list per source object."""
        return [render_key("{stem}.modules.json", entry.key)]

    def run(self, ctx: OpContext, entry: Entry) -> list[OutputRecord]:
        """Write the names of the modules this process has imported."""
        (key,) = self.output_keys(entry)
        names = json.dumps(sorted(sys.modules)).encode()
        return [ctx.write(self, entry, key, names, "application/json")]


ENVIRONMENT_PROBE = "test_small_objects_probe:EnvironmentProbe"
#: The variable :class:`EnvironmentProbe` reports.
PROBED = "PIXELFLEET_TEST_PROBE"


class EnvironmentProbe(Op):
    """Writes ``{stem}.env.txt``: the worker's value of :data:`PROBED` (empty if unset)."""

    name = "environment-probe"
    Config = OpConfig

    def output_keys(self, entry: Entry) -> list[str]:
        """One text file per source object."""
        return [render_key("{stem}.env.txt", entry.key)]

    def run(self, ctx: OpContext, entry: Entry) -> list[OutputRecord]:
        """Write what this process's environment says."""
        import os

        (key,) = self.output_keys(entry)
        value = os.environ.get(PROBED, "").encode()
        return [ctx.write(self, entry, key, value, "text/plain")]
