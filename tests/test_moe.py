"""Mixture-of-experts routing: renormalised top-k, load balancing, interventions."""
import math

import torch

from core import HookedTransformer, ModelConfig
from core.model.moe import load_balancing_loss, route


def moe_model(**kw):
    torch.manual_seed(0)
    return HookedTransformer(ModelConfig(positions="rope", norm="rmsnorm", gated_ffn=True, act="silu", n_experts=4,
                                         top_k=2, bias=False, **kw)).eval()


def test_route_keeps_the_k_most_probable_experts_with_weights_summing_to_one():
    logits = torch.tensor([[2.0, 0.0, 1.0, -1.0]])
    weights, indices = route(logits, 2)
    assert indices.tolist() == [[0, 2]]
    p = torch.softmax(logits, -1)[0]
    torch.testing.assert_close(weights[0], torch.stack([p[0], p[2]]) / (p[0] + p[2]))


def test_load_balancing_loss_on_a_hand_made_case():
    # two tokens, two experts, top-1; token 0 certain of expert 0, token 1 split evenly
    logits = torch.log(torch.tensor([[1.0, 1e-9], [0.5, 0.5]]))
    indices = torch.tensor([[0], [0]])                 # both tokens go to expert 0
    # f = (1, 0); P = ((1 + .5) / 2, (0 + .5) / 2) = (.75, .25); loss = E * sum f P = 2 * .75
    assert math.isclose(load_balancing_loss(logits, indices, 2).item(), 1.5, rel_tol=1e-6)
    # perfectly even routing gives K
    even = torch.zeros(8, 4)
    idx = torch.tensor([[0, 1], [2, 3]] * 4)
    assert math.isclose(load_balancing_loss(even, idx, 4).item(), 2.0, rel_tol=1e-6)


def test_cached_routing_weights_sum_to_one():
    model = moe_model()
    _, cache = model.run_with_cache(torch.randint(0, 256, (2, 12)), names=lambda n: ".moe." in n)
    w = cache["blocks.1.moe.hook_expert_weights"]
    torch.testing.assert_close(w.sum(-1), torch.ones(2, 12))
    assert cache["blocks.1.moe.hook_expert_indices"].shape == (2, 12, 2)


def test_disabling_an_expert_routes_no_token_to_it():
    model = moe_model()

    def disable_expert_2(logits, hook):
        return logits.masked_fill(torch.arange(4) == 2, float("-inf"))

    hooks = {f"blocks.{i}.moe.hook_router_logits": disable_expert_2 for i in range(4)}
    with model.hooks(hooks):
        _, cache = model.run_with_cache(torch.randint(0, 256, (4, 32)), names=lambda n: n.endswith("indices"))
    assert all(not (idx == 2).any() for idx in cache.values())


def test_router_noise_only_in_training_and_seeded():
    model = moe_model(router_noise=1.0)
    ids = torch.randint(0, 256, (1, 16))
    with torch.no_grad():
        assert torch.equal(model(ids), model(ids))  # eval: no noise
        model.train()
        torch.manual_seed(1)
        a = model(ids)
        torch.manual_seed(1)
        b = model(ids)
        c = model(ids)
    assert torch.equal(a, b) and not torch.equal(a, c)
