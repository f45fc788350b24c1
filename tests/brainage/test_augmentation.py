import pytest
import torch

from sodeep.brainage.augmentation import RandomFlipShift


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
