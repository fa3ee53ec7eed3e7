"""PSF matching, the showcase built on the Task: homogenise a field's PSF cell by cell, and check it.

Not part of the core (the Task family, `map_reduce`, the image, geometry and PSF types, I/O):
a mapper and the tools around it, which users of the field reach for together.

* `homogenize`: `PsfMatchMapper` (a matching kernel solved from each cell's PSF image, or the
  Gaussian approximation), its targets (`make_target`, `choose_target`, `check_target`).
* `kernels`: matching kernels solved from PSF images, one or a stack at a time
  (`solve_matching_kernel`, `solve_matching_kernels`), and the cells' convolution.
* `simulate`: star fields with spatially varying PSFs (`simulate_exposure`, `field_psf`).
* `measure`: adaptive-moments widths and shapes of stars (`measure_star_widths`, `width_map`).
* `demo`: the ``imagemapreduce demo`` run, a Moffat field brought to one Gaussian.
"""

from __future__ import annotations

from .homogenize import (
    MatchingKernel,
    PsfMatchMapper,
    PsfMatchMapperConfig,
    PsfSurvey,
    TargetTooNarrowError,
    check_target,
    choose_target,
    make_target,
    solve_matching_kernel,
    solve_matching_kernels,
    survey_psf,
)
from .measure import measure_star_widths, width_map
from .simulate import field_psf, simulate_exposure

__all__ = [
    "MatchingKernel",
    "PsfMatchMapper",
    "PsfMatchMapperConfig",
    "PsfSurvey",
    "TargetTooNarrowError",
    "check_target",
    "choose_target",
    "field_psf",
    "make_target",
    "measure_star_widths",
    "simulate_exposure",
    "solve_matching_kernel",
    "solve_matching_kernels",
    "survey_psf",
    "width_map",
]
