"""The LLM explainer: `python app.py [--host H] [--port P] [--device D] [--model M]`."""
from __future__ import annotations

import argparse
import os
import socket

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")


def hub_reachable(timeout: float = 1.5) -> bool:
    try:
        socket.create_connection(("huggingface.co", 443), timeout=timeout).close()
        return True
    except OSError:
        return False


if "HF_HUB_OFFLINE" not in os.environ and not os.environ.get("SPACE_ID") and not hub_reachable():
    os.environ["HF_HUB_OFFLINE"] = "1"  # no hub: never wait on it

import gradio as gr  # noqa: E402

from core import zoo  # noqa: E402
from core.device import describe, pick_device  # noqa: E402
from core.projection import warm_umap  # noqa: E402
from explainers import TABS  # noqa: E402
from explainers.common import model_choices, unavailable_note  # noqa: E402


def build_app(default_model: str | None = None) -> gr.Blocks:
    choices = model_choices()
    names = [name for _, name in choices]
    default = default_model if default_model in names else ("smollm2-135m" if "smollm2-135m" in names else names[0])
    with gr.Blocks(title="LLM internals, live") as demo:
        gr.Markdown("# LLM internals, live\nEvery picture is computed now by a real model running on "
                    f"**{describe(pick_device())}**.")
        model_picker = gr.Dropdown(choices, value=default, label="Model")
        note = unavailable_note()
        if note:
            gr.Markdown(note)
        for tab in TABS:
            tab.build(model_picker, demo)
    return demo


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="0.0.0.0" if os.environ.get("SPACE_ID") else "127.0.0.1")
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", 7860)))
    parser.add_argument("--device", help="cpu, cuda or mps (default: the best available)")
    parser.add_argument("--model", help=f"model selected at start: {', '.join(zoo.SPECS)}")
    parser.add_argument("--share", action="store_true", help="also serve through a public Gradio link")
    args = parser.parse_args()
    if args.device:
        try:
            os.environ["EXPLAINER_DEVICE"] = str(pick_device(args.device))
        except ValueError as e:
            parser.error(str(e))
    if args.model and args.model not in zoo.SPECS:
        parser.error(f"unknown model {args.model!r}; choose one of {', '.join(zoo.SPECS)}")
    warm_umap()  # UMAP compiles for ~12 s on first use: pay that in the background now
    demo = build_app(args.model)
    demo.queue(default_concurrency_limit=2).launch(server_name=args.host, server_port=args.port, share=args.share)


if __name__ == "__main__":
    main()
