"""Tasks that live and end together, and whose failures are never lost.

asyncio.TaskGroup needs one `async with` block around all of its tasks and cancels every task
at the first failure. A call's parts start at different moments (the TTS opens after the
provider's start, a clear is sent from a synchronous handler) and what a failure means is the
owner's decision (a call ends with the part's name as its reason). So: `spawn` from anywhere,
`on_failure` is told of each task that raised (once, with its exception, retrieved so asyncio
never warns about it), and `aclose` cancels what is left and waits until all have finished.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

OnFailure = Callable[[str, BaseException], None]


class Supervisor:
    def __init__(self, on_failure: OnFailure) -> None:
        self._on_failure = on_failure
        self._tasks: dict[asyncio.Task[None], str] = {}
        self._closing = False

    def spawn(self, name: str, job: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """Run `job` as a supervised task; after `aclose` began, it is refused."""
        if self._closing:
            job.close()  # never started: nothing to cancel, no "never awaited" warning
            raise RuntimeError(f"cannot start {name!r}: its supervisor is closing")
        task = asyncio.get_running_loop().create_task(job, name=name)
        self._tasks[task] = name
        task.add_done_callback(self._done)
        return task

    def __len__(self) -> int:
        return len(self._tasks)

    def _done(self, task: asyncio.Task[None]) -> None:
        name = self._tasks.pop(task, "?")
        if not task.cancelled() and (exc := task.exception()) is not None:
            self._on_failure(name, exc)

    async def aclose(self) -> None:
        """Cancel every task and wait for all; a task that fails while being cancelled is
        reported like any other failure."""
        self._closing = True
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        # Failures were reported by _done; gather only waits (and retrieves nothing twice).
        await asyncio.gather(*tasks, return_exceptions=True)
