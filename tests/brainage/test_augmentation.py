import pytest
import torch

from sodeep.brainage.augmentation import RandomContrast, RandomFlipShift, compose, make_augmentation


def test_each_volume_is_itself_or_its_mirror_and_seeds_repeat():
    volumes = torch.randn(16, 1, 5, 4, 3)
    out = RandomFlipShift(max_shift=0, seed=1)(volumes)
    flipped = [torch.equal(o, v.flip(1)) for o, v in zip(out, volumes)]
    kept = [torch.equal(o, v) for o, v in zip(out, volumes)]
    assert all(f or k for f, k in zip(flipped, kept)) and any(flipped) and any(kept)
    assert torch.equal(out, RandomFlipShift(max_shift=0, seed=1)(volumes))


def test_shift_is_a_roll_of_at_most_max_shift():
    volume = torch.zeros(1, 1, 9, 9, 9)
    volume[0, 0, 4, 4, 4] = 1
    out = RandomFlipShift(max_shift=2, flip_dim=None, seed=3)(volume)
    (position,) = out.nonzero().tolist()
    assert all(abs(p - 4) <= 2 for p in position[2:])
    with pytest.raises(ValueError, match=r"\(B, 1, D, H, W\)"):
        RandomFlipShift()(torch.zeros(2, 3))


def brain_volumes(batch: int = 4) -> torch.Tensor:
    volumes = torch.randn(batch, 1, 8, 9, 7, generator=torch.Generator().manual_seed(0))
    volumes[..., :2, :, :] = 0  # background
    return volumes


def test_contrast_keeps_the_background_and_z_scores_the_brain():
    volumes = brain_volumes()
    out = RandomContrast(seed=2)(volumes)
    brain = volumes != 0
    assert torch.equal(out[~brain], torch.zeros_like(out[~brain]))
    for value, mask in zip(out, brain):
        inside = value[mask]
        assert abs(inside.mean().item()) < 1e-5 and inside.std(unbiased=False).item() == pytest.approx(1, abs=1e-4)
    assert torch.equal(out, RandomContrast(seed=2)(volumes))
    assert not torch.allclose(out, volumes, atol=1e-2)


def test_gamma_alone_keeps_the_order_of_brain_voxels():
    # A gamma curve is monotonic: without bias field and noise the voxel ranks are unchanged,
    # and with gamma 1 the (z-scored) input comes back.
    volumes = brain_volumes()
    brain = volumes != 0
    out = RandomContrast(max_gamma=2.0, bias_amplitude=0, noise=0, seed=0)(volumes)
    for value, original, mask in zip(out, volumes, brain):
        assert torch.equal(value[mask].argsort(), original[mask].argsort())
    first, inside = volumes[:1], brain[:1]
    z_scored = torch.where(inside, (first - first[inside].mean()) / first[inside].std(unbiased=False), 0.0)
    same = RandomContrast(max_gamma=1.0, bias_amplitude=0, noise=0)(z_scored)
    torch.testing.assert_close(same, z_scored, atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="max_gamma >= 1"):
        RandomContrast(max_gamma=0.5)


def test_compose_applies_left_to_right():
    def add_one(volumes):
        return volumes + 1

    def double(volumes):
        return volumes * 2

    assert compose(add_one, double)(torch.zeros(1)).item() == 2.0


def test_named_augmentations_are_seeded_and_unknown_names_refused():
    volumes = brain_volumes()
    assert make_augmentation(None, seed=0) is None
    for name in ("flip-shift", "flip-shift+contrast"):
        assert torch.equal(make_augmentation(name, seed=3)(volumes), make_augmentation(name, seed=3)(volumes))
    with pytest.raises(ValueError, match="one of"):
        make_augmentation("mixup", seed=0)
