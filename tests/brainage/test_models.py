import pytest
import torch

from sodeep.brainage.models import SFCN, AgeMLP, CascadeAgeNet, discretize_age


def test_mlp_starts_at_its_age_offset_and_checks_shapes():
    model = AgeMLP(7, hidden=(4,), age_offset=42.0)
    torch.nn.init.zeros_(model.network[-1].weight)
    torch.nn.init.zeros_(model.network[-1].bias)
    assert torch.equal(model(torch.randn(3, 7)), torch.full((3,), 42.0))
    with pytest.raises(ValueError, match=r"\(B, F\)"):
        model(torch.randn(7))


def test_sfcn_shapes_dtypes_and_errors():
    model = SFCN(channels=(4, 8, 8), head_channels=8, age_offset=50.0).double().eval()
    out = model(torch.randn(2, 1, 16, 20, 18, dtype=torch.float64))
    assert out.shape == (2,) and out.dtype == torch.float64
    with pytest.raises(ValueError, match=r"\(B, 1, D, H, W\)"):
        model(torch.randn(2, 16, 20, 18, dtype=torch.float64))
    with pytest.raises(ValueError, match=">= 8 voxels"):
        model(torch.randn(2, 1, 4, 20, 18, dtype=torch.float64))


def test_sfcn_block_orders_agree_in_eval_mode_with_positive_norm_scales():
    # In eval mode BatchNorm is a per-channel affine map; with a positive scale it is increasing,
    # so it commutes with max-pooling: the same weights give the same ages in either order.
    pooled_first = SFCN(channels=(4, 8), head_channels=8, age_offset=50.0).double()
    paper_order = SFCN(channels=(4, 8), head_channels=8, age_offset=50.0, pool_before_norm=False).double()
    assert [type(layer).__name__ for layer in paper_order.features[:4]] == [
        "Conv3d",
        "BatchNorm3d",
        "MaxPool3d",
        "ReLU",
    ]
    assert [type(layer).__name__ for layer in pooled_first.features[:4]] == [
        "Conv3d",
        "MaxPool3d",
        "BatchNorm3d",
        "ReLU",
    ]
    generator = torch.Generator().manual_seed(0)
    for norm in (m for m in pooled_first.modules() if isinstance(m, torch.nn.BatchNorm3d)):
        norm.weight.data = torch.rand(norm.num_features, generator=generator, dtype=torch.float64) + 0.5
        norm.bias.data = torch.randn(norm.num_features, generator=generator, dtype=torch.float64)
        norm.running_mean = torch.randn(norm.num_features, generator=generator, dtype=torch.float64)
        norm.running_var = torch.rand(norm.num_features, generator=generator, dtype=torch.float64) + 0.5

    # Same parameters under different module indices: copy layer by layer, in order.
    def weighted_layers(model):
        return [m for m in model.modules() if isinstance(m, (torch.nn.Conv3d, torch.nn.BatchNorm3d, torch.nn.Linear))]

    for source, target in zip(weighted_layers(pooled_first), weighted_layers(paper_order), strict=True):
        target.load_state_dict(source.state_dict())
    volumes = torch.randn(3, 1, 12, 12, 12, generator=generator, dtype=torch.float64)
    torch.testing.assert_close(pooled_first.eval()(volumes), paper_order.eval()(volumes))


def test_cascade_adds_a_residual_to_the_frozen_first_stage_bin():
    first = SFCN(channels=(4, 4), head_channels=4, age_offset=47.0)
    second = SFCN(channels=(4, 4), head_channels=4, age_offset=0.0, extra_inputs=1)
    cascade = CascadeAgeNet(first, second).train()
    assert not first.training  # frozen first stage stays in eval mode
    volumes = torch.randn(3, 1, 8, 8, 8)
    cascade.eval()
    with torch.no_grad():
        coarse = discretize_age(first(volumes))
        residual = second(volumes, (coarse / 100).unsqueeze(-1))
        torch.testing.assert_close(cascade(volumes), coarse + residual)
    cascade.train()
    cascade(volumes).sum().backward()
    assert all(p.grad is None for p in first.parameters())
    assert all(p.grad is not None for p in second.parameters() if p.requires_grad)
    with pytest.raises(ValueError, match="one extra input"):
        CascadeAgeNet(first, SFCN(channels=(4,), head_channels=4))


def test_load_age_model_refuses_a_foreign_checkpoint(tmp_path):
    from sodeep.brainage.training import load_age_model

    path = tmp_path / "other.ckpt"
    torch.save({"state_dict": {"sorter.weight": torch.zeros(1)}}, path)
    with pytest.raises(ValueError, match="not a checkpoint of fit_age_model"):
        load_age_model(AgeMLP(3), path)


def test_fit_age_model_rejects_bad_input(tmp_path):
    from sodeep.brainage.training import fit_age_model

    inputs, ages = torch.randn(8, 3), torch.rand(8) * 50 + 20
    with pytest.raises(ValueError, match="NaN or infinite"):
        fit_age_model(AgeMLP(3), "l1", (inputs, ages.clone().fill_(float("nan"))), (inputs, ages), out=tmp_path)
    with pytest.raises(ValueError, match=r"ages \(N,\)"):
        fit_age_model(AgeMLP(3), "l1", (inputs, ages[:5]), (inputs, ages), out=tmp_path)
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        fit_age_model(AgeMLP(3), "l1", (inputs, ages), (inputs, ages), out=tmp_path, batch_size=0)
    with pytest.raises(ValueError, match="batch_size must be >= 2 with presets"):
        fit_age_model(AgeMLP(3), "l1+agediff", (inputs, ages), (inputs, ages), out=tmp_path, batch_size=1)
    # No epoch, or a budget of no time, left no checkpoint: "No such file or directory: ''".
    for settings, message in (
        ({"max_epochs": 0}, "max_epochs must be >= 1"),
        ({"patience": 0}, "patience >= 1"),
        ({"max_minutes": 0.0}, "max_minutes must be None or > 0"),
        ({"learning_rate": 0.0}, "learning_rate must be > 0"),
        ({"max_minutes": 1e-9}, "stopped before its first validation"),
    ):
        with pytest.raises(ValueError, match=message):
            fit_age_model(AgeMLP(3), "l1", (inputs, ages), (inputs, ages), out=tmp_path, progress_bar=False, **settings)


@pytest.mark.parametrize("ema_decay", [None, 0.9])
def test_fit_returns_the_weights_it_validated(tmp_path, ema_decay):
    # With an EMA, validation, the checkpoint and the returned model must all be the average
    # (BatchNorm statistics included): its validation MAE is the best one logged.
    from sodeep.brainage.training import fit_age_model, predict_ages

    generator = torch.Generator().manual_seed(0)
    ages = torch.rand(24, generator=generator) * 60 + 20
    volumes = torch.randn(24, 1, 8, 8, 8, generator=generator) + (ages / 40).view(-1, 1, 1, 1, 1)
    model, summary = fit_age_model(
        SFCN(channels=(4, 4), head_channels=4, age_offset=50.0, age_scale=15.0),
        "l1",
        (volumes[:16], ages[:16]),
        (volumes[16:], ages[16:]),
        out=tmp_path,
        batch_size=8,
        max_epochs=4,
        ema_decay=ema_decay,
    )
    mae = (predict_ages(model, volumes[16:]) - ages[16:]).abs().mean().item()
    assert mae == pytest.approx(summary["best_val_mae"], rel=1e-5)
    saved = torch.load(summary["best_path"], weights_only=True)
    if ema_decay is not None:  # the raw weights are kept beside the average, and differ from it
        raw = saved["current_model_state"]["model.regressor.1.weight"]
        assert not torch.allclose(raw, model.regressor[1].weight)
    else:
        assert "current_model_state" not in saved
    with pytest.raises(ValueError, match="ema_decay"):
        fit_age_model(model, "l1", (volumes[:16], ages[:16]), (volumes[16:], ages[16:]), out=tmp_path, ema_decay=1.0)


def test_sfcn_pool_every_block_adds_block_means_beside_the_last_ones():
    # With zero weights on the block means, the regressor sees only the last block's means:
    # the same ages as the plain SFCN with the same weights.
    plain = SFCN(channels=(4, 8), head_channels=6, age_offset=50.0, pool_every_block=False).double().eval()
    every = SFCN(channels=(4, 8), head_channels=6, age_offset=50.0, pool_every_block=True).double().eval()
    assert every.regressor[1].in_features == 6 + 4 + 8
    every.features.load_state_dict(plain.features.state_dict())
    with torch.no_grad():
        every.regressor[1].weight.zero_()
        every.regressor[1].weight[:, -6:] = plain.regressor[1].weight
        every.regressor[1].bias.copy_(plain.regressor[1].bias)
    volumes = torch.randn(3, 1, 12, 12, 12, dtype=torch.float64)
    torch.testing.assert_close(every(volumes), plain(volumes))
    # The block means do reach the output.
    with torch.no_grad():
        every.regressor[1].weight[:, 0] = 1.0
    assert not torch.allclose(every(volumes), plain(volumes))
