"""Every Orbax checkpoint commit paused after its data is written, so that a test can kill a run in the middle of a
save on purpose (a test-side patch: the library has no hook for it).

    python tests/pause_saves.py SECONDS -m rlvjax.train ARGS...   # the command, its commits paused
    monkeypatch.setattr(atomicity.AtomicRenameTemporaryPath, "finalize", paused_finalize(SECONDS))   # in-process

During the pause the step is complete on disk, but only as Orbax's temporary directory, which no reader takes for a
saved step. Orbax commits a local checkpoint by renaming that directory (``AtomicRenameTemporaryPath``).
"""

import asyncio
import os
import runpy
import sys

from orbax.checkpoint.path import atomicity


def paused_finalize(seconds: float, finalize=atomicity.AtomicRenameTemporaryPath.finalize):
    async def paused(self, *args, **kwargs):
        await asyncio.sleep(seconds)
        return await finalize(self, *args, **kwargs)

    return paused


if __name__ == "__main__":
    if len(sys.argv) < 4 or sys.argv[2] != "-m":
        sys.exit("usage: python tests/pause_saves.py SECONDS -m MODULE ARGS...")
    seconds, _, module, *args = sys.argv[1:]
    atomicity.AtomicRenameTemporaryPath.finalize = paused_finalize(float(seconds))
    sys.path[0] = os.getcwd()  # as `python -m` puts it, not this file's directory
    sys.argv = [module, *args]
    runpy.run_module(module, run_name="__main__", alter_sys=True)
