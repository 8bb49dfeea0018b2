"""The tuning of the Triton CARVE kernels as data: one frozen ``CarveSettings`` per call.

``choose_settings(shapes, dtype, device, chunk_size)`` is the only place that decides how a call runs:
which kernel family, the precision of each product, the dtypes of the buffers kept for the backward,
the tile size, the V split, warps and register caps. It depends on the shape, the dtype and the device
only, so a benchmark can print the settings of the call it timed (``settings.as_dict()``); docs/kernels.md
has the table and what was measured to choose each value.
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass

import torch

from .inputs import CarveInputError, CarveShapes
from .layout import block, interpreting

SUPPORTED_CHUNKS = (16, 32, 64)
MAX_REGISTER_DIM = 128  # the chunk kernels hold a [K, V] state per program in registers
MAX_FP32_OPERAND_TILE = 128 * 64  # padded K*V above this needs more shared memory than an H200 block has
KERNELS = ("chunk", "wide")
# programs per (sequence, head) of the chunk sweeps. Not 2: with the sweep's 8 warps its 64-column tiles
# miscompile on sm_90 (content gradients off by about 1.4 against the float64 oracle at B = 4, H = 16,
# T = 1024, and an illegal memory access with the content term off); with 4 warps it is correct but
# slower than no split (fwd + bwd 9.9 against 8.1 ms at B = 8, H = 8, T = 4096; 47.6 against 31.2 ms
# for a split of 8 at B = 1, H = 8, T = 32768; H100)
VALUE_SPLITS = (1, 4, 8)
MIN_SPLIT_COLUMNS = 16  # value columns per program of a split sweep (the smallest tensor-core tile)
DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}


@dataclass(frozen=True)
class CarveSettings:
    """How one call of the Triton operator runs. Validated on construction.

    kernel            ``chunk`` (chunk_fwd/chunk_bwd/chunk_grads: K, V <= 128) or ``wide`` (wide_kernels:
                      larger heads, and fp32 operands on tiles above 128 x 64)
    precision         tl.dot precision of fp32 operands: ``tf32`` on a GPU, ``ieee`` in the interpreter
    low_precision     the big state/value products take bf16 operands (bf16 inputs on a GPU), fp32 sums
    inverse_precision precision of the triangular-inverse products (``tf32`` with bf16 operands)
    fp16_decayed      the decayed products (M, P and their gradients) take tile-scaled fp16 operands
    saved_state       dtype of the chunk-start states kept for the backward (``bf16`` or ``fp32``)
    saved_gate        dtype of the erase gate kept for the backward (``bf16`` or ``fp32``)
    tile_rows         rows per tile; a 64-token content chunk is walked as 64 / tile_rows tiles
    value_split       programs per (sequence, head) of the sweeps, each with a slice of V
    sweep_warps       warps of the sequential sweeps (forward and backward)
    prep_warps, bprep_warps, post_warps   warps of the parallel launches
    par_maxnreg       register cap of bprep and post (0: none), so that two programs share an SM
    prep_maxnreg      register cap of prep (0: none)
    post_columns      key columns per program of the post-pass
    du_slots          tile slots summed per program of the content maps' gradient kernel
    num_stages        software pipelining depth of the chunk launches
    """

    kernel: str
    precision: str
    low_precision: bool
    inverse_precision: str
    fp16_decayed: bool
    saved_state: str
    saved_gate: str
    tile_rows: int
    value_split: int
    sweep_warps: int
    prep_warps: int = 4
    bprep_warps: int = 4
    post_warps: int = 8
    par_maxnreg: int = 128
    prep_maxnreg: int = 168
    post_columns: int = 64
    du_slots: int = 128
    num_stages: int = 1

    def __post_init__(self):
        def need(ok: bool, what: str):
            if not ok:
                raise CarveInputError(f"CarveSettings: {what}, got {self}")

        need(self.kernel in KERNELS, f"kernel must be one of {KERNELS}")
        need(self.precision in ("ieee", "tf32"), "precision must be ieee or tf32")
        need(self.inverse_precision in ("ieee", "tf32"), "inverse_precision must be ieee or tf32")
        need(self.saved_state in DTYPES and self.saved_gate in DTYPES, "saved_state and saved_gate must be bf16 or fp32")
        need(self.tile_rows in SUPPORTED_CHUNKS, f"tile_rows must be one of {SUPPORTED_CHUNKS}")
        need(self.post_columns in (16, 32, 64, 128), "post_columns must be 16, 32, 64 or 128")
        for name in ("value_split", "sweep_warps", "prep_warps", "bprep_warps", "post_warps", "du_slots",
                     "num_stages"):
            need(getattr(self, name) >= 1, f"{name} must be >= 1")
        need(self.par_maxnreg >= 0 and self.prep_maxnreg >= 0, "register caps must be >= 0")
        # the V split exchanges partial sums between programs that must all be resident, in VALUE_SPLITS
        # programs; choose_settings offers it on 32-row tiles (64-row tiles with the split pass the
        # interpreter's cases, content off, and have not run on a GPU)
        need(self.kernel == "wide" or self.value_split in VALUE_SPLITS,
             f"the chunk kernels split V in one of {VALUE_SPLITS}")

    def as_dict(self) -> dict:
        return asdict(self)

    @property
    def state_dtype(self) -> torch.dtype:
        return DTYPES[self.saved_state]

    @property
    def gate_dtype(self) -> torch.dtype:
        return DTYPES[self.saved_gate]


@functools.cache
def _multiprocessors(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def split_fits(nv: int, V: int) -> bool:
    """Whether the chunk sweeps can split V in nv programs: each keeps BV / nv >= MIN_SPLIT_COLUMNS
    columns of the padded block BV and the last program has a valid one."""
    per = block(V) // nv
    return nv == 1 or (per >= MIN_SPLIT_COLUMNS and (nv - 1) * per < V)


def _chunk_value_split(n_programs: int, V: int, tile_rows: int, device: torch.device) -> int:
    """The largest split of VALUE_SPLITS whose nv N H programs fit one per multiprocessor (they exchange
    partial sums and wait for each other, so all must be running) and that split_fits V; 1 where none
    does. So the sweeps run about one program per multiprocessor: at B H = 16 eight programs of 16
    value columns, at 32 four of 32, from 34 on one. Only on a GPU (the interpreter
    runs programs one after another) and on tiles of 32 rows or fewer."""
    if interpreting() or device.type != "cuda" or tile_rows > 32:
        return 1
    sms = _multiprocessors(device.index or 0)
    for nv in sorted(VALUE_SPLITS, reverse=True):
        if nv * n_programs <= sms and split_fits(nv, V):
            return nv
    return 1


def check_value_split(settings: CarveSettings, shapes: CarveShapes, device: torch.device) -> None:
    """Raises CarveInputError where the chunk sweeps cannot run settings.value_split programs per
    (sequence, head): a slice below MIN_SPLIT_COLUMNS or without a valid column, or, with content, a
    device that does not run all programs at once (the interpreter, or more programs than
    multiprocessors): they wait for each other's partial sums."""
    nv = settings.value_split
    if settings.kernel != "chunk" or nv == 1:
        return
    if not split_fits(nv, shapes.V):
        raise CarveInputError(f"value_split={nv} leaves fewer than {MIN_SPLIT_COLUMNS} columns per program or "
                              f"none valid in the last at V={shapes.V}")
    if shapes.r > 0 and (interpreting() or device.type != "cuda"):
        raise CarveInputError(f"value_split={nv} with content needs a GPU (its programs wait for each other; the "
                              "interpreter runs them one after another)")
    if shapes.r > 0:
        sms = _multiprocessors(device.index or 0)
        if nv * shapes.n_seq * shapes.H > sms:
            raise CarveInputError(f"value_split={nv} with content needs {nv} x {shapes.n_seq} sequences x {shapes.H} "
                                  f"heads <= {sms} multiprocessors")


def _wide_value_split(n_seq: int, H: int, V: int, content: bool, device: torch.device) -> int:
    """The wide kernels split V only without content (value tiles are then independent): doubling
    while N H NV programs leave multiprocessors idle and each keeps 32 value columns."""
    if content or device.type != "cuda" or interpreting():
        return 1
    sms = _multiprocessors(device.index or 0)
    nv = 1
    while n_seq * H * nv < sms and V // (nv * 2) >= 32:
        nv *= 2
    return max(1, min(nv, -(-V // 16)))


def choose_settings(shapes: CarveShapes, dtype: torch.dtype, device: torch.device, chunk_size: int) -> CarveSettings:
    """The settings of one call (see CarveSettings). ``chunk_size`` must be one of SUPPORTED_CHUNKS."""
    if chunk_size not in SUPPORTED_CHUNKS:
        raise CarveInputError(f"the Triton CARVE kernels support chunk_size in {SUPPORTED_CHUNKS}, got {chunk_size}")
    interp = interpreting()
    lowp = dtype == torch.bfloat16 and not interp  # fp16 keeps fp32 operands (its range is too small)
    precision = "ieee" if interp else "tf32"
    K, V = shapes.K, shapes.V
    wide = K > MAX_REGISTER_DIM or V > MAX_REGISTER_DIM or (
        not lowp and block(K) * block(V) > MAX_FP32_OPERAND_TILE)
    tile_rows = min(chunk_size, 32)  # 64-token chunks as two 32-row tiles: smaller live tiles, fewer spills
    if wide:
        value_split = _wide_value_split(shapes.n_seq, shapes.H, V, shapes.r > 0, device)
    else:
        value_split = _chunk_value_split(shapes.n_seq * shapes.H, V, tile_rows, device)
    return CarveSettings(
        kernel="wide" if wide else "chunk",
        precision=precision,
        low_precision=lowp,
        inverse_precision="tf32" if lowp else "ieee",  # A is rounded to bf16 for its products anyway
        fp16_decayed=lowp,
        saved_state="bf16" if lowp else "fp32",  # the backward reads them only as bf16 operands
        saved_gate="bf16" if lowp else "fp32",
        tile_rows=chunk_size if wide else tile_rows,
        value_split=value_split,
        sweep_warps=4 if wide else 8,
        par_maxnreg=0 if interp else 128,
        prep_maxnreg=0 if interp else 168,
    )
