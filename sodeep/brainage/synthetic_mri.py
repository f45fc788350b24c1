"""Synthetic T1 MRI with a known brain age: the embedded default of the brain-age task.

Subjects are built from the MNI152 T1 grey-matter (GM), white-matter (WM) and brain-mask
templates that nilearn ships inside its package (nothing is downloaded), at 4 mm on the MNI grid
(45 x 54 x 45 voxels).  Each subject has a chronological age ``a ~ U(20, 90)`` and a biological age
``b = a + gap``, ``gap ~ N(0, 2.5)`` years; anatomy follows ``b``:

* **grey matter** shrinks by 0.25 %/year after 20, accelerating after 60 (+0.005 %/year^2), 1.6x
  faster frontally than occipitally (Raz et al. 2005; Fjell et al. 2009); lost tissue becomes CSF;
* **ventricles** double in volume between 20 and 80 (exponential growth; Scahill et al. 2003);
* **white matter** shrinks by 0.2 %/year after 50 and its T1 intensity drops by 0.25 %/year
  (contrast loss; Salat et al. 2009).

Age-independent variability, drawn per subject and at least as large as in real brains: GM
reserve (log-scale SD 3.5 %), a smooth regional GM reserve field (SD 3 %), WM reserve (SD 3 %),
ventricle log-size (SD 0.3), head size (SD 4 %), and a smooth random deformation (SD 2.5 mm per
axis).  Each subject is scanned at one of four sites that differ in contrast (gamma), bias field,
blur and noise.

The settings are fixed in :class:`SimulatorSettings` before any model is trained on them and are
never tuned to a model.  A subject is a pure function of ``(seed, index)``.  The truth of every
subject (ages, gap, site, regional tissue volumes in ml) is returned with it, for oracles and tests.
"""

from __future__ import annotations

import functools
import hashlib
import math
import os
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from sodeep.checks import check_integer
from sodeep.files import atomic_write

#: MNI grid at 4 mm (voxels) and the voxel volume (ml).
GRID = (45, 54, 45)
VOXEL_ML = 4.0**3 / 1000.0
#: Regions whose GM volumes are part of the truth (split along the anterior-posterior and
#: inferior-superior axes, both hemispheres together).
GM_REGIONS = ("frontal", "central", "posterior", "inferior")
#: Centre of the lateral ventricles (mm from the grid centre: right, anterior, superior).
VENTRICLE_CENTRE_MM = (0.0, -8.0, 10.0)
#: Millimetres per unit of ``grid_sample``'s normalized coordinates (-1 .. 1 spans the grid).
MM_PER_GRID_UNIT = (torch.tensor(GRID, dtype=torch.float32) - 1) * 4.0 / 2.0
#: Bump when the simulator changes, so cached cohorts are rebuilt.
SIMULATOR_VERSION = 1


@dataclass(frozen=True)
class SimulatorSettings:
    """The simulator's fixed difficulty (see the module docstring for sources)."""

    age_range: tuple[float, float] = (20.0, 90.0)
    gap_sd: float = 2.5
    gm_loss_per_year: float = 0.0025
    gm_loss_acceleration: float = 0.00005  # per year^2 after 60
    frontal_gm_factor: float = 1.6
    ventricle_doubling_years: float = 60.0
    wm_loss_per_year_after_50: float = 0.002
    wm_intensity_loss_per_year: float = 0.0025
    gm_reserve_sd: float = 0.035
    regional_reserve_sd: float = 0.03
    wm_reserve_sd: float = 0.03
    ventricle_log_size_sd: float = 0.3
    head_size_sd: float = 0.04
    deformation_sd_mm: float = 2.5
    sites: int = 4


@functools.lru_cache(maxsize=1)
def template_maps() -> dict[str, torch.Tensor]:
    """GM, WM, CSF and brain-mask probability maps on the 4 mm grid, plus voxel coordinates (mm)
    and the ventricle prior; computed once from nilearn's packaged MNI152 templates."""
    from nilearn import datasets

    def at_4mm(image) -> torch.Tensor:
        data = torch.as_tensor(np.asarray(image.get_fdata(), dtype=np.float32))  # 2 mm, 99 x 117 x 95
        pooled = F.avg_pool3d(data[None, None], 2, ceil_mode=True)[0, 0]  # 50 x 59 x 48
        offsets = [(have - want) // 2 for have, want in zip(pooled.shape, GRID)]
        return pooled[
            offsets[0] : offsets[0] + GRID[0], offsets[1] : offsets[1] + GRID[1], offsets[2] : offsets[2] + GRID[2]
        ].contiguous()

    mask = (at_4mm(datasets.load_mni152_brain_mask(resolution=2)) > 0.5).float()
    gm = at_4mm(datasets.load_mni152_gm_template(resolution=2)) * mask
    wm = at_4mm(datasets.load_mni152_wm_template(resolution=2)) * mask
    total = (gm + wm).clamp_min(1.0)
    gm, wm = gm / total, wm / total
    csf = (mask - gm - wm).clamp(0, 1)
    # Coordinates in mm around the grid centre: x right, y anterior, z superior.
    axes = [(torch.arange(side, dtype=torch.float32) - (side - 1) / 2) * 4.0 for side in GRID]
    x, y, z = torch.meshgrid(*axes, indexing="ij")
    # Ventricles: the CSF deep in the brain, around the lateral ventricles' centre.
    centre = VENTRICLE_CENTRE_MM
    deep = torch.exp(-0.5 * (((x - centre[0]) / 14) ** 2 + ((y - centre[1]) / 26) ** 2 + ((z - centre[2]) / 14) ** 2))
    ventricles = (csf * deep).clamp(0, 1)
    return {"gm": gm, "wm": wm, "csf": csf, "mask": mask, "x": x, "y": y, "z": z, "ventricles": ventricles}


def smooth_field(
    generator: torch.Generator, coarse: tuple[int, int, int] = (4, 5, 4), channels: int = 1
) -> torch.Tensor:
    """A smooth random field ``(channels, *GRID)`` with unit standard deviation per channel:
    normal noise on a coarse lattice, trilinearly upsampled."""
    lattice = torch.randn(1, channels, *coarse, generator=generator)
    field = F.interpolate(lattice, size=GRID, mode="trilinear", align_corners=True)[0]
    return (field - field.mean(dim=(1, 2, 3), keepdim=True)) / field.std(dim=(1, 2, 3), keepdim=True)


def gaussian_blur(volume: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of ``(*GRID)`` with ``sigma`` voxels (0: unchanged)."""
    if sigma <= 0:
        return volume
    radius = max(1, math.ceil(3 * sigma))
    offsets = torch.arange(-radius, radius + 1, dtype=volume.dtype)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = kernel / kernel.sum()
    out = volume[None, None]
    for axis in range(3):
        shape = [1, 1, 1, 1, 1]
        shape[2 + axis] = len(kernel)
        padding = [0, 0, 0]
        padding[axis] = radius
        out = F.conv3d(out, kernel.view(shape), padding=tuple(padding))
    return out[0, 0]


# Site effects: (gamma, bias-field amplitude, blur sigma in voxels, noise SD).
SITE_EFFECTS = ((1.0, 0.05, 0.0, 0.02), (0.85, 0.10, 0.5, 0.03), (1.15, 0.15, 0.8, 0.04), (1.3, 0.08, 1.0, 0.05))


def subject_generator(seed: int, index: int) -> torch.Generator:
    return torch.Generator().manual_seed((int(seed) * 1_000_003 + int(index)) % (2**63 - 1))


def simulate_subject(
    seed: int, index: int, settings: SimulatorSettings = SimulatorSettings()
) -> tuple[torch.Tensor, dict[str, float]]:
    """One synthetic subject.

    Returns:
        ``(volume, truth)``: ``volume`` ``(45, 54, 45)`` float32, z-scored inside the brain and 0
        outside; ``truth`` with ``age``, ``gap``, ``biological_age``, ``site`` and tissue volumes in
        ml (``gm_<region>``, ``gm``, ``wm``, ``csf``, ``ventricles``).
    """
    maps = template_maps()
    gen = subject_generator(seed, index)
    low, high = settings.age_range
    age = low + (high - low) * float(torch.rand((), generator=gen))
    gap = settings.gap_sd * float(torch.randn((), generator=gen))
    biological = age + gap
    site = int(torch.randint(0, settings.sites, (), generator=gen))
    normals = torch.randn(5, generator=gen)
    gm_reserve, wm_reserve, ventricle_size, head, gamma_jitter = normals.tolist()

    # Grey matter: global and frontal-weighted loss with biological age, reserve, regional reserve.
    years = biological - low
    loss = settings.gm_loss_per_year * years + settings.gm_loss_acceleration * max(0.0, biological - 60.0) ** 2
    frontal = torch.sigmoid((maps["y"] - 10.0) / 15.0)
    regional_loss = (
        loss * (1 + (settings.frontal_gm_factor - 1) * frontal) / (1 + (settings.frontal_gm_factor - 1) * 0.5)
    )
    regional_reserve = settings.regional_reserve_sd * smooth_field(gen)[0]
    gm_scale = (
        (1 - regional_loss).clamp_min(0.2) * torch.exp(settings.gm_reserve_sd * gm_reserve + regional_reserve)
    ).clamp(0, 1.2)
    gm = maps["gm"] * gm_scale
    # White matter: loss after 50, reserve.
    wm_loss = settings.wm_loss_per_year_after_50 * max(0.0, biological - 50.0)
    wm = maps["wm"] * (1 - wm_loss) * math.exp(settings.wm_reserve_sd * wm_reserve)
    tissue = (gm + wm).clamp_min(1.0)
    gm, wm = gm / tissue, wm / tissue
    # Ventricles: exponential growth, doubling over `ventricle_doubling_years`, log-size reserve;
    # enlarged by sampling the prior closer to its centre, displacing tissue.
    growth = math.exp(
        math.log(2) * years / settings.ventricle_doubling_years + settings.ventricle_log_size_sd * ventricle_size
    )
    linear = growth ** (1 / 3)
    identity = identity_grid()
    centre = torch.tensor(VENTRICLE_CENTRE_MM) / MM_PER_GRID_UNIT
    shrunk = centre + (identity - centre) / linear
    ventricles = sample(maps["ventricles"][None], shrunk)[0].clamp(0, 1) * maps["mask"]
    ventricles = (ventricles * 1.5).clamp(0, 1)  # the prior is a soft map; make the cavities crisp
    gm, wm = gm * (1 - ventricles), wm * (1 - ventricles)
    csf = (maps["mask"] - gm - wm).clamp(0, 1)

    # Head size and a smooth random deformation (mm -> normalized grid units per axis).
    displacement = settings.deformation_sd_mm * smooth_field(gen, channels=3)
    head_scale = 1 + settings.head_size_sd * head
    grid = identity / head_scale + (displacement / MM_PER_GRID_UNIT.view(3, 1, 1, 1)).permute(1, 2, 3, 0)
    gm, wm, csf, ventricles, mask = sample(torch.stack([gm, wm, csf, ventricles, maps["mask"]]), grid)

    truth = {"age": age, "gap": gap, "biological_age": biological, "site": site}
    regions = region_masks()
    for name in GM_REGIONS:
        truth[f"gm_{name}"] = float((gm * regions[name]).sum()) * VOXEL_ML
    truth |= {
        "gm": float(gm.sum()) * VOXEL_ML,
        "wm": float(wm.sum()) * VOXEL_ML,
        "csf": float(csf.sum()) * VOXEL_ML,
        "ventricles": float(ventricles.sum()) * VOXEL_ML,
    }

    # Scan: tissue intensities, WM contrast loss, then the site's gamma, bias field, blur, noise.
    gamma, bias_amplitude, blur, noise = SITE_EFFECTS[site % len(SITE_EFFECTS)]
    wm_intensity = 1.0 - settings.wm_intensity_loss_per_year * years
    image = 0.25 * csf + 0.62 * gm + wm_intensity * wm
    image = image.clamp_min(0) ** (gamma * (1 + 0.03 * gamma_jitter))
    image = image * torch.exp(bias_amplitude * smooth_field(gen, coarse=(3, 3, 3))[0])
    image = gaussian_blur(image, blur)
    image = image + noise * torch.randn(GRID, generator=gen)
    brain = mask > 0.5
    values = image[brain]
    volume = torch.where(brain, (image - values.mean()) / values.std(), 0.0)
    return volume.float(), truth


@functools.lru_cache(maxsize=1)
def identity_grid() -> torch.Tensor:
    """Normalized sampling grid ``(*GRID, 3)`` of ``grid_sample`` (last dim: x, y, z order of
    ``grid_sample``, which indexes the volume's last dimension first)."""
    axes = [torch.linspace(-1, 1, side) for side in GRID]
    x, y, z = torch.meshgrid(*axes, indexing="ij")
    return torch.stack([x, y, z], dim=-1)


def sample(volumes: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """Trilinear sampling of ``(C, *GRID)`` at ``grid`` ``(*GRID, 3)`` in (axis0, axis1, axis2)
    normalized coordinates; outside is 0."""
    flipped = grid.flip(-1)  # grid_sample wants (W, H, D) order: the last volume axis first
    return F.grid_sample(volumes[None], flipped[None], mode="bilinear", padding_mode="zeros", align_corners=True)[0]


@functools.lru_cache(maxsize=1)
def region_masks() -> dict[str, torch.Tensor]:
    maps = template_maps()
    y, z = maps["y"], maps["z"]
    inferior = z < -10
    return {
        "frontal": ((y >= 10) & ~inferior).float(),
        "central": ((y < 10) & (y >= -30) & ~inferior).float(),
        "posterior": ((y < -30) & ~inferior).float(),
        "inferior": inferior.float(),
    }


@dataclass
class SyntheticCohort:
    """``volumes`` ``(N, 1, 45, 54, 45)`` float32 and ``truth``: name -> ``(N,)`` array."""

    volumes: torch.Tensor
    truth: dict[str, np.ndarray]

    @property
    def ages(self) -> np.ndarray:
        return self.truth["age"].astype(np.float32)


def simulate_cohort(
    indices: range | list[int],
    seed: int = 0,
    *,
    settings: SimulatorSettings = SimulatorSettings(),
    cache_directory: str | os.PathLike | None = None,
    progress: bool = False,
) -> SyntheticCohort:
    """Subjects ``indices`` of the stream ``seed``, cached as one ``.npz`` per (seed, indices,
    settings, simulator version) when ``cache_directory`` is given (written atomically)."""
    from tqdm.auto import tqdm

    if isinstance(indices, (str, bytes)) or not hasattr(indices, "__iter__"):
        raise TypeError(f"indices must be subject indices, such as range(100) or [3, 7], got {indices!r}")
    indices = list(indices)
    if not indices:
        raise ValueError("indices must name at least one subject, got none")
    check_integer(seed, "seed", 0)
    for index in indices:
        check_integer(index, "each subject index", 0)
    # Python ints: np.int64(3) and 3 name one cohort, and one cache file.
    seed, indices = int(seed), [int(index) for index in indices]
    cached = None
    if cache_directory is not None:
        # A stable digest (Python's hash() of strings changes between processes).
        text = repr((SIMULATOR_VERSION, seed, indices, sorted(asdict(settings).items())))
        key = hashlib.sha1(text.encode()).hexdigest()[:12]
        name = f"synthetic_v{SIMULATOR_VERSION}_seed{seed}_{indices[0]}-{indices[-1]}_{len(indices)}_{key}.npz"
        cached = Path(cache_directory) / name
        if cached.is_file():
            try:
                with np.load(cached) as stored:
                    truth = {k[len("truth_") :]: stored[k] for k in stored.files if k.startswith("truth_")}
                    return SyntheticCohort(torch.from_numpy(stored["volumes"]), truth)
            except (OSError, ValueError, KeyError, zipfile.BadZipFile):
                pass  # a damaged cache file is simulated again and replaced
    volumes, truths = [], []
    for index in tqdm(indices, desc="synthetic MRI", disable=not progress, unit="subject"):
        volume, truth = simulate_subject(seed, index, settings)
        volumes.append(volume)
        truths.append(truth)
    stacked = torch.stack(volumes).unsqueeze(1)
    truth = {name: np.array([t[name] for t in truths]) for name in truths[0]}
    if cached is not None:
        arrays = {"volumes": stacked.numpy()} | {f"truth_{k}": v for k, v in truth.items()}
        atomic_write(cached, lambda stream: np.savez(stream, **arrays))
    return SyntheticCohort(stacked, truth)
