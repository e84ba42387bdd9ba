"""The demo's tiny-VAE recipe: exact latent rescaling, the composed checkpoint, the shipped weights."""

from __future__ import annotations

import numpy as np
import torch

from data_tools.synth import COLORS, SHAPES, SceneSpec, foreground_mask, render_scene, scene_masks
from tsm_video.demo.vae import VAE_WEIGHTS, VAERecipe, _rescale_latents, compose_checkpoint, train_tiny_vae
from tsm_video.models import build_backbone
from tsm_video.models.vc2.checkpoint import read_state_dict


def _frames(n: int = 4, size: int = 16) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.rand(n, 3, size, size, generator=g) * 2 - 1


@torch.no_grad()
def test_rescaling_gives_unit_scaled_latents_and_keeps_reconstructions():
    torch.manual_seed(0)
    vae = build_backbone("vc2-tiny").vae.eval()
    x = _frames()
    before = vae.decode_images(vae.posterior(vae.moments(x))[0])
    std = _rescale_latents(vae, x)
    mean, _ = vae.posterior(vae.moments(x))
    after = vae.decode_images(mean)
    assert abs(std - 1.0) < 1e-5  # std of scale_factor * mean over the frames it was fitted on
    assert abs(float((mean * vae.scale_factor).std()) - 1.0) < 1e-5
    # k is folded into two 1x1 convs: a few float32 roundings of values of magnitude ~|before|
    assert torch.allclose(after, before, rtol=0, atol=1e-5 * float(before.abs().max()))


def test_a_few_recipe_steps_reduce_the_reconstruction_error():
    x = _frames(8)
    recipe = VAERecipe(crop=16, steps=4, batch_size=2, lr=2e-3)
    losses = []
    train_tiny_vae(x, recipe, print_fn=lambda m: losses.append(float(m.split("MSE ")[1].split(",")[0])))
    assert len(losses) == 2 and losses[1] < losses[0]


def test_composed_checkpoint_loads_and_carries_the_shipped_vae(tmp_path):
    path = compose_checkpoint(tmp_path / "init.safetensors", seed=3)
    model = build_backbone("vc2-tiny", checkpoint=path)
    shipped = read_state_dict(VAE_WEIGHTS)
    for key, value in model.vae.state_dict().items():
        assert torch.equal(value, shipped["first_stage_model." + key])
    torch.manual_seed(3)
    twin = build_backbone("vc2-tiny")  # UNet: the seeded random init the trainer would draw
    assert all(torch.equal(a, b) for a, b in zip(model.unet.parameters(), twin.unet.parameters()))


@torch.no_grad()
def test_shipped_weights_keep_colour_and_place_of_the_demo_shapes():
    """The committed weights reconstruct the demo's own frames (32 × 32, domain A, shapes of
    radius 2): for one scene per palette colour, the mean reconstructed colour over the shapes'
    pixels is nearer its own palette colour than any other, within half the smallest max-channel
    distance between two palette colours (then no other colour can be nearer), and the bright
    pixels sit on the shapes better than a one-pixel diagonal shift of a 5 × 5 square would
    (IoU 16/34 ≈ 0.47)."""
    vae = build_backbone("vc2-tiny", checkpoint=None).vae.eval()
    vae.load_state_dict(
        {k.split("first_stage_model.", 1)[1]: v for k, v in read_state_dict(VAE_WEIGHTS).items()}
    )
    palette = np.array(list(COLORS.values()), np.float64)  # (C, 3)
    gaps = np.abs(palette[:, None] - palette[None]).max(-1)  # (C, C) max-channel distances
    tolerance = gaps[gaps > 0].min() / 2  # 55 grey levels (blue vs purple: 110)
    ious = []
    for i, colour in enumerate(COLORS):
        spec = SceneSpec(colour, SHAPES[i % 3], 1 + i % 3, "fast", "right")
        frames, centres = render_scene(spec, (32, 32), 4, np.random.default_rng(i))
        x = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 127.5 - 1
        recon = vae.decode_images(vae.posterior(vae.moments(x))[0]).clamp(-1, 1)
        recon = ((recon + 1) * 127.5).permute(0, 2, 3, 1).numpy()  # (T, H, W, 3) in [0, 255]
        truth = scene_masks(spec, centres, (32, 32)).any(1)  # (T, H, W)
        mean = recon[truth].mean(0)
        error = np.abs(mean - frames[truth].mean(0)).max()
        assert error <= tolerance, f"{colour} {spec.shape}: foreground colour off by {error:.0f}"
        assert list(COLORS)[np.abs(palette - mean).max(1).argmin()] == colour
        seen = foreground_mask(recon)  # the synthetic estimate's rule
        ious.append((truth & seen).sum() / (truth | seen).sum())
    assert np.mean(ious) > 16 / 34, ious
