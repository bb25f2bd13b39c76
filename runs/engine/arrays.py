"""Job arrays: a run's claimed tasks that share a shape go to the backend as one array job.

The adapter says what a job shares with the other elements of an array it may go in
(``adapter.array_shape``: resources, environment init, log naming; None where the
backend has no arrays, they are off, or the job waits on others inside the scheduler).
Tasks of one run with equal shapes become the elements of one array per
``max_array_size`` (the site's limit); a shape of one task stays a plain job.

Crash safety: each element's tag (``<array tag>_<index>``: the array's tag, which its
job carries on the scheduler, and the element's index) is stored here, before the
backend sees the array; a tick that dies mid-submit leaves the tasks ``submitting``, and
reconcile finds the array by its tag and maps each element back to its task.
"""

from __future__ import annotations

import secrets
from collections.abc import Hashable, Sequence

from django.db import transaction

from backends.base import BackendAdapter
from runs.engine.claim import Claimed
from runs.engine.sql import chunks, update_each
from runs.engine.states import TaskState

# What changes on a claimed task that becomes an array element (it stays `submitting`).
ELEMENT_FIELDS = ["submit_tag", "script", "output_file", "error_file"]


def form_arrays(batch: Sequence[Claimed], adapter: BackendAdapter, max_array_size: int | None) -> list[Claimed]:
    """The batch with the tasks of each array as its elements, stored, in the order the
    backend submits them: each array where its first task was, plain jobs as they were
    (so a job held on a parent in the batch still comes after it)."""
    batch_tags = {task.pk: spec.tag for task, spec, _ in batch}
    placed: dict[int, list[Claimed]] = {n: [claimed] for n, claimed in enumerate(batch)}
    elements: list[Claimed] = []
    for members in _shapes(batch, adapter).values():
        for chunk in chunks(members, max_array_size or len(members)):
            if len(chunk) < 2:
                continue
            array = _as_array([batch[n] for n in chunk], adapter)
            elements += array
            placed.update({n: [] for n in chunk})
            placed[chunk[0]] = array
    _store(elements)
    # A job held on a task of the batch names it by its tag: by its element's tag now.
    renamed = {batch_tags[task.pk]: spec.tag for task, spec, _ in elements}
    for _, spec, _ in batch:
        spec.after_tags = [renamed.get(tag, tag) for tag in spec.after_tags]
    return [claimed for n in range(len(batch)) for claimed in placed[n]]


def _shapes(batch: Sequence[Claimed], adapter: BackendAdapter) -> dict[tuple[str, Hashable], list[int]]:
    """Batch positions of the jobs that may go in an array, by run and shape."""
    groups: dict[tuple[str, Hashable], list[int]] = {}
    for n, (task, spec, _) in enumerate(batch):
        shape = adapter.array_shape(spec)
        if shape is not None:
            groups.setdefault((task.run_id, shape), []).append(n)
    return groups


def _as_array(members: Sequence[Claimed], adapter: BackendAdapter) -> list[Claimed]:
    first = members[0][0]
    array_tag = f"sh-{first.run_id}-a{first.pk}-{secrets.token_hex(3)}"
    result: list[Claimed] = []
    for index, (task, spec, _) in enumerate(members):
        element = adapter.as_array_element(spec, array_tag, index)
        script = adapter.render_script(element)
        task.submit_tag, task.script = element.tag, script
        task.output_file, task.error_file = element.output_file, element.error_file
        result.append((task, element, script))
    return result


def _store(elements: Sequence[Claimed]) -> None:
    """Each element's tag, script and log files, in one transaction, before the backend
    sees the array (only the lease holder moves `submitting` tasks)."""
    if not elements:
        return
    with transaction.atomic():
        update_each([task for task, _, _ in elements], ELEMENT_FIELDS, [TaskState.SUBMITTING])
