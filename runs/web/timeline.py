"""The run timeline: where a run's time went, as a picture.

One bar per task (queue wait, then run time, coloured by state), grouped like the task
table, and a line of how many tasks ran at each moment. Drawn by the portal as inline
SVG, with positions in percent of the run's span so the picture fills any width.

Big runs stay light: a group of more than :data:`BARS_INLINE` tasks (or any group of a
run with more than :data:`OPEN_TASKS` tasks) is folded to one line showing its own
running count over time; its bars load when it is opened, :data:`BARS_PER_GROUP` at most.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.utils import timezone
from django.utils.http import urlencode

from backends.units import format_duration
from runs.models import Run, Task, task_group

OPEN_TASKS = 200  # runs up to this many tasks show every bar at once
BARS_INLINE = 60  # a bigger group is folded until opened
BARS_PER_GROUP = 500  # bars drawn for one opened group (the first ones, in workflow order)
BUCKETS = 240  # points of a running-tasks line
# Bar height and the gap below it, in px: thinner when a group has many bars.
BAR_SIZES = ((60, 9, 3), (BARS_PER_GROUP, 3, 1))

# (task_id, name, state, submitted_at, started_at, finished_at)
Row = tuple[str, str, str, datetime | None, datetime | None, datetime | None]


@dataclass(frozen=True)
class Span:
    """The run's time axis: the first submission to its end (or now, while it runs)."""

    start: datetime
    end: datetime

    @property
    def seconds(self) -> float:
        return max((self.end - self.start).total_seconds(), 1.0)

    def x(self, moment: datetime) -> float:
        """Position of ``moment`` in percent of the span, clamped to it."""
        return min(100.0, max(0.0, (moment - self.start).total_seconds() * 100.0 / self.seconds))

    def ticks(self, most: int = 7) -> list[tuple[float, str]]:
        """Axis labels at round times since the start (at most ``most``, the start's
        included): every 1, 2 or 5 seconds (× 10ⁿ), then minutes, then hours, then days."""
        largest = TICK_STEPS[-1] * -(-self.seconds // (TICK_STEPS[-1] * (most - 1)))  # years: scaled
        step = next((s for s in TICK_STEPS if self.seconds / s <= most - 1), largest)
        count = int(self.seconds // step) + 1
        return [(i * step * 100.0 / self.seconds, tick_label(i * step)) for i in range(count)]


MINUTE, HOUR, DAY = 60, 3600, 86400
TICK_STEPS = (
    *(1, 2, 5, 10, 20, 30),
    *(m * MINUTE for m in (1, 2, 5, 10, 20, 30)),
    *(h * HOUR for h in (1, 2, 3, 6, 12)),
    *(d * DAY for d in (1, 2, 5, 10, 20, 50, 100)),
)


def tick_label(seconds: float) -> str:
    """A round time as the axis shows it: ``0s``, ``20s``, ``1m 30s``, ``5m``, ``2h``, ``1h 30m``, ``3d``."""
    s = int(seconds)
    for unit, name, smaller, small_name in ((DAY, "d", HOUR, "h"), (HOUR, "h", MINUTE, "m"), (MINUTE, "m", 1, "s")):
        if s >= unit:
            rest = s % unit // smaller
            return f"{s // unit}{name}" + (f" {rest:02d}{small_name}" if rest else "")
    return f"{s}s"


@dataclass(frozen=True)
class Bar:
    task_id: str
    state: str
    y: int
    height: int
    wait_x: float
    wait_w: float
    run_x: float
    run_w: float
    title: str


@dataclass(frozen=True)
class Line:
    """A running-tasks line: an SVG ``points`` list in a 0..1000 × 0..100 box, and its peak."""

    points: str
    peak: int


@dataclass
class GroupTimeline:
    name: str
    total: int
    line: Line
    bars: list[Bar] = field(default_factory=list)
    folded: bool = False
    first: int = 0  # index in the group of the first bar drawn (bars come a page at a time)
    counts: Counter[str] = field(default_factory=Counter)  # tasks per state

    @property
    def label(self) -> str:
        return self.name or "(no group)"

    @property
    def query(self) -> str:
        return urlencode({"group": self.name})

    @property
    def height(self) -> int:
        return self.bars[-1].y + self.bars[-1].height if self.bars else 0

    @property
    def hidden(self) -> int:
        return 0 if self.folded else self.total - len(self.bars)

    @property
    def last(self) -> int:
        return self.first + len(self.bars)

    @property
    def next_query(self) -> str | None:
        """The next page of bars, if there is one."""
        return urlencode({"group": self.name, "start": str(self.last)}) if self.last < self.total else None

    @property
    def previous_query(self) -> str | None:
        return (
            urlencode({"group": self.name, "start": str(max(0, self.first - BARS_PER_GROUP))}) if self.first else None
        )


@dataclass
class Timeline:
    run: Run
    span: Span | None  # None until a task was submitted
    line: Line
    groups: list[GroupTimeline]
    live: bool

    @property
    def total_seconds(self) -> float:
        return self.span.seconds if self.span else 0.0


def load_rows(run: Run) -> list[Row]:
    rows = Task.objects.filter(run=run).order_by("position")
    found: list[Row] = list(rows.values_list("task_id", "name", "state", "submitted_at", "started_at", "finished_at"))
    return found


def run_span(run: Run, rows: Iterable[Row], now: datetime) -> Span | None:
    starts = [moment for row in rows for moment in (row[3], row[4]) if moment is not None]
    if not starts:
        return None
    end = run.finished_at if run.is_finished and run.finished_at else now
    latest_finish = max((row[5] for row in rows if row[5] is not None), default=None)
    if latest_finish is not None and latest_finish > end:
        end = latest_finish
    return Span(min(starts), max(end, min(starts) + timedelta(seconds=1)))


def running_line(rows: Sequence[Row], span: Span | None, now: datetime) -> Line:
    """The most tasks running at once in each of BUCKETS slices of the span."""
    if span is None:
        return Line("", 0)
    peaks = [0] * BUCKETS
    width = span.seconds / BUCKETS
    changes: list[tuple[datetime, int]] = []
    for _, _, _, _, started, finished in rows:
        if started is not None:
            changes += [(started, 1), (finished or now, -1)]
    running = 0
    for moment, step in sorted(changes, key=lambda change: (change[0], change[1])):
        running += step
        if step > 0:
            bucket = min(BUCKETS - 1, int((moment - span.start).total_seconds() / width))
            peaks[bucket] = max(peaks[bucket], running)
    _carry_running(peaks, rows, span, width, now)
    return _as_line(peaks)


def _carry_running(peaks: list[int], rows: Sequence[Row], span: Span, width: float, now: datetime) -> None:
    """A bucket with no start in it still shows what was running through it."""
    through = [0] * (BUCKETS + 1)
    for _, _, _, _, started, finished in rows:
        if started is None:
            continue
        first = int(max(0.0, (started - span.start).total_seconds()) / width)
        last = int(max(0.0, ((finished or now) - span.start).total_seconds()) / width)
        if last > first:  # running across the boundary into bucket first+1 .. last
            through[min(first + 1, BUCKETS)] += 1
            through[min(last, BUCKETS)] -= 1
    running = 0
    for bucket in range(BUCKETS):
        running += through[bucket]
        peaks[bucket] = max(peaks[bucket], running)


def _as_line(peaks: list[int]) -> Line:
    peak = max(peaks, default=0)
    if not peak:
        return Line("", 0)
    step = 1000 / BUCKETS
    points = []
    for bucket, value in enumerate(peaks):
        y = 100 - value * 100 / peak
        points += [f"{bucket * step:.1f},{y:.1f}", f"{(bucket + 1) * step:.1f},{y:.1f}"]
    return Line(" ".join(points), peak)


def bar_size(count: int) -> tuple[int, int]:
    """(height, gap) in px of the bars of a group of ``count`` tasks."""
    for most, height, gap in BAR_SIZES:
        if count <= most:
            return height, gap
    return BAR_SIZES[-1][1:]


def bars(rows: Sequence[Row], span: Span, now: datetime) -> list[Bar]:
    drawn: list[Bar] = []
    height, gap = bar_size(min(len(rows), BARS_PER_GROUP))
    for task_id, name, state, submitted, started, finished in rows[:BARS_PER_GROUP]:
        if submitted is None and started is None:
            continue  # never reached the scheduler: nothing to draw
        queued_from = submitted or started
        queued_to = started or finished or now
        ran_to = (finished or now) if started else None
        y = len(drawn) * (height + gap)
        wait_x = span.x(queued_from) if queued_from else 0.0
        run_x = span.x(started) if started else 0.0
        drawn.append(
            Bar(
                task_id=task_id,
                state=state,
                y=y,
                height=height,
                wait_x=wait_x,
                wait_w=max(0.0, span.x(queued_to) - wait_x) if queued_from else 0.0,
                run_x=run_x,
                run_w=max(0.2, span.x(ran_to) - run_x) if started and ran_to else 0.0,
                title=_bar_title(task_id, name, state, queued_from, started, ran_to),
            )
        )
    return drawn


def _bar_title(
    task_id: str, name: str, state: str, queued: datetime | None, started: datetime | None, ended: datetime | None
) -> str:
    parts = [f"{task_id} · {name} · {state}"]
    if queued and started:
        parts.append(f"waited {format_duration((started - queued).total_seconds()) or '0s'}")
    if started and ended:
        parts.append(f"ran {format_duration((ended - started).total_seconds()) or '0s'}")
    return ", ".join(parts)


def by_group(rows: Sequence[Row]) -> dict[str, list[Row]]:
    groups: dict[str, list[Row]] = {}
    for row in rows:
        groups.setdefault(task_group(row[0]), []).append(row)
    return groups


def build_timeline(run: Run, now: datetime | None = None) -> Timeline:
    """The whole picture of a run: its line, and each group folded or with its bars."""
    now = now or timezone.now()
    rows = load_rows(run)
    span = run_span(run, rows, now)
    fold_all = len(rows) > OPEN_TASKS
    groups = []
    for name, members in by_group(rows).items():
        folded = span is None or fold_all or len(members) > BARS_INLINE
        counts = Counter(row[2] for row in members)
        group = GroupTimeline(name, len(members), running_line(members, span, now), folded=folded, counts=counts)
        if not folded and span is not None:
            group.bars = bars(members, span, now)
        groups.append(group)
    return Timeline(run, span, running_line(rows, span, now), groups, live=not run.is_finished)


def build_group(run: Run, name: str, start: int = 0, now: datetime | None = None) -> GroupTimeline | None:
    """Up to BARS_PER_GROUP bars of one group from its ``start``-th task, on the whole
    run's axis (loaded when a folded group opens, and page by page after that)."""
    now = now or timezone.now()
    rows = load_rows(run)
    span = run_span(run, rows, now)
    members = by_group(rows).get(name)
    if members is None:
        return None
    start = min(max(start, 0), max(len(members) - 1, 0))
    group = GroupTimeline(name, len(members), Line("", 0), first=start)
    if span is not None:
        group.bars = bars(members[start:], span, now)
    return group
