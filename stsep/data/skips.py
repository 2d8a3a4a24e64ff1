"""Counting the videos that could not be decoded, and the limit on them.

A damaged video costs its clip, never the epoch: the decoder logs one warning
naming the file, the file is recorded here, and the run goes on. When the
unreadable videos of a split exceed ``max_unreadable_fraction`` of it, the run
stops with :class:`UnreadableFractionError`.

:class:`SkipLog` keeps the record in one process. :class:`SkipCounter` wraps it
in a named Ray actor, so the decoding actors of a Ray Data pipeline share one
record and the training loop can read it (:func:`read_skip_report`) to log the
count and the file list to MLflow.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import ray

__all__ = [
    "SKIP_COUNTER_NAMESPACE",
    "SkipCounter",
    "SkipLog",
    "SkipReport",
    "UnreadableFractionError",
    "find_unreadable_fraction_error",
    "get_skip_counter",
    "read_skip_report",
    "skip_counter_name",
]

logger = logging.getLogger(__name__)

# Ray namespace of the named skip counters. Ray Data and Ray Train actors do
# not always run in the driver's namespace, so the name alone may not resolve.
SKIP_COUNTER_NAMESPACE = "stsep"


class UnreadableFractionError(RuntimeError):
    """More videos of a split are unreadable than the configured limit allows."""

    def __init__(self, *, split: str, count: int, total: int, limit: float, files: tuple[str, ...] = ()) -> None:
        self.split = split
        self.count = count
        self.total = total
        self.limit = limit
        self.files = files
        fraction = count / total if total else 1.0
        listed = ", ".join(files[:5]) + (" ..." if len(files) > 5 else "")
        super().__init__(
            f"{count} of {total} videos in split {split!r} are unreadable ({fraction:.1%}), "
            f"more than max_unreadable_fraction={limit:g}; repair or remove them from the "
            f"manifest, or raise ClipConfig.max_unreadable_fraction. Files: {listed}"
        )

    def __reduce__(self):
        return (
            _rebuild_fraction_error,
            (self.split, self.count, self.total, self.limit, self.files),
        )


def find_unreadable_fraction_error(
    error: BaseException, *, skip_counter: str | ray.actor.ActorHandle | None = None
) -> UnreadableFractionError | None:
    """Return the :class:`UnreadableFractionError` behind an error from a clip pipeline.

    Ray Data re-raises a decoder's exception as
    ``RayTaskError(UserCodeException)`` (Ray 2.60) that keeps the message but
    not the original object. This function follows ``cause``, ``__cause__``
    and ``__context__`` first. When that finds nothing and ``skip_counter`` is
    given, it queries the split's skip counter for an exceeded limit.

    Args:
        error: The exception raised while iterating the dataset.
        skip_counter: Name or handle of the split's :class:`SkipCounter`.

    Returns:
        The error, or None when the failure had another cause.
    """
    seen = set()
    pending: list[BaseException | None] = [error]
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, UnreadableFractionError):
            return current
        pending += [getattr(current, "cause", None), current.__cause__, current.__context__]
    if skip_counter is None:
        return None
    counter = _counter(skip_counter)
    return ray.get(counter.error.remote())


def _rebuild_fraction_error(split, count, total, limit, files):
    return UnreadableFractionError(split=split, count=count, total=total, limit=limit, files=files)


@dataclass(frozen=True)
class SkipReport:
    """The unreadable videos of one split.

    Attributes:
        split: Split name.
        total: Videos in the split.
        files: Unreadable video paths, sorted.
        reasons: Reason per file (``missing``, ``timeout`` ...), same order.
        skipped_clips: Clips dropped so far. A file skipped in several
            epochs or views counts each time.
    """

    split: str
    total: int
    files: tuple[str, ...] = ()
    reasons: tuple[str, ...] = ()
    skipped_clips: int = 0

    @property
    def count(self) -> int:
        """Number of distinct unreadable videos."""
        return len(self.files)

    @property
    def fraction(self) -> float:
        """Unreadable videos as a fraction of the split (0 for an empty split)."""
        return self.count / self.total if self.total else 0.0


@dataclass
class SkipLog:
    """Record of unreadable videos in one process.

    Args:
        split: Split name, for messages.
        total: Videos in the split.
        max_unreadable_fraction: Largest allowed fraction of unreadable videos.
    """

    split: str
    total: int
    max_unreadable_fraction: float = 0.05
    _reasons: dict[str, str] = field(default_factory=dict)
    _skipped_clips: int = 0

    def record(self, path: str, reason: str, *, clip: bool = True) -> bool:
        """Record that ``path`` is unreadable.

        Args:
            path: The video's path or URI.
            reason: Short category, e.g. ``missing`` or ``timeout``.
            clip: Whether a clip was dropped (False for a video left out
                before decoding, e.g. marked unreadable in the manifest).

        Returns:
            True when ``path`` was not recorded before (the caller logs its
            one warning then).
        """
        self._skipped_clips += int(clip)
        if path in self._reasons:
            return False
        self._reasons[path] = reason
        return True

    def report(self) -> SkipReport:
        """Return the current :class:`SkipReport`."""
        files = tuple(sorted(self._reasons))
        return SkipReport(
            split=self.split,
            total=self.total,
            files=files,
            reasons=tuple(self._reasons[path] for path in files),
            skipped_clips=self._skipped_clips,
        )

    def exceeded(self) -> bool:
        """Return whether the unreadable fraction is above the limit."""
        return len(self._reasons) > self.max_unreadable_fraction * self.total

    def check(self) -> None:
        """Raise :class:`UnreadableFractionError` when the limit is exceeded."""
        if self.exceeded():
            report = self.report()
            raise UnreadableFractionError(
                split=self.split,
                count=report.count,
                total=self.total,
                limit=self.max_unreadable_fraction,
                files=report.files,
            )


@ray.remote(num_cpus=0)
class SkipCounter:
    """Ray actor holding the :class:`SkipLog` of one split, shared by decoders."""

    def __init__(self, *, split: str, total: int, max_unreadable_fraction: float) -> None:
        self._log = SkipLog(split=split, total=total, max_unreadable_fraction=max_unreadable_fraction)

    def reset(self, *, split: str, total: int, max_unreadable_fraction: float) -> None:
        self._log = SkipLog(split=split, total=total, max_unreadable_fraction=max_unreadable_fraction)

    def record(self, path: str, reason: str, *, clip: bool = True) -> tuple[bool, bool]:
        """Record an unreadable video (see :meth:`SkipLog.record`).

        Returns:
            ``(new_file, limit_exceeded)``.
        """
        return self._log.record(path, reason, clip=clip), self._log.exceeded()

    def report(self) -> SkipReport:
        return self._log.report()

    def error(self) -> UnreadableFractionError | None:
        """Return the error to raise when the limit is exceeded, else None."""
        try:
            self._log.check()
        except UnreadableFractionError as error:
            return error
        return None


def skip_counter_name(split: str) -> str:
    """Return the default actor name of the skip counter of ``split``."""
    return f"stsep-skips-{split}"


def get_skip_counter(
    name: str, *, split: str, total: int, max_unreadable_fraction: float
) -> ray.actor.ActorHandle:
    """Create the named skip counter, or reset the existing one of that name."""
    counter = SkipCounter.options(name=name, namespace=SKIP_COUNTER_NAMESPACE, get_if_exists=True).remote(
        split=split, total=total, max_unreadable_fraction=max_unreadable_fraction
    )
    ray.get(counter.reset.remote(split=split, total=total, max_unreadable_fraction=max_unreadable_fraction))
    return counter


def read_skip_report(name_or_counter: str | ray.actor.ActorHandle) -> SkipReport:
    """Read the :class:`SkipReport` of a skip counter.

    Args:
        name_or_counter: The counter's actor name (``skip_counter_name(split)``
            unless ``build_clip_dataset`` was given another) or its handle.
            Works from any process of the Ray job, e.g. a Ray Train worker.
    """
    return ray.get(_counter(name_or_counter).report.remote())


def _counter(name_or_counter: str | ray.actor.ActorHandle) -> ray.actor.ActorHandle:
    if isinstance(name_or_counter, str):
        return ray.get_actor(name_or_counter, namespace=SKIP_COUNTER_NAMESPACE)
    return name_or_counter
