"""Kaldi text-format model files (``--binary=false``): readers and writers.

* ``final_ubm.txt`` — ``<FullGMM> <GCONSTS> [..] <WEIGHTS> [..] <MEANS_INVCOVARS> [rows] <INV_COVARS> [lower-tri]×C``
* ``final_ie.txt`` — ``<IvectorExtractor> <w> [..] <w_vec> [..] <M> C [F×D]×C <SigmaInv> [lower-tri]×C
  <IvectorOffset> x``
* ``plda.txt`` — ``<Plda> [mean] [transform rows] [psi] </Plda>``
* ``mean.vec`` — ``[ v1 v2 ... ]``; ``transform.txt`` — ``[ rows ]`` (D_out × (D_in + 1), last column an offset)

Malformed files raise :class:`~sec4sr_core.base.errors.Sec4srError` naming the file and what was expected.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import torch

from sec4sr_core.sdk import Sec4srError

_TOKEN = re.compile(r"<[^>\s]+>|\[|\]|\n|[^\s\[\]]+")


class KaldiTextReader:
    """A cursor over the tokens of a Kaldi text file (newlines kept as tokens to delimit matrix rows)."""

    def __init__(self, text: str, source: str) -> None:
        self.toks = _TOKEN.findall(text)
        self.i = 0
        self.source = source

    def fail(self, expected: str) -> Sec4srError:
        got = self.toks[self.i] if self.i < len(self.toks) else "end of file"
        return Sec4srError(f"{self.source}: not a Kaldi text file of the expected kind: expected {expected}, "
                           f"got {got!r} (token {self.i})")

    def _skip_newlines(self) -> None:
        while self.i < len(self.toks) and self.toks[self.i] == "\n":
            self.i += 1

    def peek(self) -> str | None:
        self._skip_newlines()
        return self.toks[self.i] if self.i < len(self.toks) else None

    def next(self) -> str:
        self._skip_newlines()
        if self.i >= len(self.toks):
            raise self.fail("more tokens")
        tok = self.toks[self.i]
        self.i += 1
        return tok

    def expect(self, tag: str) -> None:
        if self.peek() != tag:
            raise self.fail(tag)
        self.i += 1

    def maybe(self, tag: str) -> bool:
        if self.peek() == tag:
            self.i += 1
            return True
        return False

    def number(self) -> float:
        tok = self.next()
        try:
            return float(tok)
        except ValueError:
            self.i -= 1
            raise self.fail("a number") from None

    def rows(self) -> list[list[float]]:
        """A bracketed block ``[ a b \\n c d ]`` as rows (a vector is one row)."""
        self.expect("[")
        rows: list[list[float]] = []
        cur: list[float] = []
        while True:
            if self.i >= len(self.toks):
                raise self.fail("']'")
            tok = self.toks[self.i]
            self.i += 1
            if tok == "]":
                break
            if tok == "\n":
                if cur:
                    rows.append(cur)
                    cur = []
                continue
            try:
                cur.append(float(tok))
            except ValueError:
                self.i -= 1
                raise self.fail("a number or ']'") from None
        if cur:
            rows.append(cur)
        return rows

    def vector(self) -> torch.Tensor:
        rows = self.rows()
        return torch.tensor([v for r in rows for v in r], dtype=torch.float64)

    def matrix(self) -> torch.Tensor:
        rows = self.rows()
        if not rows:
            return torch.zeros(0, 0, dtype=torch.float64)
        if len({len(r) for r in rows}) != 1:
            raise Sec4srError(f"{self.source}: matrix rows have different lengths")
        return torch.tensor(rows, dtype=torch.float64)

    def sp_matrix(self) -> torch.Tensor:
        """A symmetric matrix written as its lower triangle (row i has i+1 values)."""
        rows = self.rows()
        n = len(rows)
        if any(len(r) != i + 1 for i, r in enumerate(rows)):
            raise Sec4srError(f"{self.source}: a packed symmetric matrix must have rows of length 1, 2, ..., n")
        m = torch.zeros(n, n, dtype=torch.float64)
        for i, r in enumerate(rows):
            m[i, : i + 1] = torch.tensor(r, dtype=torch.float64)
        return m + m.tril(-1).T


def _read(path: str | Path) -> KaldiTextReader:
    path = Path(path)
    if not path.exists():
        raise Sec4srError(f"Kaldi model file not found: {path}")
    try:
        text = path.read_text()
    except UnicodeDecodeError:
        raise Sec4srError(f"{path}: binary Kaldi file; convert it with `copy-matrix --binary=false` "
                          f"(or gmm-global-copy / ivector-extractor-copy / ivector-copy-plda --binary=false)") from None
    return KaldiTextReader(text, str(path))


@dataclass
class FullGMM:
    gconsts: torch.Tensor  # (C,)
    weights: torch.Tensor  # (C,)
    means_invcovars: torch.Tensor  # (C, F)
    inv_covars: torch.Tensor  # (C, F, F)


def read_full_gmm(path: str | Path) -> FullGMM:
    r = _read(path)
    r.expect("<FullGMM>")
    r.expect("<GCONSTS>")
    gconsts = r.vector()
    r.expect("<WEIGHTS>")
    weights = r.vector()
    r.expect("<MEANS_INVCOVARS>")
    mi = r.matrix()
    r.expect("<INV_COVARS>")
    inv = torch.stack([r.sp_matrix() for _ in range(mi.shape[0])]) if mi.numel() else torch.zeros(0)
    r.expect("</FullGMM>")
    c = gconsts.numel()
    if weights.numel() != c or mi.shape[0] != c or inv.shape[:2] != (c, mi.shape[1]):
        raise Sec4srError(f"{path}: inconsistent FullGMM sizes (gconsts {c}, weights {weights.numel()}, "
                          f"means {tuple(mi.shape)}, inv_covars {tuple(inv.shape)})")
    return FullGMM(gconsts, weights, mi, inv)


@dataclass
class IvectorExtractorFile:
    w_vec: torch.Tensor  # (C,)
    M: torch.Tensor  # (C, F, D)
    sigma_inv: torch.Tensor  # (C, F, F)
    offset: float


def read_ivector_extractor(path: str | Path) -> IvectorExtractorFile:
    r = _read(path)
    r.expect("<IvectorExtractor>")
    if r.maybe("<w>"):
        r.matrix()
    w_vec = r.vector() if r.maybe("<w_vec>") else torch.zeros(0, dtype=torch.float64)
    r.expect("<M>")
    c = int(r.number())
    M = torch.stack([r.matrix() for _ in range(c)])
    r.expect("<SigmaInv>")
    sigma_inv = torch.stack([r.sp_matrix() for _ in range(c)])
    r.expect("<IvectorOffset>")
    offset = r.number()
    if sigma_inv.shape[1] != M.shape[1]:
        raise Sec4srError(f"{path}: M is {tuple(M.shape)} but SigmaInv is {tuple(sigma_inv.shape)}")
    return IvectorExtractorFile(w_vec, M, sigma_inv, offset)


@dataclass
class PldaFile:
    mean: torch.Tensor  # (D,)
    transform: torch.Tensor  # (D, D)
    psi: torch.Tensor  # (D,)


def read_plda(path: str | Path) -> PldaFile:
    r = _read(path)
    r.expect("<Plda>")
    mean = r.vector()
    transform = r.matrix()
    psi = r.vector()
    r.expect("</Plda>")
    d = mean.numel()
    if transform.shape != (d, d) or psi.numel() != d:
        raise Sec4srError(f"{path}: inconsistent PLDA sizes (mean {d}, transform {tuple(transform.shape)}, "
                          f"psi {psi.numel()})")
    return PldaFile(mean, transform, psi)


def read_vector(path: str | Path) -> torch.Tensor:
    return _read(path).vector()


def read_matrix(path: str | Path) -> torch.Tensor:
    return _read(path).matrix()


# ----------------------------------------------------------------------------------------------------------------
# writers (used by the tests and to export trained models to Kaldi)
# ----------------------------------------------------------------------------------------------------------------


def _fmt(x: float) -> str:
    return repr(float(x))


def format_vector(v: torch.Tensor) -> str:
    return " [ " + " ".join(_fmt(x) for x in v.flatten().tolist()) + " ]\n"


def format_matrix(m: torch.Tensor) -> str:
    if m.numel() == 0:
        return " [ ]\n"
    rows = ["  " + " ".join(_fmt(x) for x in row) for row in m.tolist()]
    return " [\n" + "\n".join(rows) + " ]\n"


def format_sp_matrix(m: torch.Tensor) -> str:
    rows = ["  " + " ".join(_fmt(x) for x in m[i, : i + 1].tolist()) for i in range(m.shape[0])]
    return " [\n" + "\n".join(rows) + " ]\n"


def write_full_gmm(path: str | Path, g: FullGMM) -> None:
    text = ("<FullGMM> \n<GCONSTS> " + format_vector(g.gconsts) + "<WEIGHTS> " + format_vector(g.weights)
            + "<MEANS_INVCOVARS> " + format_matrix(g.means_invcovars) + "<INV_COVARS> "
            + "".join(format_sp_matrix(m) for m in g.inv_covars) + "</FullGMM> \n")
    Path(path).write_text(text)


def write_ivector_extractor(path: str | Path, e: IvectorExtractorFile) -> None:
    text = ("<IvectorExtractor> <w> [ ]\n<w_vec> " + format_vector(e.w_vec) + f"<M> {e.M.shape[0]} "
            + "".join(format_matrix(m) for m in e.M) + "<SigmaInv> "
            + "".join(format_sp_matrix(s) for s in e.sigma_inv) + f"<IvectorOffset> {_fmt(e.offset)} "
            + "</IvectorExtractor> \n")
    Path(path).write_text(text)


def write_plda(path: str | Path, p: PldaFile) -> None:
    Path(path).write_text("<Plda> " + format_vector(p.mean) + format_matrix(p.transform) + format_vector(p.psi)
                          + "</Plda> \n")


def write_vector(path: str | Path, v: torch.Tensor) -> None:
    Path(path).write_text(format_vector(v))


def write_matrix(path: str | Path, m: torch.Tensor) -> None:
    Path(path).write_text(format_matrix(m))
