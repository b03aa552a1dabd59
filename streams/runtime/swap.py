"""Hot model swap: notice a new model version in the model directory and
switch to it between batches, without restarting the worker.

Deploy a new version by exporting it to a new directory and atomically
re-pointing the configured path at it (``ln -sfn v2 current.tmp && mv -T
current.tmp current``), or by exporting over the directory in place. The
watcher compares a fingerprint (resolved path + manifest inode/mtime/size),
loads and verifies the new directory off the event loop, warms it up, and only
then hands it over; a directory that fails verification is logged and the
running model stays. Batches already in flight finish on the model they
started with, and every score records the name and version that produced it.
"""

from __future__ import annotations

import asyncio
import logging
import os
from concurrent.futures import Executor
from pathlib import Path
from typing import Callable

from streams.runtime.manifest import MANIFEST_NAME, ManifestError
from streams.runtime.model import SentimentModel

__all__ = ["ModelWatcher", "fingerprint"]

log = logging.getLogger(__name__)


def fingerprint(directory: Path) -> tuple:
    """What changes when a new model is deployed at ``directory``."""
    real = os.path.realpath(directory)
    try:
        st = os.stat(Path(real) / MANIFEST_NAME)
    except OSError:
        return (real, None)
    return (real, st.st_ino, st.st_mtime_ns, st.st_size)


class ModelWatcher:
    """Loads the model at ``directory`` again whenever its fingerprint changes."""

    def __init__(self, directory: Path, load: Callable[[Path], SentimentModel], executor: Executor | None = None):
        self.directory = Path(directory)
        self._load = load
        self._executor = executor
        self._seen = fingerprint(self.directory)
        self.swaps = 0
        self.rejected = 0

    async def check(self, current: SentimentModel) -> SentimentModel | None:
        """The new model if one was deployed and loads cleanly, else None."""
        seen = fingerprint(self.directory)
        if seen == self._seen:
            return None
        self._seen = seen
        loop = asyncio.get_running_loop()
        try:
            new = await loop.run_in_executor(self._executor, self._load, self.directory)
        except (ManifestError, OSError, ValueError) as exc:
            self.rejected += 1
            log.error("model directory %s changed but cannot be used; keeping %s %s: %s",
                      self.directory, current.name, current.version, exc)
            return None
        self.swaps += 1
        log.info("model swapped: %s %s (%s) -> %s %s (%s), provider %s",
                 current.name, current.version, current.variant, new.name, new.version, new.variant, new.provider)
        return new
