"""The zoo's families: each module registers its variants with their model cards when it is imported."""

from __future__ import annotations

from . import greedyvig, mobilenetv2, mobileone, mobilevig

FAMILIES = (mobilevig, greedyvig, mobileone, mobilenetv2)
