"""VC2UNet construction, validation, attention backends, checkpointing and autocast on tiny configs."""

from __future__ import annotations

import json

import pytest
import torch

from tsm_video.models.vc2 import VC2UNet
from tsm_video.models.vc2.attention import attention
from tsm_video.models.vc2.unet_config import VC2_UNET_PARAMS, resolve_unet_params

TINY = {
    "in_channels": 4, "out_channels": 3, "model_channels": 32, "attention_resolutions": [2, 1],
    "num_res_blocks": 1, "channel_mult": [1, 2], "num_head_channels": 16, "context_dim": 24,
    "temporal_length": 4, "use_linear": True, "temporal_conv": True, "temporal_selfatt_only": True,
    "use_relative_position": False, "addition_attention": True, "fps_cond": True,
}  # fmt: skip


def _inputs(b=2, f=3, h=4, w=4, seed=0, length=5):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, 4, f, h, w, generator=g)
    context = torch.randn(b, length, 24, generator=g)
    t = torch.tensor([10, 900, 500, 0][:b])
    fps = torch.tensor([8, 28, 16, 4][:b])
    return x, t, context, fps


def _perturbed(params: dict, seed: int = 0) -> VC2UNet:
    """A model with every parameter moved off its init (zero-init output paths included)."""
    torch.manual_seed(seed)
    unet = VC2UNet.from_lvdm_config(params)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in unet.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    return unet


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"temporal_conv": False, "fps_cond": False, "use_linear": False},
        {"use_causal_attention": True, "use_relative_position": True},
        {"temporal_selfatt_only": False},
        {"num_head_channels": -1, "num_heads": 4, "addition_attention": False},
        {"temporal_attention": False, "channel_mult": [1, 1, 2], "transformer_depth": 2},
    ],
    ids=["base", "plain", "causal-relpos", "temporal-cross", "num-heads", "no-temporal-attn"],
)
def test_builds_and_runs_from_other_params(overrides):
    params = {**TINY, **overrides}
    unet = VC2UNet.from_lvdm_config(params).eval()
    x, t, context, fps = _inputs(f=4)
    with torch.no_grad():
        eps = unet(x, t, context, fps=fps)
    assert eps.shape == (2, 3, 4, 4, 4)
    assert eps.is_contiguous() and torch.isfinite(eps).all()
    # the stored config is complete and JSON-able, and rebuilds the same architecture
    rebuilt = VC2UNet.from_lvdm_config(json.loads(json.dumps(unet.config)), device="meta")
    assert [(k, v.shape) for k, v in rebuilt.state_dict().items()] == [
        (k, v.shape) for k, v in unet.state_dict().items()
    ]


def test_structure_follows_flags():
    names = dict(VC2UNet.from_lvdm_config({**TINY, "use_linear": False}, device="meta").named_modules())
    assert isinstance(names["input_blocks.1.1.proj_in"], torch.nn.Conv2d)
    assert isinstance(names["input_blocks.1.2.proj_in"], torch.nn.Conv1d)
    assert isinstance(names["init_attn.0.proj_in"], torch.nn.Conv1d)
    assert "input_blocks.1.0.temopral_conv" in names
    names = dict(
        VC2UNet.from_lvdm_config({**TINY, "temporal_conv": False, "fps_cond": False}).named_modules()
    )
    assert not any("temopral_conv" in n or n.startswith("fps_embedding") for n in names)
    # temporal_selfatt_only: attn2 of temporal blocks is a self-attention (inner -> inner)
    unet = VC2UNet.from_lvdm_config(TINY, device="meta")
    assert unet.input_blocks[1][2].transformer_blocks[0].attn2.to_k.weight.shape == (32, 32)
    unet = VC2UNet.from_lvdm_config({**TINY, "temporal_selfatt_only": False}, device="meta")
    assert unet.input_blocks[1][2].transformer_blocks[0].attn2.to_k.weight.shape == (32, 24)


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        ({"num_head_channels": -1}, "num_heads"),
        ({"model_channels": 48}, "model_channels"),
        ({"bogus_flag": True}, "bogus_flag"),
        ({"use_linear": 1}, "use_linear"),
        ({"channel_mult": []}, "channel_mult"),
        ({"dims": 3}, "dims"),
        ({"use_fp16": True}, "use_fp16"),
        ({"context_dim": None}, "context_dim"),
        ({"use_relative_position": True, "temporal_length": None}, "use_relative_position"),
        ({"num_head_channels": -1, "num_heads": 2}, "addition_attention"),
        ({"dropout": 1.5}, "dropout"),
        ({"num_head_channels": 128}, "num_head_channels"),
        ({"attention_resolutions": [2, 4]}, "attention_resolutions"),
    ],
)
def test_bad_params_fail_at_init_naming_the_key(overrides, key):
    with pytest.raises(ValueError, match=key):
        VC2UNet.from_lvdm_config({**TINY, **overrides}, device="meta")


def test_missing_key_and_whole_unet_config_are_rejected():
    params = dict(TINY)
    del params["model_channels"]
    with pytest.raises(ValueError, match="model_channels"):
        VC2UNet.from_lvdm_config(params, device="meta")
    with pytest.raises(ValueError, match="params"):
        VC2UNet.from_lvdm_config({"target": "lvdm...UNetModel", "params": TINY}, device="meta")


def test_resolve_fills_official_defaults():
    cfg = resolve_unet_params(VC2_UNET_PARAMS)
    assert cfg["dropout"] == 0.0 and cfg["conv_resample"] is True and cfg["temporal_transformer_depth"] == 1
    assert cfg["use_relative_position"] is False  # explicit in the VC2 config (official default: True)
    assert resolve_unet_params({k: v for k, v in TINY.items() if k != "use_relative_position"})[
        "use_relative_position"
    ]


def test_bad_inputs_are_rejected():
    unet = VC2UNet.from_lvdm_config(TINY).eval()
    x, t, context, fps = _inputs()
    with pytest.raises(ValueError, match="fps"):
        unet(x, t, context)
    with pytest.raises(ValueError, match="timesteps"):
        unet(x, t[:1], context, fps=fps)
    with pytest.raises(ValueError, match="context"):
        unet(x, t, context[..., :8], fps=fps)
    with pytest.raises(ValueError, match="multiples of 2"):
        unet(x[..., :3], t, context, fps=fps)
    with pytest.raises(ValueError, match="x must be"):
        unet(x[:, :3], t, context, fps=fps)
    image_unet = VC2UNet.from_lvdm_config({**TINY, "use_image_attention": True})
    with pytest.raises(ValueError, match="image tokens"):
        image_unet(x, t, context, fps=fps)
    with pytest.raises(ValueError, match="unknown attention backend"):
        unet.set_attention_backend("flash")
    with torch.no_grad():  # an int fps is broadcast, as in the official forward
        torch.testing.assert_close(unet(x, t, context, fps=7), unet(x, t, context, fps=torch.tensor([7, 7])))


def test_fps_changes_the_output_only_when_fps_conditioned():
    x, t, context, fps = _inputs()
    for fps_cond in (True, False):
        unet = _perturbed({**TINY, "fps_cond": fps_cond}).eval()
        with torch.no_grad():
            changed = not torch.allclose(unet(x, t, context, fps=fps), unet(x, t, context, fps=fps + 10))
        assert changed == fps_cond


@pytest.mark.parametrize("overrides", [{}, {"use_causal_attention": True}, {"use_image_attention": True}])
def test_sdpa_equals_math(overrides):
    unet = _perturbed({**TINY, **overrides}).eval()
    x, t, context, fps = _inputs(f=4, length=80 if overrides.get("use_image_attention") else 5)
    with torch.no_grad():
        unet.set_attention_backend("math")
        reference = unet(x, t, context, fps=fps)
        unet.set_attention_backend("sdpa")
        torch.testing.assert_close(unet(x, t, context, fps=fps), reference, rtol=0, atol=1e-5)


@pytest.mark.parametrize("backend", ["math", "sdpa"])
def test_causal_attention_ignores_future_keys(backend):
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 5, 8, generator=g) for _ in range(3))  # B H N D
    k2, v2 = k.clone(), v.clone()
    k2[:, :, 3:] += 1.0  # change positions 3 and 4 only
    v2[:, :, 3:] -= 1.0
    a = attention(q, k, v, backend=backend, causal=True)
    b = attention(q, k2, v2, backend=backend, causal=True)
    torch.testing.assert_close(a[:, :, :3], b[:, :, :3], rtol=0, atol=1e-6)
    assert not torch.allclose(a[:, :, 3:], b[:, :, 3:])
    # relative-position tables force the math path and keep causality
    rel = torch.randn(5, 5, 8, generator=g)
    a = attention(q, k, v, backend=backend, causal=True, rel_k=rel, rel_v=rel)
    b = attention(q, k2, v2, backend=backend, causal=True, rel_k=rel, rel_v=rel)
    torch.testing.assert_close(a[:, :, :3], b[:, :, :3], rtol=0, atol=1e-6)


def test_attention_kernel_closed_form():
    # one query, two keys: softmax weights are explicit
    q = torch.tensor([[[[1.0, 0.0]]]])  # B H Nq D
    k = torch.tensor([[[[1.0, 0.0], [0.0, 1.0]]]])
    v = torch.tensor([[[[2.0, 0.0], [0.0, 4.0]]]])
    w = torch.softmax(torch.tensor([2**-0.5, 0.0]), dim=0)
    expected = (w[0] * v[0, 0, 0] + w[1] * v[0, 0, 1]).view(1, 1, 1, 2)
    for backend in ("math", "sdpa", "auto"):
        torch.testing.assert_close(attention(q, k, v, backend=backend), expected)
    with pytest.raises(ValueError, match="xformers"):
        attention(q, k, v, backend="xformers")


def test_gradient_checkpointing_gives_same_gradients():
    unet = _perturbed({**TINY, "dropout": 0.0})
    unet.eval()  # no dropout (the temporal conv has a fixed 0.1)
    x, t, context, fps = _inputs(b=1, f=2)

    def grads():
        unet.zero_grad(set_to_none=True)
        loss = unet(x, t, context, fps=fps).square().mean()
        loss.backward()
        return loss.detach(), {n: p.grad.clone() for n, p in unet.named_parameters()}

    loss_plain, plain = grads()
    unet.enable_gradient_checkpointing()
    assert all(m.gradient_checkpointing for m in unet.modules() if hasattr(m, "gradient_checkpointing"))
    loss_ckpt, ckpt = grads()
    torch.testing.assert_close(loss_ckpt, loss_plain, rtol=0, atol=0)
    assert plain.keys() == ckpt.keys()
    for name in plain:
        torch.testing.assert_close(ckpt[name], plain[name], rtol=1e-5, atol=1e-7, msg=name)


def test_use_checkpoint_param_enables_checkpointing():
    unet = VC2UNet.from_lvdm_config({**TINY, "use_checkpoint": True}, device="meta")
    flags = [m.gradient_checkpointing for m in unet.modules() if hasattr(m, "gradient_checkpointing")]
    assert flags and all(flags)
    unet.disable_gradient_checkpointing()
    assert not any(m.gradient_checkpointing for m in unet.modules() if hasattr(m, "gradient_checkpointing"))


def test_bf16_autocast_forward_and_bf16_weights_on_cpu():
    unet = _perturbed(TINY).eval()
    x, t, context, fps = _inputs()
    with torch.no_grad():
        reference = unet(x, t, context, fps=fps)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            eps = unet(x, t, context, fps=fps)
        assert eps.shape == reference.shape and torch.isfinite(eps).all()
        assert (eps.float() - reference).abs().max() < 0.1 * reference.abs().max()
        unet.to(torch.bfloat16)
        eps16 = unet(x.bfloat16(), t, context.bfloat16(), fps=fps)
    assert eps16.dtype == torch.bfloat16
    assert (eps16.float() - reference).abs().max() < 0.1 * reference.abs().max()
