"""The README's recipe "How to add a tab", followed: a module with TITLE and build(page), one line in CHAPTERS.
The tab draws when a link opens it, its widget is a link setting, and its endpoint is in the API list."""
import sys
import types

import gradio as gr
import pytest

from core.inputs import text_to_tokens
from explainers.activations import run
from explainers.chapters import CHAPTERS
from explainers.draw.figures import figure
from explainers.page.inputs import get_model
from explainers.page.tab import View


def update(model_name: str, text: str):
    """The residual stream's length at the last token, layer by layer: read from the recorded forward."""
    model = get_model(model_name)
    tokens, note = text_to_tokens(model, text)
    forward = run(model_name, tuple(t.id for t in tokens))
    lengths = [float(forward.cache[f"blocks.{i}.hook_resid_post"][-1].norm()) for i in range(model.cfg.n_layers)]
    return figure([dict(type="scatter", y=lengths, name="|resid|")], title="Residual stream length"), note


def build(page) -> View:
    text = gr.Textbox(label="Text", value="To be or not")
    plot, note = gr.Plot(), gr.Markdown()
    page.on([text.submit], update, [page.model, text], [plot, note], api="extra")
    return View(links={"text": text}, draws=[page.event(update, [page.model, text], [plot, note])])


@pytest.fixture(scope="module")
def extra():
    module = types.ModuleType("explainers.tabs.extra")  # what explainers/tabs/extra.py would be
    module.TITLE, module.build, module.update = "Extra", build, update
    sys.modules[module.__name__] = module
    yield module
    del sys.modules[module.__name__]


@pytest.fixture(scope="module")
def extra_demo(extra):
    import app
    return app.build_app("tiny-gpt-char", chapters=[*CHAPTERS, ("Extra", [extra])])


def test_the_extra_tab_links_draws_when_a_link_opens_it_and_is_in_the_api(extra_demo):
    demo = extra_demo
    views = demo.views
    assert views.links["extra.text"].label == "Text"
    applied = views.apply("?tab=extra&text=All the world")
    assert applied[views.links["extra.text"]] == "All the world"
    screen = applied[views.screen]
    assert screen["tabs"][screen["chapter"]] == "extra"
    looked = views.look(screen, applied[views.generation], {})
    assert [tab for tab, request in views.requests.items() if request in looked] == ["extra"]  # it alone draws
    request = views.requests["extra"]
    wired = [f for f in demo.fns.values() if (request._id, "change") in [(t[0], t[1]) for t in f.targets]]
    assert len(wired) == 1  # the request State's change takes the page's text (in the browser), then the View's draws
    assert wired[0].fn is None and "shared || own" in wired[0].js and wired[0].outputs == [views.links["extra.text"]]
    draw = next(f for f in demo.fns.values() if f.trigger_after == wired[0]._id and f.trigger_only_on_success)
    fig, note = draw.fn("tiny-gpt-char", "All the world", False)
    assert len(fig.data[0].y) == get_model("tiny-gpt-char").cfg.n_layers and fig.data[0].y[-1] > 0
    assert "/extra" in demo.get_api_info()["named_endpoints"]
