"""The CARVE operator: float64 reference, chunked PyTorch, Triton kernels, one dispatching entry point."""

from .chunked import carve_chunked
from .dispatch import carve, carve_decode, triton_available
from .inputs import CarveInputError, CarveState
from .reference import carve_reference, carve_step

__all__ = [
    "CarveInputError",
    "CarveState",
    "carve",
    "carve_chunked",
    "carve_decode",
    "carve_reference",
    "carve_step",
    "triton_available",
]
