"""What a person sees while a long command runs: rich progress bars.

On a terminal a bar moves as the work goes; on a stream that is not one (output piped to a file or a log) rich
draws nothing until the bar ends and then writes it once, so a log gets one line per bar, without carriage returns.
Photo extraction shows one bar (mmgbm.features.images); training shows one per stage of each target (`StageBars`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from functools import partial

from rich.console import Console
from rich.progress import BarColumn, Progress, ProgressColumn, Task, TextColumn, TimeElapsedColumn
from rich.text import Text


@contextmanager
def progress_bar(
    description: str, total: float | None, *columns: ProgressColumn, console: Console | None = None
) -> Iterator[Callable[..., None]]:
    """One bar drawn with `columns` on `console` (default: rich's own, on stdout); yields `update(advance=,
    completed=, total=)` of its task."""
    with Progress(*columns, console=console) as bar:
        task = bar.add_task(description, total=total)
        yield partial(bar.update, task)


class _Count(ProgressColumn):
    """'done/total', left out for a stage of one step (reading, saving), where it would only say 0/1 or 1/1."""

    def render(self, task: Task) -> Text:
        if task.total is None or task.total <= 1:
            return Text("")
        return Text(f"{int(task.completed)}/{int(task.total)}")


def _stage_columns(with_bar: bool) -> tuple[ProgressColumn, ...]:
    """New columns for each bar (a column may cache what it drew per task id, and every bar's task is number 0);
    `with_bar` false leaves out the bar itself, which in a log is only a row of dashes taking the count's room."""
    bar = (BarColumn(),) if with_bar else ()
    return TextColumn("{task.description}"), *bar, _Count(), TimeElapsedColumn()


class StageBars:
    """A `progress(stage, done, total)` callback that shows each stage as its own bar with its count and time:
    a stage ends, its bar left as one line, when another stage begins, when a line is said (`say`) or on `close`.
    A stage told again after another one began gets a bar of its own."""

    def __init__(self, console: Console | None = None):
        self.console = console or Console()
        self._bar = ExitStack()
        self._stage: str | None = None
        self._update: Callable[..., None] = lambda **task: None

    def __call__(self, stage: str, done: int, total: int) -> None:
        if stage != self._stage:
            self.close()
            columns = _stage_columns(with_bar=self.console.is_terminal)
            self._update = self._bar.enter_context(progress_bar(stage, total, *columns, console=self.console))
            self._stage = stage
        self._update(completed=done, total=total)

    def say(self, line: str) -> None:
        """Print `line` after the stage so far, which it ends; one line in a log however long (a terminal wraps
        it)."""
        self.close()
        self.console.print(line, highlight=False, soft_wrap=True)

    def close(self) -> None:
        self._bar.close()
        self._stage = None

    def __enter__(self) -> StageBars:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
