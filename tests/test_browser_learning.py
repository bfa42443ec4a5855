"""The app in headless Chromium, the Learning chapter: each tab trains a short run, draws it, cancels and refuses bad
settings plainly."""

import pytest
from browser import WAIT, error_toasts, needs_chromium, open_link, settle, tab_panel, wait_for_text

pytestmark = [pytest.mark.slow, needs_chromium]


def run_and_cancel(page, steps, run, n: str) -> None:
    """A run of n steps started, then cancelled once under way: the tab says where it stopped, with no error."""
    steps.fill(n)
    steps.press("Enter")
    run.click()
    wait_for_text(page, "Step ")
    tab_panel(page).get_by_role("button", name="Cancel").click()
    wait_for_text(page, "Cancelled at step")
    settle(page)
    assert error_toasts(page) == []


def test_training_streams_its_default_run_cancels_keeps_and_refuses_bad_settings(fresh, url):
    fresh.goto(url + "?tab=training&model=tiny-gpt-char")
    fresh.get_by_role("tab", name="Training", exact=True, selected=True).wait_for(timeout=WAIT)
    settle(fresh)
    panel = tab_panel(fresh)
    panel.get_by_role("button", name="Train from scratch").click()
    fresh.wait_for_function("document.body.innerText.includes('tokens/s')", timeout=WAIT, polling=500)
    curves = panel.locator(".js-plotly-plot").filter(has_text="held-out")
    assert curves.locator(".scatterlayer .trace").count() == 3  # training batch, held-out, guessing uniformly
    assert panel.get_by_text("step 0", exact=True).count() == 1  # the untrained model's sample
    panel.get_by_role("button", name="Cancel").click()
    fresh.wait_for_function("document.body.innerText.includes('Cancelled after')", timeout=WAIT, polling=200)
    settle(fresh)
    panel.get_by_role("button", name="Keep this model for the other tabs").click()
    fresh.wait_for_function("document.body.innerText.includes('Kept as my-tiny-gpt-')", timeout=WAIT, polling=200)
    assert error_toasts(fresh) == []
    panel.get_by_label("Peak learning rate (0.0001 to 0.03)").fill("5")
    panel.get_by_role("button", name="Train from scratch").click()
    fresh.locator(".toast-body.error").first.wait_for(timeout=WAIT)
    assert "The learning rate must be from 0.0001 to 0.03" in "".join(error_toasts(fresh))



def test_fine_tuning_runs_draws_its_curves_cancels_and_refuses_bad_input_plainly(fresh, url):
    """A short run through the page (the default run's numbers are tests/test_finetune.py's)."""
    fresh.goto(url + "?tab=finetune")
    fresh.get_by_role("tab", name="Fine-tuning", exact=True, selected=True).wait_for(timeout=WAIT)
    settle(fresh)
    panel = tab_panel(fresh)
    run = panel.get_by_role("button", name="Fine-tune both ways")
    panel.get_by_text("Settings").click()
    steps = panel.get_by_label("number input for Steps")
    steps.fill("6")
    steps.press("Enter")
    run.click()  # tiny-gpt-char on the Constitution, full fine-tuning and LoRA side by side, 6 steps
    panel.get_by_text("Merged the adapter").wait_for(timeout=600_000)
    settle(fresh)
    assert panel.locator(".js-plotly-plot").count() == 3  # the curves, next-token probabilities, dW
    assert panel.locator(".js-plotly-plot").first.locator(".scatterlayer .trace").count() >= 5
    assert "ROUGE-L" in panel.inner_text() and "| before" not in panel.inner_text()  # tables drawn as tables
    assert error_toasts(fresh) == []
    run_and_cancel(fresh, steps, run, "1000")
    panel.get_by_role("radio", name="My own text (paste it below)").check()
    pasted = panel.get_by_role("textbox", name="Your text")
    for text, message in [("", "The corpus is empty"), ("abc", "paste at least"), ("x" * 5_000_000, "paste at most")]:
        pasted.fill(text)
        run.click()
        fresh.locator(".toast-body.error").filter(has_text=message).first.wait_for(timeout=WAIT)
    panel.get_by_role("radio", name="The Constitution of the United States").check()
    panel.get_by_label("Learning rate, full").fill("5")
    run.click()
    fresh.locator(".toast-body.error").filter(has_text="must be from").first.wait_for(timeout=WAIT)


def test_instruction_tuning_shows_the_template_replies_live_fine_tunes_and_refuses_bad_settings(fresh, url):
    """A short reply and a short SFT run through the page (the default run's numbers are tests/test_instruct.py's)."""
    fresh.goto(url + "?tab=instruct&model=tiny-gpt-char&n=6&steps=8")
    fresh.get_by_role("tab", name="Instruction tuning", exact=True, selected=True).wait_for(timeout=WAIT)
    panel = tab_panel(fresh)
    panel.get_by_text("reply starts here").wait_for(timeout=WAIT)  # the template, drawn when the tab opened
    assert "tiny-gpt-char** has no chat template" not in panel.inner_text()  # rendered as Markdown
    assert "has no chat template" in panel.inner_text() and panel.locator("span[title^='id 1:']").count() >= 3
    panel.get_by_role("button", name="Reply").click()
    fresh.wait_for_function("document.body.innerText.includes('6-token limit') || "
                            "document.body.innerText.includes('closed its turn')", timeout=WAIT, polling=300)
    assert panel.locator("span[title*='The five likeliest']").count() >= 1
    panel.get_by_role("button", name="Fine-tune on the pairs").click()
    fresh.wait_for_function("document.body.innerText.includes('Held-out response loss')", timeout=WAIT, polling=300)
    settle(fresh)
    assert "Finished" in panel.inner_text() and "Right:" in panel.inner_text()
    curves = panel.locator(".js-plotly-plot").filter(has_text="held-out pairs")
    assert curves.locator(".scatterlayer .trace").count() == 3
    assert error_toasts(fresh) == []
    panel.get_by_label("Peak learning rate (0.00001 to 0.01)").fill("5")
    panel.get_by_role("button", name="Fine-tune on the pairs").click()
    fresh.locator(".toast-body.error").filter(has_text="learning rate must be from").first.wait_for(timeout=WAIT)
    box = panel.get_by_label("Instruction", exact=True)
    box.fill("   ")
    box.press("Enter")
    fresh.locator(".toast-body.error").filter(has_text="Type an instruction first").first.wait_for(timeout=WAIT)
    assert fresh.console_errors == []
def test_preference_tuning_runs_a_short_dpo_cancels_and_refuses_bad_settings_plainly(fresh, url):
    """A short DPO run through the page (the default run's numbers are tests/test_preference.py's)."""
    fresh.goto(url + "?tab=preference")
    fresh.get_by_role("tab", name="Preference tuning", exact=True, selected=True).wait_for(timeout=WAIT)
    settle(fresh)
    panel = tab_panel(fresh)
    assert "Reward model" in panel.inner_text() and "chosen y_c" in panel.inner_text()  # RLHF's stages, the pairs
    steps = panel.get_by_label("number input for Steps")
    steps.fill("4")
    steps.press("Enter")
    run = panel.get_by_role("button", name="Run DPO")
    run.click()
    panel.get_by_text("Finished: 4 steps").wait_for(timeout=600_000)
    settle(fresh)
    assert panel.locator(".js-plotly-plot").first.locator(".scatterlayer .trace").count() >= 10
    text = panel.inner_text()
    assert "after DPO (the policy)" in text and "reward accuracy" in text and "| DPO loss" not in text
    assert error_toasts(fresh) == []
    run_and_cancel(fresh, steps, run, "300")
    panel.get_by_label("β (0.01 to 5)").fill("100")
    run.click()
    fresh.locator(".toast-body.error").filter(has_text="The beta must be from").first.wait_for(timeout=WAIT)
def test_data_parallelism_trains_on_two_processes_checks_the_weights_and_computes_memory(fresh, url):
    """A short run through the page (the default run's numbers are tests/test_parallel.py's), then the calculator."""
    open_link(fresh, url + "?tab=parallel&steps=10&batch=4&width=16&layers=1")
    panel = tab_panel(fresh)
    panel.get_by_text("31.4 GB").first.wait_for(timeout=WAIT)  # the calculator opens on the paper's example
    panel.get_by_role("button", name="Train on 2 processes").click()
    panel.get_by_text("The check").wait_for(timeout=300_000)
    settle(fresh)
    text = panel.inner_text()
    assert "Finished 10 steps" in text and "max |w_ranks − w_one process|" in text
    assert "each rank sends 2(N − 1)/N × that" in text
    assert "rank 1: windows 2 to 3" in text and error_toasts(fresh) == []
    run = panel.locator(".js-plotly-plot").filter(has_text="median time per step")
    assert run.locator(".scatterlayer .trace").count() == 3 and run.locator(".barlayer .trace").count() == 3
    panel.get_by_role("button", name="SmolLM2-135M on 8 GPUs").click()
    panel.get_by_text("Memory per GPU on 8 GPUs").wait_for(timeout=WAIT)
    assert "269 MB" in panel.inner_text()
    gpus = panel.get_by_label("GPUs (N)")
    gpus.fill("0")
    gpus.press("Enter")
    fresh.locator(".toast-body.error").filter(has_text="number of GPUs must be from 1").first.wait_for(timeout=WAIT)
    panel.get_by_label("Peak learning rate (0.0001 to 0.03)").fill("5")
    panel.get_by_role("button", name="Train on 2 processes").click()
    fresh.locator(".toast-body.error").filter(has_text="learning rate must be from").first.wait_for(timeout=WAIT)
def test_scaling_trains_a_short_ladder_from_a_link_moves_the_budget_and_calculates(fresh, url):
    """Three sizes of 20 steps through the page (the default ladder's numbers are tests/test_scaling.py's)."""
    open_link(fresh, url + "?tab=scaling&sizes=8,16,32&steps=20&budget=9")
    panel = tab_panel(fresh)
    panel.get_by_text("5.88 × 10").first.wait_for(timeout=WAIT)  # the calculator drew Chinchilla's numbers on opening
    panel.get_by_role("button", name="Train the ladder").click()
    fresh.wait_for_function("document.body.innerText.includes('Finished the ladder')", timeout=300_000, polling=500)
    settle(fresh)
    plots = panel.locator(".js-plotly-plot")
    assert plots.nth(0).locator(".scatterlayer .trace").count() == 4  # three sizes and the fitted power law
    assert "α =" in plots.nth(0).inner_text() and plots.nth(1).locator(".scatterlayer .trace").count() == 3
    assert "frontier" in plots.nth(2).inner_text() and "the best size is width" in panel.inner_text()
    budget = panel.get_by_label("number input for Compute budget: 10^x FLOPs")
    budget.fill("13")
    budget.press("Enter")
    panel.get_by_text("Its whole run cost").wait_for(timeout=WAIT)  # beyond every run: the best finished size
    for box, value in [("Parameters N", "135M"), ("Training tokens D", "2T")]:
        panel.get_by_label(box).fill(value)
    panel.get_by_label("Training tokens D").press("Enter")
    panel.get_by_text("C = 6ND = 1.62 × 10").wait_for(timeout=WAIT)
    assert error_toasts(fresh) == []
    panel.get_by_label("Parameters N").fill("banana")
    panel.get_by_label("Parameters N").press("Enter")
    fresh.locator(".toast-body.error").filter(has_text="must be a number such as 70e9").first.wait_for(timeout=WAIT)
    panel.get_by_label("Peak learning rate (0.0001 to 0.03)").fill("5")
    panel.get_by_role("button", name="Train the ladder").click()
    fresh.locator(".toast-body.error").filter(has_text="The learning rate must be from").first.wait_for(timeout=WAIT)
