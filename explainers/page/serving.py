"""How Gradio calls the tabs: plain functions in the tabs, one wrapper where Gradio calls in.

A tab's handlers are plain functions: they check their input (raising core's InputError with a
sentence), compute and draw. `handler` wraps one once, where Gradio calls it (explainers.page.tab
wires it to its events):
- the answer cache: a handler whose answer depends only on its inputs answers a repeated
  question from memory (the last ANSWERS_KEPT answers of all handlers);
- lecture style: the session's lecture-mode box is the last input, and figures are restyled
  (a copy: a remembered answer is shared) when it is on;
- errors: an InputError becomes a message for the user; anything else is a bug, logged with its
  traceback and shown as "something went wrong";
- ZeroGPU: on such a Space the handler holds a GPU while it runs, for its queue group's booking.
"""
from __future__ import annotations

import collections
import contextlib
import functools
import importlib.util
import inspect
import logging
import sys
import threading
import time

import gradio as gr
import plotly.graph_objects as go

from core.inputs import InputError
from explainers.draw.figures import lecture_style

log = logging.getLogger("explainer")
ANSWERS_KEPT = 256
last_call = [0.0]  # time.monotonic() of the latest handler call or page load: start-up work waits for a lull


def shared(maxsize: int = 32, key=lambda args: args):
    """Like functools.lru_cache, and a call that arrives while the same call is running waits for that answer
    instead of computing it again: a class pressing the same example at once runs the model once.
    Answers are shared, so nothing may change them afterwards. Errors are not kept; a call whose key is
    None is not kept either."""
    def decorate(fn):
        answers: collections.OrderedDict = collections.OrderedDict()
        running: dict[tuple, threading.Event] = {}
        lock = threading.Lock()

        @functools.wraps(fn)
        def wrapper(*args):
            k = key(args)
            if k is None:
                return fn(*args)
            with lock:
                if k in answers:
                    answers.move_to_end(k)
                    return answers[k]
                first = k not in running
                done = running.setdefault(k, threading.Event())
            if not first:
                done.wait()
                return wrapper(*args)  # remembered now, or the first call failed and this one tries
            try:
                answer = fn(*args)
                with lock:
                    answers[k] = answer
                    if len(answers) > maxsize:
                        answers.popitem(last=False)
                return answer
            finally:
                with lock:
                    del running[k]
                done.set()

        wrapper.cache_clear = answers.clear
        wrapper.peek = lambda *args: answers.get(key(args))  # the remembered answer, or None: computes nothing
        return wrapper
    return decorate


def _answer_key(fn, values) -> tuple | None:
    """(handler, its inputs) as a cache key: lists (a multi-select) become tuples; None when one cannot be a key."""
    key = (fn, *(tuple(v) if isinstance(v, list) else v for v in values))
    try:
        hash(key)
    except TypeError:
        return None
    return key


@shared(ANSWERS_KEPT, key=lambda args: _answer_key(args[0], args[2]))
def _answer(fn, special: dict, values: list):
    """fn's answer to these inputs; Gradio's own arguments (a progress bar, new for every call) are handed on
    but are not part of the question."""
    return fn(*values, **special)


def forget_answers() -> None:
    """Drop every remembered answer (benchmarks time the work, not the memory)."""
    _answer.cache_clear()


@contextlib.contextmanager
def plain_errors(name: str):
    """Bad input becomes the user's message; anything else is a bug: logged once with its traceback, and
    the user told plainly (Gradio shows its own exceptions as a bare "Error")."""
    try:
        yield
    except InputError as e:  # a refusal, not a failure: no traceback in the server's log
        raise gr.Error(str(e), print_exception=False) from None
    except Exception as e:
        log.exception("handler %s failed", name)
        raise gr.Error(f"Something went wrong ({type(e).__name__}). Try a shorter input or another model.",
                       print_exception=False) from None


def styled(result, lecture: bool):
    """The figures of an answer in lecture style (copies), or the answer itself."""
    if not lecture:
        return result
    if isinstance(result, go.Figure):
        return lecture_style(go.Figure(result))
    if isinstance(result, tuple):
        return tuple(lecture_style(go.Figure(r)) if isinstance(r, go.Figure) else r for r in result)
    return result


def _special(p: inspect.Parameter) -> bool:
    """A parameter Gradio fills itself: a progress bar or the request."""
    return isinstance(p.default, gr.Progress) or p.annotation in (gr.Request, "gr.Request")


def on_gpu(fn, seconds: int = 30):
    """fn holding a GPU while it runs, on a ZeroGPU Space: there the `spaces` package is installed and a process
    has a GPU only inside a function decorated with `spaces.GPU` (the models are moved to CUDA at start, see
    app.warm_up). Anywhere else `spaces` is absent and fn is returned as it is."""
    if not zero_gpu():
        return fn
    import spaces
    return functools.wraps(fn)(spaces.GPU(duration=seconds)(fn))


def zero_gpu() -> bool:
    """Whether this is a ZeroGPU Space (the `spaces` package is installed)."""
    return importlib.util.find_spec("spaces") is not None if "spaces" not in sys.modules else True


def handler(fn, remember: bool = True, gpu_seconds: int = 30):
    """fn as Gradio calls it, with the session's lecture flag as one more input after fn's own; on a ZeroGPU
    Space fn runs on the GPU (`on_gpu`)."""
    params = list(inspect.signature(fn).parameters.values())
    inputs = [p for p in params if not _special(p)]
    lecture = inspect.Parameter("lecture", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=False)
    signature = inspect.Signature(inputs + [lecture] + [p for p in params if _special(p)])

    def split(args, kwargs):
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        on = bool(bound.arguments.pop("lecture"))
        special = {p.name: bound.arguments[p.name] for p in params if _special(p)}
        values = [bound.arguments[p.name] for p in inputs]
        return values, special, on

    run = on_gpu(fn, gpu_seconds)

    def answers(args, kwargs):
        """fn's answer, or each answer a generator yields, styled; failures turned into messages."""
        last_call[0] = time.monotonic()
        values, special, on = split(args, kwargs)
        with plain_errors(fn.__name__):
            if inspect.isgeneratorfunction(fn):
                for result in run(*values, **special):
                    yield styled(result, on)
            else:
                yield styled(_answer(run, special, values) if remember else run(*values, **special), on)

    if inspect.isgeneratorfunction(fn):  # Gradio streams the answers of a generator function
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            yield from answers(args, kwargs)
    else:
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            return next(answers(args, kwargs))
    wrapper.__signature__ = signature
    return wrapper
