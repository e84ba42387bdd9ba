"""The router-input ablation (Sec. 4.4): stage 2 trains FC(x), Emb(t) or both."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tsm_video.tsm import TimestepContext, configure_stage, inject


def _model(mode: str = "assemble") -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 8), nn.Conv2d(8, 8, 3, padding=1))
    scales = [4] if mode == "foster" else [4, 1]
    inject(model, ["0", "1"], ctx=TimestepContext(1000), scales=scales, rank=2, alpha=2.0, mode=mode)
    return model


def _trainable(model: nn.Module) -> set[str]:
    return {name.rsplit(".", 2)[-2] for name, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize(("router_input", "terms"), [("both", {"fc", "emb"}), ("x", {"fc"}), ("t", {"emb"})])
def test_assemble_trains_only_the_chosen_router_terms(router_input, terms):
    model = _model()
    configure_stage(model, "assemble", router_input)
    assert _trainable(model) == terms
    # the other term stays exactly at its zero init through an optimizer step
    ctx = model[0].ctx
    ctx.set(torch.tensor([10, 900]))
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1.0)
    x = torch.randn(2, 8)
    (model[0](x).square().sum() + model[1](torch.randn(2, 8, 4, 4)).square().sum()).backward()
    opt.step()
    for layer in (model[0], model[1]):
        for term in {"fc", "emb"} - terms:
            assert not getattr(layer.router, term).weight.any()


def test_router_input_is_ignored_by_fostering_and_validated():
    model = _model("foster")
    configure_stage(model, "foster", "x")
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert names and all("lora" in n for n in names)
    with pytest.raises(ValueError, match="unknown router input"):
        configure_stage(model, "assemble", "xt")
