"""A fresh server's first minute: start-up work in one background thread, in the order learners need it."""
from __future__ import annotations

import logging
import threading
import time

from core.analysis.projection import warm_umap
from core.weights import zoo
from explainers.page import serving

FIRST_MODEL = "tiny-gpt-char"  # what a page opens with while the default model is prepared on a fresh server


def start_model(default: str) -> str:
    """The model a page opens with: the default once it loads in seconds, a tiny one while it is prepared."""
    return default if zoo.ready(default) else FIRST_MODEL


def preparing_note(default: str, opened: str) -> str:
    return (f"**{default}** is being prepared for its first use on this server (once, under a minute), so this page "
            f"opened with **{opened}**. Pick {default} in Model whenever you like.") if opened != default else ""


def warm_up(default_model: str | None, tabs: list, begun: float) -> None:
    """The default model first (SmolLM2's first start converts its GGUF in a low-priority process of its own:
    pages open with a tiny model meanwhile), then, once the first page has drawn, each tab's own `warm_up()` and
    UMAP's compile, which hold the GIL for seconds: they wait for a first page or request (at most a minute),
    then for 3 s without one. On a ZeroGPU Space every offline model loads here, in the main process, as a
    request's forked GPU worker sees only what was loaded at start."""
    def run():
        names = [default_model or "smollm2-135m"]
        if serving.zero_gpu():
            names += [name for name, problem in zoo.available().items() if problem is None and name not in names
                      and not zoo.SPECS[name].source.startswith("Hugging Face hub")]  # hub-only ones: when asked
        for name in names:
            if zoo.available().get(name) is None:
                try:
                    zoo.convert_apart(name)
                    zoo.load(name)
                except Exception:  # a request will meet the same problem and say it plainly
                    logging.getLogger("explainer").exception("preparing %s at start failed", name)
        waited = time.monotonic()
        while time.monotonic() - waited < 60 and (serving.last_call[0] == 0 or
                                                  time.monotonic() - serving.last_call[0] < 3):
            time.sleep(0.5)
        for module in tabs:
            if hasattr(module, "warm_up"):
                module.warm_up()
        warm_umap()
        print(f"start-up work done, {time.monotonic() - begun:.0f} s after the start", flush=True)
    threading.Thread(target=run, daemon=True, name="warm-up").start()
