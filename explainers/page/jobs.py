"""Long jobs (training, fine-tuning, generation, patching sweeps, quantization): one mechanism for all of them.

A job is a generator function `fn(*inputs, job)` that yields what it has to show and asks `job.should_stop()`
before each step. `Jobs(page, cancel_button, group)` wires it for a tab:
- per session: the session's Job lives in a gr.State, made when a start button is pressed, before the run
  joins the queue, so Cancel works while it waits in line too; closing the page stops it (delete_callback);
- Cancel sets the job's stop flag, and the run says where it stopped (Gradio's own cancels= would end the
  generator between two yields, with no word of what was done);
- the time cap is the group's (explainers.page.groups), counted from when the job starts to run;
- the queue group runs one job at a time and never holds up the other tabs' model events;
- progress is what the job yields (its status line) and gr.Progress where fn declares one.
"""
from __future__ import annotations

import functools
import inspect
import math
import threading
import time
from dataclasses import dataclass, field

import gradio as gr
from gradio.events import Dependency

from explainers.page.groups import GROUPS

WAITING = "Starting… One job of this kind runs at a time on this server: if another learner's is going, yours " \
          "waits in line, and your place in the line shows below."


@dataclass
class Job:
    """One session's run: Cancel sets `stop`; a finished run may leave a `result` for later (Keep)."""
    cap: float = math.inf                        # seconds it may run once started
    stop: threading.Event = field(default_factory=threading.Event)
    started: float | None = None                 # time.monotonic() when it began to run
    ended: bool = False
    result: object = None

    @property
    def seconds(self) -> float:
        return 0.0 if self.started is None else time.monotonic() - self.started

    def timed_out(self) -> bool:
        return self.started is not None and self.seconds > self.cap

    def should_stop(self) -> bool:
        """Asked before every step: Cancel was pressed, or the cap has passed."""
        return self.stop.is_set() or self.timed_out()

    def why(self, done: str) -> str:
        """Why the run stopped early, with what it had done ("after 40 steps"), or "" if it did not."""
        if self.stop.is_set():
            return f"**Cancelled** {done}."
        if self.timed_out():
            return f"Stopped at the {self.cap:.0f} s cap for a run on this shared server, {done}."
        return ""


def cancel(job) -> None:
    if isinstance(job, Job):
        job.stop.set()


def running(fn, group: str, own: bool = False):
    """fn as the queue runs it: its `job` argument a Job of the group's cap (a fresh one for an API call, which has
    no session's), started now and marked ended however the run ends. own=True: a fresh Job every call, and `job` is
    not among the inputs Gradio sends (a View's draw)."""
    signature = inspect.signature(fn)

    @functools.wraps(fn)
    def run(*args, **kwargs):
        bound = signature.bind_partial(*args, **kwargs)
        job = bound.arguments.get("job")
        job = job if isinstance(job, Job) else Job(GROUPS[group].cap)
        bound.arguments["job"] = job
        job.started = time.monotonic()
        try:
            yield from fn(*bound.args, **bound.kwargs)
        finally:
            job.ended = True
    if own:
        run.__signature__ = signature.replace(parameters=[p for p in signature.parameters.values() if p.name != "job"])
    return run


class Jobs:
    """A tab's long jobs of one queue group, with one Cancel button and one job per session."""

    def __init__(self, page, cancel_button: gr.Button, group: str):
        self.page, self.group = page, group
        self.state = gr.State(None, delete_callback=cancel)  # Gradio drops it some time after the page closes
        cancel_button.click(cancel, self.state, None, queue=False, api_visibility="private")

    def on(self, start, fn, inputs: list, outputs: list, api: str, note=None) -> None:
        """A start button (or a list of triggers: `text.submit`, `slider.release`, an example's `load_input_event`)
        starts fn(*inputs, job) in the group's queue, streaming to outputs; `note` says it is waiting. The widgets'
        triggers share one endpoint, named `api`; an event to follow gets one of its own, unlisted."""
        cap = GROUPS[self.group].cap
        new = dict(fn=(lambda: (Job(cap), WAITING)) if note is not None else (lambda: Job(cap)), inputs=None,
                   outputs=[self.state, note] if note is not None else self.state, queue=False,
                   api_visibility="private")
        triggers = [start.click] if isinstance(start, gr.Button) else start
        listeners = [t for t in triggers if not isinstance(t, Dependency)]
        if listeners:
            gr.on(listeners, **new).then(**self.event(fn, inputs, outputs, api, session=True))
        for dependency in [t for t in triggers if isinstance(t, Dependency)]:
            dependency.then(**new).then(**self.event(fn, inputs, outputs, session=True))

    def event(self, fn, inputs: list, outputs: list, api: str | None = None, session: bool = False) -> dict:
        """fn(*inputs, job) as an event of the group's queue and cap: with the session's job (what a start runs, so
        Cancel reaches it), or a job of its own (a View's draw: the tab's run as it comes on screen)."""
        return self.page.event(running(fn, self.group, own=not session), [*inputs, self.state] if session else inputs,
                               outputs, remember=False, group=self.group, api=api)
