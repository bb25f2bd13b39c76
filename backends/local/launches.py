"""Launching a submit's local jobs side by side: each launcher mostly waits for its runner
to start, so launching them one after the other left the backend idle."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

from backends.base import BackendUnavailable, JobSpec, SubmitResult

LAUNCHES_AT_ONCE = 8


def side_by_side(
    launch: Callable[[JobSpec, str], SubmitResult], jobs: Sequence[tuple[JobSpec, str]], unusable: type[Exception]
) -> list[SubmitResult]:
    """``launch`` of every job, at most LAUNCHES_AT_ONCE at a time; one result per job, in
    order. An ``unusable`` work root for every job means nothing was submitted:
    BackendUnavailable; an OSError (a task file refused) fails that job only."""

    def one(pair: tuple[JobSpec, str]) -> SubmitResult | Exception:
        job, script = pair
        try:
            return launch(job, script)
        except unusable as exc:
            return exc
        except OSError as exc:  # FileRefused, or a task file that cannot be opened
            return SubmitResult(tag=job.tag, error=str(exc))

    with ThreadPoolExecutor(max_workers=LAUNCHES_AT_ONCE) as pool:
        outcomes = list(pool.map(one, jobs))
    if outcomes and all(isinstance(o, unusable) for o in outcomes):
        raise BackendUnavailable(str(outcomes[0]))
    return [
        o if isinstance(o, SubmitResult) else SubmitResult(tag=job.tag, error=str(o))
        for (job, _), o in zip(jobs, outcomes, strict=True)
    ]
