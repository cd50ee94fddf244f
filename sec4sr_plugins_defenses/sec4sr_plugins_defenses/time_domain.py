"""Time-domain input transformations on (B, 1, T) waveforms in [-1, 1].

=======  ============================================  ==========  ==============  ===============
name     operation                                     randomized  differentiable  default
=======  ============================================  ==========  ==============  ===============
``qt``   round to multiples of q (16-bit units)        no          no (BPDA)       q = 128
``bdr``  keep ``bits`` bits: QT with q = 2^(16-bits)   no          no (BPDA)       bits = 8
``at``   add Gaussian noise at an SNR (dB)             yes         yes             snr = 25 dB
``as``   moving average over an odd window             no          yes             kernel = 3
``ms``   moving median over an odd window              no          subgradient     kernel = 3
=======  ============================================  ==========  ==============  ===============

Every transformation acts on the whole batch at once on the input's device, and clips its output to [-1, 1].
AS and MS zero-pad (w-1)/2 samples on each side ("same" length). Even windows are refused by validation (the
predecessor crashed on them with a length mismatch).

How AS and MS run. Both are a few elementwise passes over shifted views of the padded batch, applied to blocks of
rows small enough to stay in the CPU's caches (:func:`by_rows`): AS sums the window by binary doubling
(:func:`box_sum`, ~2·log2(w) adds; a box-kernel ``conv1d`` was ~4× slower on the CPU), and MS for w ≤ 9 evaluates
a median-selection network of min/max comparisons (:func:`sliding_median`; the comparisons that overlapping
windows share are computed once), an order of magnitude faster than ``unfold(...).median()``, which remains the
path for w > 9. The outputs equal the plain convolution / median (tests compare with numpy and scipy).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field, field_validator

from sec4sr_core.sdk import Defense
from sec4sr_core.sdk import Params

INT16 = 32768.0


def _check_wave(x: torch.Tensor, name: str) -> None:
    from sec4sr_core.sdk import ParameterError

    if x.dim() != 3 or x.shape[1] != 1:
        raise ParameterError(f"{name}: expected a waveform batch (B, 1, T), got shape {tuple(x.shape)}")


def quantize(x: torch.Tensor, q: float) -> torch.Tensor:
    """Round ``x`` (in [-1, 1]) to the nearest multiple of ``q``/32768 and clip to [-1, 1]."""
    return (torch.round(x * (INT16 / q)) * (q / INT16)).clamp(-1.0, 1.0)


class QTParams(Params):
    q: int = Field(128, ge=1, le=32768, description="quantisation step in 16-bit sample units (1 = 16-bit PCM)")


class QT(Defense):
    """Quantisation: round samples to multiples of q (16-bit units); BPDA identity backward."""

    name = "qt"
    Params = QTParams
    differentiable = False
    randomized = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_wave(x, self.name)
        return quantize(x, float(self.params.q))


class BDRParams(Params):
    bits: int = Field(8, ge=1, le=16, description="bit depth kept, in bits (16 = unchanged 16-bit PCM)")


class BDR(Defense):
    """Bit-depth reduction to ``bits`` bits: QT with q = 2^(16-bits); BPDA identity backward."""

    name = "bdr"
    Params = BDRParams
    differentiable = False
    randomized = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_wave(x, self.name)
        return quantize(x, float(2 ** (16 - self.params.bits)))


class ATParams(Params):
    snr: float = Field(25.0, ge=-20.0, le=100.0, description="signal-to-noise ratio of the added noise, in dB")


class AT(Defense):
    """Additive Gaussian noise at a fixed SNR (dB) per utterance; randomized (seeded), differentiable.

    Signal power P = mean(x²) over the utterance; noise ~ N(0, P·10^(-snr/10)). The noise scale depends on x, and
    the gradient flows through it too.
    """

    name = "at"
    Params = ATParams
    differentiable = True
    randomized = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_wave(x, self.name)
        power = x.pow(2).mean(dim=(1, 2), keepdim=True)
        std = torch.sqrt(power * 10.0 ** (-self.params.snr / 10.0))
        noise = torch.randn(x.shape, generator=self.rng(x.device), device=x.device, dtype=x.dtype)
        return (x + std * noise).clamp(-1.0, 1.0)


# ----------------------------------------------------------------------------------------------------------------
# sliding windows without a convolution or a sort
# ----------------------------------------------------------------------------------------------------------------


#: elements per block of rows (:func:`by_rows`, MS without gradient): 1 MiB of float32, so the passes over a block
#: stay in the CPU's caches (measured best among 2^16..2^20 for ``ms`` on 64 × 3 s)
ROW_BLOCK = 1 << 18


def by_rows(fn, x: torch.Tensor, block: int = ROW_BLOCK) -> torch.Tensor:
    """``fn(x)`` for a row-wise ``fn``, applied to blocks of about ``block`` elements of ``x`` (B, ...) and
    concatenated. A multi-pass elementwise computation over a whole batch streams every pass through main memory;
    over cache-sized blocks of rows it does not (measured 1.5-4× faster on the CPU for ``as``/``ms``)."""
    rows = max(1, block // max(1, x[0].numel()))
    if x.shape[0] <= rows:
        return fn(x)
    return torch.cat([fn(c) for c in x.split(rows)])


def box_sum(p: torch.Tensor, w: int) -> torch.Tensor:
    """Sums of ``w`` consecutive samples along the last axis: out[..., i] = p[..., i:i+w].sum(), i < len - w + 1.

    Binary doubling: blocks of 1, 2, 4, ... samples (each one add of two shifted views of the previous), and the
    blocks of w's set bits added at their offsets — about 2·log2(w) elementwise passes in the input's dtype (each
    output sums w samples in at most log2(w) + popcount(w) adds), differentiable. A ``conv1d`` with a box kernel
    computes the same but on the CPU is several times slower on long single-channel signals (and its im2col
    buffer grows with w·T).
    """
    t = p.shape[-1] - w + 1
    block, size, offset, acc = p, 1, 0, None
    while True:
        if w & 1:
            part = block[..., offset:offset + t]
            acc = part.clone() if acc is None else acc.add_(part)
            offset += size
        w >>= 1
        if not w:
            return acc
        block = block[..., :-size] + block[..., size:]  # sums of 2·size consecutive samples
        size *= 2


#: Median-selection networks (Paeth; Devillard's ``opt_med{3,5,7,9}``): comparators (i, j) that put min at i and
#: max at j; after them the middle wire holds the median. ``tests/defenses`` checks each on all 0/1 inputs.
MEDIAN_NETWORKS: dict[int, tuple[tuple[int, int], ...]] = {
    3: ((0, 1), (1, 2), (0, 1)),
    5: ((0, 1), (3, 4), (0, 3), (1, 4), (1, 2), (2, 3), (1, 2)),
    7: ((0, 5), (0, 3), (1, 6), (2, 4), (0, 1), (3, 5), (2, 6), (2, 3), (3, 6), (4, 5), (1, 4), (1, 3), (3, 4)),
    9: ((1, 2), (4, 5), (7, 8), (0, 1), (3, 4), (6, 7), (1, 2), (4, 5), (7, 8), (0, 3), (5, 8), (4, 7), (3, 6),
        (1, 4), (2, 5), (4, 7), (4, 2), (6, 4), (4, 2)),
}


def _median_plan(w: int):
    """Compile ``MEDIAN_NETWORKS[w]`` for sliding windows: the value on a wire is (node, shift), node n an array
    over every window start; the same comparison at another shift (the windows overlap) is the same node. Returns
    (nodes, spans, target): nodes[n] = (kind, a, shift_a, b, shift_b) for n ≥ 1 (node 0 is the padded input),
    spans[n] = how many trailing samples node n lacks against the input, target = (node, shift) of the median."""
    nodes: list = [None]
    spans = [0]
    memo: dict = {}

    def node(kind, u, v):
        (a, sa), (b, sb) = sorted((u, v))  # min and max commute: one canonical order
        s = min(sa, sb)
        key = (kind, a, sa - s, b, sb - s)
        if key not in memo:
            memo[key] = len(nodes)
            nodes.append(key)
            spans.append(max(spans[a] + sa - s, spans[b] + sb - s))
        return memo[key], s

    wires = [(0, i) for i in range(w)]
    for i, j in MEDIAN_NETWORKS[w]:
        wires[i], wires[j] = node("min", wires[i], wires[j]), node("max", wires[i], wires[j])
    return nodes, spans, wires[w // 2]


def sliding_median(p: torch.Tensor, w: int, workspace: dict | None = None) -> torch.Tensor:
    """Medians of ``w`` consecutive samples along the last axis (w in :data:`MEDIAN_NETWORKS`), as elementwise
    min/max of shifted views — only the comparisons the median needs, each computed once for all windows.

    Without gradient it uses ``torch.minimum``/``maximum``, writing into the arrays of ``workspace`` when one is
    given (allocated by the first, largest call; later calls with as many or fewer rows reuse them). With gradient
    each comparison is a ``where`` on ``a <= b``, so the (sub)gradient of every output goes to exactly one selected
    input sample, as with ``median(dim)`` (``minimum``/``maximum`` would split it between tied samples).
    """
    nodes, spans, (target, shift) = _median_plan(w)
    n_in = p.shape[-1]
    grad = torch.is_grad_enabled() and p.requires_grad
    cache: dict[int, torch.Tensor] = {0: p}
    masks: dict[tuple, torch.Tensor] = {}

    def value(n: int) -> torch.Tensor:
        if n not in cache:
            kind, a, sa, b, sb = nodes[n]
            length = n_in - spans[n]
            u, v = value(a)[..., sa:sa + length], value(b)[..., sb:sb + length]
            if grad:
                key = (a, sa, b, sb)  # the min and the max of one comparison share its mask
                if key not in masks:
                    masks[key] = u <= v
                cache[n] = torch.where(masks[key], u, v) if kind == "min" else torch.where(masks[key], v, u)
            else:
                out = None
                if workspace is not None:
                    if n not in workspace:
                        workspace[n] = u.new_empty(u.shape)
                    out = workspace[n][: u.shape[0]]
                cache[n] = (torch.minimum if kind == "min" else torch.maximum)(u, v, out=out)
        return cache[n]

    t = n_in - w + 1
    return value(target)[..., shift:shift + t]


class WindowParams(Params):
    kernel: int = Field(3, ge=1, le=1001, description="window length in samples (odd; 1 = identity)")

    @field_validator("kernel")
    @classmethod
    def _odd(cls, v: int) -> int:
        if v % 2 == 0:
            raise ValueError(f"window length must be odd so the output keeps the input's length, got {v}")
        return v


class AS(Defense):
    """Average smoothing: moving mean over an odd window of ``kernel`` samples, zero "same" padding."""

    name = "as"
    Params = WindowParams
    differentiable = True
    randomized = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_wave(x, self.name)
        w = self.params.kernel
        if w == 1:
            return x.clamp(-1.0, 1.0)
        return by_rows(lambda c: box_sum(F.pad(c, (w // 2, w // 2)), w).mul_(1.0 / w).clamp(-1.0, 1.0), x)


def _median_no_grad(x: torch.Tensor, w: int) -> torch.Tensor:
    """MS without autograd: blocks of rows through one padded buffer and one workspace, the result written in
    place. Fresh multi-megabyte temporaries per call would come from ``mmap`` and page-fault on first touch
    (measured: ~17 000 faults and 4× the time per 64 × 3 s call once glibc returns the memory to the system)."""
    b, c, t = x.shape
    h = w // 2
    rows = max(1, min(b, ROW_BLOCK // max(1, c * (t + w - 1))))
    out = torch.empty_like(x)
    padded = x.new_zeros(rows, c, t + w - 1)
    workspace: dict = {}
    for s in range(0, b, rows):
        n = min(rows, b - s)
        p = padded[:n]
        p[..., h:h + t].copy_(x[s:s + n])
        torch.clamp(sliding_median(p, w, workspace), -1.0, 1.0, out=out[s:s + n])
    return out


class MS(Defense):
    """Median smoothing: moving median over an odd window of ``kernel`` samples, zero "same" padding.

    Differentiable almost everywhere: the gradient goes to the selected (median) sample.
    """

    name = "ms"
    Params = WindowParams
    differentiable = True
    randomized = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_wave(x, self.name)
        w = self.params.kernel
        if w == 1:
            return x.clamp(-1.0, 1.0)
        if w in MEDIAN_NETWORKS:
            if torch.is_grad_enabled() and x.requires_grad:
                return by_rows(lambda c: sliding_median(F.pad(c, (w // 2, w // 2)), w).clamp(-1.0, 1.0), x)
            return _median_no_grad(x, w)
        windows = F.pad(x, (w // 2, w // 2)).unfold(-1, w, 1)  # (B, 1, T, w), a view
        return windows.median(dim=-1).values.clamp(-1.0, 1.0)
