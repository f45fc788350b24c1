"""T1 volumes for brain age: a manifest CSV of NIfTI files read with nibabel, brought to one grid,
z-scored inside the brain and cached on disk, so later epochs and runs never re-read the files.

Manifest columns: ``path`` (absolute, or relative to the manifest's folder), ``age``, optional
``sex`` and ``site`` (in any case).  Rows that cannot be used (missing or unreadable file,
non-numeric or impossible age) are left out and listed by CSV line on the cohort
(:meth:`Cohort.notes` says so in one line); the rest of the cohort loads.  A volume listed twice
is an error: it could sit in a training fold and a test fold.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from sodeep.brainage.csv_files import (
    age_problem,
    check_usable_rows,
    closest_column,
    describe_columns,
    describe_left_out,
    find_column,
    is_missing,
    read_csv_records,
)
from sodeep.brainage.tables import (
    ID_COLUMNS,
    NO_SITE,
    ages_beyond_a_lifetime,
    repeated_ids_note,
    sites_of_one_subject_note,
)
from sodeep.files import atomic_write, writable_file_problem
from sodeep.run_folder import RunInterrupted
from sodeep.wording import plural

#: The MNI152 grid at 4 mm: 45 x 54 x 45 voxels (182 x 218 x 182 mm).
GRID_4MM = (45, 54, 45)
#: Least share of the grid a brain (voxels above 0) fills; an adult brain fills about a sixth of
#: the MNI152 grid.
MIN_BRAIN_FRACTION = 0.01
#: Litres of voxels above 0 beyond which a volume's "brain" is noted as a head or its background:
#: an adult brain is 1.1 to 1.9 litres, a head with its scalp 3.5 or more.
UNMASKED_BRAIN_LITRES = 2.5
#: Most of a brain's voxels one intensity may hold: a mask or a constant image holds nearly all.
MAX_SHARE_OF_ONE_INTENSITY = 0.5
#: Fewest distinct intensities above 0 in a file's voxels: a tissue segmentation (labels 1, 2, 3)
#: holds a handful, a T1 (even stored as 8-bit integers) hundreds.
MIN_DISTINCT_INTENSITIES = 16
#: Share of neighbouring brain voxels with equal values beyond which integer voxels are a label
#: map (aseg: about 0.9): a T1 has about 0.1, even stored as 8-bit integers.
MAX_EQUAL_NEIGHBOURS = 0.75
#: Most of a volume's nonzero voxels that may lie well below 0 (under -NEGATIVE_LEVEL times its
#: bright voxels' level, the 99th percentile of those above 0): the brain is read as the voxels
#: above 0, and a T1 has negatives only from noise and interpolation ringing (spline or sinc
#: resampling), a few percent of its level, while a volume already z-scored has them in about
#: half its brain, and one in Hounsfield units (CT) in its air.
MAX_NEGATIVE_SHARE = 0.1
NEGATIVE_LEVEL = 0.1


@dataclass
class ManifestRow:
    line: int
    path: Path
    age: float
    sex: str = ""
    site: str = NO_SITE
    subject: str = ""


@dataclass
class Cohort:
    """Volumes ``(N, 1, D, H, W)`` float32, ages ``(N,)``, per-subject sites, and the CSV lines
    left out with their reasons."""

    volumes: torch.Tensor
    ages: torch.Tensor
    sites: list[str]
    paths: list[Path]
    problems: list[tuple[int, str]] = field(default_factory=list)
    subjects: list[str] = field(default_factory=list)
    voxel_size: float = 4.0

    def files_digest(self) -> str:
        """SHA-256 of every kept volume's path, size and modification time: a run resumes only on
        the files it was trained on (as the volume cache reads them)."""
        digest = hashlib.sha256()
        for path in self.paths:
            status = path.stat()
            digest.update(f"{path.resolve()}|{status.st_size}|{status.st_mtime_ns}\n".encode())
        return digest.hexdigest()

    def notes(self, source: str) -> list[str]:
        """``["manifest.csv: left out 2 of 42 rows (line 42: no file at ...; ...)"]``, or none."""
        total = len(self.paths) + len(self.problems)
        return [describe_left_out(source, self.problems, total, verb="left out")] if self.problems else []

    def remarks(self, source: str) -> list[str]:
        """Lines a reader of the manifest ``source`` should know of the subjects kept, as for a
        table: ages above a lifetime, subject ids on several rows (with an id column), empty
        site cells among named sites, and volumes that look unmasked (a "brain" of more than
        :data:`UNMASKED_BRAIN_LITRES` in the grid)."""
        lines = ages_beyond_a_lifetime(source, self.ages.numpy()) + repeated_ids_note(source, self.subjects)
        lines += unmasked_note(source, brain_litres(self.volumes, self.voxel_size), self.paths)
        unnamed = sum(site == NO_SITE for site in self.sites)
        if 0 < unnamed < len(self.sites):
            lines.append(
                f"{source}: {unnamed} of {plural(len(self.sites), 'subject')} {'has' if unnamed == 1 else 'have'} an "
                f"empty site cell (or NA); empty site cells are one site, {NO_SITE!r}, in per-site results: fill in their sites"
            )
        return lines + sites_of_one_subject_note(source, self.sites)


def brain_litres(volumes: torch.Tensor, voxel_size: float) -> torch.Tensor:
    """``(N,)`` litres of the voxels that are not 0 in each of the ``volumes`` ``(N, 1, D, H, W)``
    at ``voxel_size`` mm: the brain of a masked scan."""
    return torch.count_nonzero(volumes.flatten(1), dim=1) * (voxel_size**3 / 1e6)


def unmasked_note(source: str, litres: torch.Tensor, paths: Sequence[Path]) -> list[str]:
    """A line naming the volumes (of ``paths``, with :func:`brain_litres` ``litres`` ``(N,)``)
    that look unmasked (a "brain" of more than :data:`UNMASKED_BRAIN_LITRES`), or none."""
    unmasked = torch.nonzero(litres > UNMASKED_BRAIN_LITRES).flatten().tolist()
    if not unmasked:
        return []
    first = unmasked[0]
    return [
        f"{source}: {len(unmasked)} of {plural(len(paths), 'volume')} "
        f"{'has' if len(unmasked) == 1 else 'have'} more than {UNMASKED_BRAIN_LITRES} litres of voxels above 0 "
        f"(first {paths[first]}: {float(litres[first]):.1f}; a brain is 1.1 to 1.9): give skull-stripped "
        "or brain-masked T1s, whose outside is 0, or the head and background are z-scored and learned as brain"
    ]


def read_manifest(path: str | os.PathLike) -> tuple[list[ManifestRow], list[tuple[int, str]]]:
    """Rows of a manifest CSV, and ``(line, reason)`` for the rows that cannot be used; ``ValueError``
    for a malformed manifest or one that lists a volume twice."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path} is a folder; give the manifest in it, a CSV file")
    if not path.is_file():
        raise FileNotFoundError(f"no manifest at {path}")
    columns, records, _ = read_csv_records(path)
    try:
        file_column, age_column, sex, site = (
            find_column(columns, [name], name) for name in ("path", "age", "sex", "site")
        )
        id_column = find_column(columns, ID_COLUMNS, "id", loose=True)
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from None
    missing = [name for name, column in (("age", age_column), ("path", file_column)) if column is None]
    if missing:
        matches = [match for match in (closest_column(name, columns) for name in missing) if match]
        hint = f" (rename {' and '.join(repr(match) for match in matches)})" if matches else ""
        raise ValueError(
            f"{path}: manifest needs columns 'path' and 'age'; missing {missing}{hint}; columns are {describe_columns(columns)}"
        )
    rows, problems = [], []
    for line, record in enumerate(records, start=2):
        age, listed = record[age_column] or "", record[file_column] or ""
        problem = age_problem(age)
        if problem:
            problems.append((line, f"age {age!r} {problem}"))
            continue
        file, problem = listed_file(path, listed)
        if problem:
            problems.append((line, problem))
            continue
        sex_cell, site_cell, subject = (record[column] if column else "" for column in (sex, site, id_column))
        site_cell = NO_SITE if not site_cell or is_missing(site_cell) else site_cell  # empty, or NA
        rows.append(ManifestRow(line, file, float(age), sex_cell or "", site_cell, subject or ""))
    check_listed_once(path, rows)
    return rows, problems


def listed_file(manifest: Path, listed: str) -> tuple[Path, str | None]:
    """The volume file a manifest cell names (absolute, or relative to the manifest's folder),
    and why it cannot be read (``None`` where it is a file)."""
    if not listed.strip():
        return Path(), "the path is empty"
    file = Path(listed).expanduser()
    file = file if file.is_absolute() else manifest.resolve().parent / file  # the same from any folder
    if file.is_dir():
        return file, f"{file} is a folder, not a volume file"
    if not file.is_file():
        return file, f"no file at {file}"
    return file, None


def check_listed_once(path: Path, rows: Sequence[ManifestRow]) -> None:
    """Refuse a manifest that lists one volume (after resolving relative paths and links) on two
    rows, naming the first such volume and its CSV lines."""
    lines_of: dict[Path, list[int]] = {}
    for row in rows:
        lines_of.setdefault(row.path.resolve(), []).append(row.line)
    repeated = {file: lines for file, lines in lines_of.items() if len(lines) > 1}
    if repeated:
        file, lines = next(iter(repeated.items()))
        listed = ", ".join(map(str, lines[:-1])) + f" and {lines[-1]}"
        more = f" (and {plural(len(repeated) - 1, 'more volume')})" if len(repeated) > 1 else ""
        raise ValueError(
            f"{path}: {file} is listed on lines {listed}{more}; list each scan once, since a repeated scan "
            "could sit in a training fold and a test fold"
        )


def fit_to_shape(volume: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Centre-crop or zero-pad ``volume`` to ``shape`` (both 3-D)."""
    result = np.zeros(shape, dtype=np.float32)
    source, target = [], []
    for have, want in zip(volume.shape, shape):
        start_in, start_out = max(0, (have - want) // 2), max(0, (want - have) // 2)
        size = min(have, want)
        source.append(slice(start_in, start_in + size))
        target.append(slice(start_out, start_out + size))
    result[tuple(target)] = volume[tuple(source)]
    return result


def zscore_in_brain(volume: np.ndarray) -> np.ndarray:
    """Z-score using the voxels above 0 (the brain of a skull-stripped or masked T1); 0 outside.

    A volume whose brain is under :data:`MIN_BRAIN_FRACTION` of the grid (an empty image, a patch,
    a scan at another voxel size than its header says) or has one intensity in most of its voxels
    (a mask or a constant image, which would z-score to 0) is a ``ValueError``."""
    brain = volume > 0
    inside = int(brain.sum())
    if inside < max(2, MIN_BRAIN_FRACTION * volume.size):
        raise ValueError(
            f"only {inside} of the grid's {volume.size} voxels are above 0 after resampling: is the image empty, "
            "a patch, or at another voxel size than its header says?"
        )
    values = volume[brain].astype(np.float64)  # float32 sums of squares overflow beyond ~1e19
    _, counts = np.unique(values, return_counts=True)
    if counts.max() > MAX_SHARE_OF_ONE_INTENSITY * inside:
        raise ValueError(
            f"{counts.max() / inside:.0%} of the brain's voxels have one intensity: a mask or a constant image, not a T1"
        )
    result = np.zeros_like(volume, dtype=np.float32)
    # Two intensities at least (above), so the spread is positive at any scale of the values.
    result[brain] = (values - values.mean()) / values.std()
    return result


def _few_intensities(data: np.ndarray) -> np.ndarray | None:
    """The distinct values above 0 of ``data`` when there are fewer than
    :data:`MIN_DISTINCT_INTENSITIES`, else ``None`` (a sample of every 4th voxel along each axis
    settles most volumes without sorting all of them)."""
    sample = data[::4, ::4, ::4]
    if len(np.unique(sample[sample > 0])) >= MIN_DISTINCT_INTENSITIES:
        return None
    values = np.unique(data[data > 0])
    return values if len(values) < MIN_DISTINCT_INTENSITIES else None


def _equal_neighbour_share(data: np.ndarray) -> float:
    """Of the pairs of adjacent voxels (along each axis) both above 0, the share with equal
    values; 0 for voxels that are not all integers (a label map's are)."""
    sample = data[::4, ::4, ::4]
    if not np.array_equal(sample, np.round(sample)) or not np.array_equal(data, np.round(data)):
        return 0.0
    pairs = equal = 0
    for axis in range(3):
        along = np.moveaxis(data, axis, 0)
        ahead, behind = along[1:], along[:-1]
        both = (ahead > 0) & (behind > 0)
        pairs += int(both.sum())
        equal += int((both & (ahead == behind)).sum())
    return equal / pairs if pairs else 0.0


def load_volume(path: str | os.PathLike, shape: Sequence[int] = GRID_4MM, voxel_size: float = 4.0) -> np.ndarray:
    """Read a NIfTI file, reorient to RAS, resample to ``voxel_size`` mm (trilinear; a grid rotated
    against the world axes is resampled onto them whatever its voxel size), crop/pad to
    ``shape`` and z-score inside the brain.  NaN voxels (the outside of some masked images) count
    as outside the brain, like 0; an infinite voxel, or voxels well below 0 in more than
    :data:`MAX_NEGATIVE_SHARE` of the nonzero ones (an already z-scored volume), is an error.
    Returns ``shape`` float32."""
    import nibabel
    import nibabel.affines
    from nibabel.processing import resample_to_output

    image = nibabel.load(str(path))
    if not abs(np.linalg.det(np.asarray(image.affine, dtype=np.float64)[:3, :3])) > 0:
        raise ValueError(
            f"{path}: its affine is singular (a voxel of no size along some axis), so its voxels have no place in "
            "space; fix the file's header (sform or qform)"
        )
    image = nibabel.as_closest_canonical(image)
    if 0 in image.shape:
        raise ValueError(f"{path}: the volume has no voxels (shape {image.shape})")
    if len(image.shape) > 3 and all(size == 1 for size in image.shape[3:]):  # one frame, as 4-D or 5-D
        image = image.slicer[(..., *[0] * (len(image.shape) - 3))]
    if len(image.shape) < 3:
        raise ValueError(
            f"{path}: expected a 3-D volume, got shape {image.shape}: a single slice or image; give one 3-D T1 "
            "volume per subject"
        )
    if len(image.shape) != 3:
        raise ValueError(
            f"{path}: expected a 3-D volume, got shape {image.shape}: give one 3-D T1 volume per subject (a "
            "series of frames, such as fMRI or diffusion, or a field of vectors is not one)"
        )
    data = np.asarray(image.dataobj)
    if np.iscomplexobj(data):
        raise ValueError(f"{path}: the voxels are complex numbers ({data.dtype}); a T1 volume is real")
    data = data.astype(np.float64, copy=False)
    beyond = int((np.abs(data) > np.finfo(np.float32).max).sum())  # infinite ones included
    if beyond:
        raise ValueError(
            f"{path}: {beyond} of {data.size} voxels are infinite or beyond float32's range; fix or mask them (0 or NaN)"
        )
    data = np.nan_to_num(data.astype(np.float32), nan=0.0)  # before resampling, which would spread NaN into the brain
    if not np.any(data > 0):
        raise ValueError(f"{path}: no voxel is above 0 (the image is empty: 0, NaN or negative everywhere)")
    labels = _few_intensities(data)
    # Before resampling, which blurs a mask's edges into many values (a patch too small to be a
    # brain is refused as such after resampling).
    if labels is not None and len(labels) == 1 and np.count_nonzero(data > 0) >= MIN_BRAIN_FRACTION * data.size:
        raise ValueError(f"{path}: 100% of the brain's voxels have one intensity: a mask or a constant image, not a T1")
    if labels is not None and len(labels) > 1:
        shown = ", ".join(f"{value:g}" for value in labels)
        raise ValueError(
            f"{path}: its voxels above 0 take only {len(labels)} values ({shown}): a label map (segmentation), not a T1"
        )
    equal = _equal_neighbour_share(data)
    if labels is None and equal > MAX_EQUAL_NEIGHBOURS:
        raise ValueError(
            f"{path}: its voxels are integers equal to their neighbours' in {equal:.0%} of the brain: "
            "a label map (segmentation), not a T1"
        )
    bright = float(np.percentile(data[data > 0], 99)) if np.any(data > 0) else 0.0
    negative, nonzero = np.count_nonzero(data < -NEGATIVE_LEVEL * bright), np.count_nonzero(data)
    if negative > MAX_NEGATIVE_SHARE * nonzero:
        below = f"well below 0 (under -{NEGATIVE_LEVEL:.0%} of its bright voxels' level)" if bright > 0 else "below 0"
        raise ValueError(
            f"{path}: {negative / nonzero:.0%} of its nonzero voxels are {below}, and the brain is read as the voxels "
            "above 0, with 0 or NaN outside: an intensity-normalized volume (z-scored, or scaled to [-1, 1]), one in "
            "Hounsfield units (CT) or one filled outside the head with a negative value is not read right; give the "
            "T1 before normalization, with 0 or NaN outside the head"
        )
    # The voxel size of the affine, which places the voxels (the header's zooms may disagree with it).
    zooms = nibabel.affines.voxel_sizes(image.affine)
    linear = image.affine[:3, :3]
    oblique = not np.allclose(linear, np.diag(np.diag(linear)), atol=1e-6 * float(np.abs(linear).max()))
    if oblique or not np.allclose(zooms, voxel_size, atol=1e-3):  # a rotated grid is resampled whatever its size
        resampled = resample_to_output(nibabel.Nifti1Image(data, image.affine), voxel_sizes=(voxel_size,) * 3, order=1)
        data = np.asarray(resampled.dataobj, dtype=np.float32)
    try:
        return zscore_in_brain(fit_to_shape(data, shape))
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from None


class VolumeCache:
    """Preprocessed volumes as ``.npy`` files keyed by (file, size, mtime, grid): a changed file or
    grid is re-read, anything else is loaded from the cache.  Writes are atomic."""

    def __init__(
        self,
        directory: str | os.PathLike,
        shape: Sequence[int] = GRID_4MM,
        voxel_size: float = 4.0,
        *,
        read_only: bool = False,
    ):
        self.directory = Path(directory)
        self.shape = tuple(int(side) for side in shape)
        self.voxel_size = float(voxel_size)
        self.read_only = read_only  # volumes not in the cache are read from their files, not added

    def key(self, path: Path) -> str:
        status = path.stat()
        text = f"{path.resolve()}|{status.st_size}|{status.st_mtime_ns}|{self.shape}|{self.voxel_size}"
        return hashlib.sha1(text.encode()).hexdigest()

    def get(self, path: str | os.PathLike) -> np.ndarray:
        path = Path(path)
        cached = self.directory / f"{self.key(path)}.npy"
        if cached.is_file():
            try:
                return np.load(cached)
            except (OSError, ValueError):
                pass  # a damaged cache file is read again from the volume and replaced
        volume = load_volume(path, self.shape, self.voxel_size)
        if self.read_only:
            return volume
        try:
            atomic_write(cached, lambda stream: np.save(stream, volume))
        except OSError as error:
            raise CacheError(f"cannot write the volume cache {self.directory}: {_reason(error)}") from None
        return volume

    def check_writable(self) -> None:
        """Create the cache folder; :class:`CacheError` if it cannot be made or written."""
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise CacheError(f"cannot make the volume cache {self.directory}: {_reason(error)}") from None
        problem = writable_file_problem(self.directory / "probe.npy")
        if problem:
            raise CacheError(f"cannot write the volume cache: {problem}")


def _reason(error: OSError) -> str:
    """``[Errno 17] File exists: 'x'`` -> ``file exists``."""
    return error.strerror.lower() if error.strerror else str(error)


class CacheError(ValueError):
    """The volume cache cannot be written: the command stops (no volume is at fault)."""

    def __init__(self, message: str) -> None:
        super().__init__(f"{message}; choose another folder for cache=")


def load_cohort(
    manifest: str | os.PathLike,
    cache_directory: str | os.PathLike,
    *,
    shape: Sequence[int] = GRID_4MM,
    voxel_size: float = 4.0,
    progress: bool = True,
    read_only_cache: bool = False,
    progress_label: str = "volumes",
) -> Cohort:
    """Every usable subject of ``manifest``, preprocessed (through the cache; with
    ``read_only_cache`` the cache is read, never written), under a progress bar named
    ``progress_label``.  Unreadable files join the manifest's problems (:attr:`Cohort.problems`);
    no usable subject is an error."""
    from tqdm.auto import tqdm

    rows, problems = read_manifest(manifest)
    cache = VolumeCache(cache_directory, shape, voxel_size, read_only=read_only_cache)
    if not read_only_cache:
        cache.check_writable()
    volumes, kept = [], []
    for row in tqdm(rows, desc=progress_label, disable=not progress, unit="subject"):
        try:
            volumes.append(cache.get(row.path))
            kept.append(row)
        except (RunInterrupted, CacheError):
            raise
        except Exception as error:  # a corrupt file must not lose the cohort: report it by line
            reason = " ".join(str(error).split())
            named = str(row.path) in reason  # the path is named once
            problems.append((row.line, f"cannot read: {reason}" if named else f"cannot read {row.path}: {reason}"))
    problems.sort()
    check_usable_rows(manifest, problems, kept=len(kept))
    return Cohort(
        volumes=torch.from_numpy(np.stack(volumes)).unsqueeze(1),
        ages=torch.tensor([row.age for row in kept], dtype=torch.float32),
        sites=[row.site for row in kept],
        paths=[row.path for row in kept],
        problems=problems,
        subjects=[row.subject for row in kept],
        voxel_size=voxel_size,
    )
