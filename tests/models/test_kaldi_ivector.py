"""Kaldi text-format loaders (on small files the tests write), the batched i-vector extractor against a plain
per-utterance computation, and PLDA scoring against scipy's Gaussian log-densities."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import multivariate_normal

from sec4sr_core.base.errors import Sec4srError
from sec4sr_plugins_models import kaldi_io
from sec4sr_plugins_models.backend import PLDABackend
from sec4sr_plugins_models.ivector import IVector

UBM_TEXT = """<FullGMM>
<GCONSTS>  [ -10.5 -11.25 ]
<WEIGHTS>  [ 0.4 0.6 ]
<MEANS_INVCOVARS>  [
  1 2
  -0.5 0.25 ]
<INV_COVARS>  [
  2
  0.5 3 ]
 [
  1
  0 1 ]
</FullGMM>
"""


def test_reads_handwritten_full_gmm(tmp_path):
    (tmp_path / "ubm.txt").write_text(UBM_TEXT)
    g = kaldi_io.read_full_gmm(tmp_path / "ubm.txt")
    assert g.gconsts.tolist() == [-10.5, -11.25]
    assert g.means_invcovars.tolist() == [[1, 2], [-0.5, 0.25]]
    assert g.inv_covars[0].tolist() == [[2, 0.5], [0.5, 3]]
    assert g.inv_covars[1].tolist() == [[1, 0], [0, 1]]


def test_reads_handwritten_extractor_plda_and_vectors(tmp_path):
    (tmp_path / "ie.txt").write_text("<IvectorExtractor> <w> [ ]\n<w_vec> [ 0 0 ]\n<M> 2  [\n 1 2 3\n 4 5 6 ]\n"
                                     " [\n 0 1 0\n 1 0 1 ]\n<SigmaInv>  [\n 1\n 0 2 ]\n [\n 3\n 1 4 ]\n"
                                     "<IvectorOffset> 100 </IvectorExtractor>\n")
    e = kaldi_io.read_ivector_extractor(tmp_path / "ie.txt")
    assert e.M.shape == (2, 2, 3) and e.M[0, 1].tolist() == [4, 5, 6]
    assert e.sigma_inv[1].tolist() == [[3, 1], [1, 4]] and e.offset == 100
    (tmp_path / "plda.txt").write_text("<Plda>  [ 1 2 ]\n [\n  1 0\n  0 1 ]\n [ 0.5 2 ]\n</Plda>\n")
    p = kaldi_io.read_plda(tmp_path / "plda.txt")
    assert p.mean.tolist() == [1, 2] and p.psi.tolist() == [0.5, 2]
    (tmp_path / "mean.vec").write_text(" [ 0.1 -0.2 3e-2 ]\n")
    assert kaldi_io.read_vector(tmp_path / "mean.vec").tolist() == pytest.approx([0.1, -0.2, 0.03])
    (tmp_path / "transform.txt").write_text(" [\n  1 2 3 4\n  5 6 7 8 ]\n")
    assert kaldi_io.read_matrix(tmp_path / "transform.txt").shape == (2, 4)


@pytest.mark.parametrize("text,needle", [
    ("<FullGMM> <GCONSTS> [ 1 2 ] <MEANS_INVCOVARS>", "<WEIGHTS>"),
    ("<Plda> [ 1 2 ] [\n 1 0\n 0 1 ] [ 1 ]\n</Plda>", "inconsistent PLDA sizes"),
    ("<FullGMM> <GCONSTS> [ 1 x ] ", "a number"),
])
def test_malformed_files_give_clear_errors(tmp_path, text, needle):
    f = tmp_path / "bad.txt"
    f.write_text(text)
    reader = kaldi_io.read_plda if text.startswith("<Plda>") else kaldi_io.read_full_gmm
    with pytest.raises(Sec4srError, match=needle):
        reader(f)
    with pytest.raises(Sec4srError, match="not found"):
        kaldi_io.read_plda(tmp_path / "missing.txt")


def randomize(model: IVector, seed: int = 0) -> IVector:
    """Random but valid UBM, extractor and back-end (small sizes)."""
    g = torch.Generator().manual_seed(seed)
    c, f, _ = model.inv_covars.shape
    d = model.ie_M.shape[2]
    a = torch.randn(c, f, f, generator=g) * 0.05
    model.inv_covars = (a @ a.transpose(1, 2) + 0.02 * torch.eye(f)).float()
    model.means_invcovars = torch.randn(c, f, generator=g) * 0.1
    model.gconsts = torch.randn(c, generator=g)
    model.ie_M = torch.randn(c, f, d, generator=g) * 0.3
    s = torch.randn(c, f, f, generator=g) * 0.1
    model.ie_sigma_inv = s @ s.transpose(1, 2) + torch.eye(f)
    b = model.backend
    b.mean = torch.randn(b.in_dim, generator=g)
    b.lda = torch.randn(b.dim, b.in_dim + 1, generator=g)
    b.plda_mean = torch.randn(b.dim, generator=g) * 0.1
    b.plda_transform = torch.randn(b.dim, b.dim, generator=g) * 0.5 + torch.eye(b.dim)
    b.psi = torch.rand(b.dim, generator=g) * 3
    model.prepare()
    return model


def test_kaldi_files_round_trip_through_the_model(tmp_path):
    m = randomize(IVector(components=3, ivector_dim=5, lda_dim=3, num_ceps=4))
    m.export_kaldi(tmp_path)
    for name in ("final_ubm.txt", "final_ie.txt", "plda.txt", "mean.vec", "transform.txt"):
        assert (tmp_path / name).exists()
    loaded = IVector(kaldi_dir=tmp_path, components=7, ivector_dim=9, lda_dim=2, num_ceps=4)
    loaded.load_weights(tmp_path)  # sizes come from the files, not the parameters
    assert loaded.ie_M.shape == (3, 12, 5) and loaded.backend.lda.shape == (3, 6)
    x = torch.randn(2, 1, 4000) * 0.1
    m.eval(), loaded.eval()
    torch.testing.assert_close(loaded.embed(x), m.embed(x), rtol=1e-4, atol=1e-4)


def test_kaldi_feature_dimension_mismatch_is_refused(tmp_path):
    randomize(IVector(components=2, ivector_dim=4, lda_dim=2, num_ceps=4)).export_kaldi(tmp_path)
    with pytest.raises(Sec4srError, match="UBM features are 12-d"):
        IVector(kaldi_dir=tmp_path).load_weights(tmp_path)


def test_batched_extractor_matches_per_utterance_formula():
    m = randomize(IVector(components=4, ivector_dim=6, lda_dim=3, num_ceps=4), seed=1).double()
    m.prepare()
    g = torch.Generator().manual_seed(2)
    n = torch.rand(5, 4, generator=g, dtype=torch.float64) * 20
    fs = torch.randn(5, 4, 12, generator=g, dtype=torch.float64)
    got = m.extract(n, fs)
    assert torch.allclose(got, m.extract(n, fs, precomputed=False))
    M, S, off = m.ie_M.numpy(), m.ie_sigma_inv.numpy(), float(m.ie_offset)
    for b in range(5):  # the predecessor's per-utterance formula, in numpy
        L = np.eye(6)
        lin = np.zeros(6)
        for c in range(4):
            L += n[b, c].item() * M[c].T @ S[c] @ M[c]
            lin += M[c].T @ S[c] @ fs[b, c].numpy()
        lin[0] += off
        w = np.linalg.solve(L, lin)
        w[0] -= off
        np.testing.assert_allclose(got[b].numpy(), w, rtol=1e-8, atol=1e-8)


def test_ubm_posteriors_match_full_covariance_gaussians():
    m = randomize(IVector(components=3, ivector_dim=4, lda_dim=2, num_ceps=2), seed=4).double()
    m.prepare()
    x = torch.randn(6, 6, dtype=torch.float64)
    ll = m.log_likelihoods(x)
    inv = m.inv_covars.numpy()
    for c in range(3):
        ref = m.gconsts[c].item() + x.numpy() @ m.means_invcovars[c].numpy() - 0.5 * np.einsum(
            "nf,fg,ng->n", x.numpy(), inv[c], x.numpy())
        np.testing.assert_allclose(ll[:, c].numpy(), ref, rtol=1e-9, atol=1e-9)


def test_plda_llr_matches_scipy_gaussians():
    b = PLDABackend(6, 4).double()
    b.psi = torch.tensor([3.0, 1.0, 0.5, 0.1], dtype=torch.float64)
    u = torch.randn(3, 4, dtype=torch.float64)
    e = torch.randn(2, 4, dtype=torch.float64)
    got = b.score(u, e)
    psi = b.psi.numpy()
    for i in range(3):
        for j in range(2):
            same = multivariate_normal(psi / (psi + 1) * e[j].numpy(), np.diag(1 + psi / (psi + 1))).logpdf(u[i].numpy())
            diff = multivariate_normal(np.zeros(4), np.diag(psi + 1)).logpdf(u[i].numpy())
            assert got[i, j].item() == pytest.approx(same - diff, rel=1e-9, abs=1e-9)


def test_length_norm_gradient_flows_through_the_norm():
    b = PLDABackend(5, 3).double()
    b.lda = torch.randn(3, 6, dtype=torch.float64)
    w = torch.randn(2, 5, dtype=torch.float64, requires_grad=True)
    y = b.lda_norm(w)
    assert torch.allclose(y.norm(dim=1), torch.full((2,), math.sqrt(3), dtype=torch.float64))
    (g,) = torch.autograd.grad(y.norm(dim=1).sum(), w)
    assert g.abs().max() < 1e-10  # the norm is constant, so its gradient vanishes only if it flows through it


def test_plda_fit_whitens_within_class_and_diagonalises_between_class():
    g = torch.Generator().manual_seed(0)
    centers = torch.randn(12, 8, generator=g, dtype=torch.float64) * 3
    labels = torch.arange(12).repeat_interleave(10)
    w = centers[labels] + torch.randn(120, 8, generator=g, dtype=torch.float64)
    b = PLDABackend(8, 5).double()
    b.fit(w, labels)
    y = b.lda_norm(w)
    u = (y - b.plda_mean) @ b.plda_transform.T
    means = torch.stack([u[labels == k].mean(0) for k in range(12)])
    within = u - means[labels]
    torch.testing.assert_close(within.T @ within / 120, torch.eye(5, dtype=torch.float64), atol=1e-4, rtol=1e-4)
    assert torch.all(b.psi[:-1] >= b.psi[1:])
    with pytest.raises(Sec4srError, match="needs more than 5 training speakers"):
        PLDABackend(8, 5).fit(w[:40], labels[:40] % 4)


def test_lda_shrinkage_keeps_plda_finite_with_fewer_vectors_than_dimensions():
    # the x-vector situation on the embedded corpus: 216 vectors of 24 speakers in more dimensions than vectors
    g = torch.Generator().manual_seed(1)
    centers = torch.randn(24, 256, generator=g, dtype=torch.float64) * 0.5
    labels = torch.arange(24).repeat_interleave(9)
    w = centers[labels] + torch.randn(216, 256, generator=g, dtype=torch.float64)
    raw, shrunk = PLDABackend(256, 20).double(), PLDABackend(256, 20).double()
    raw.fit(w, labels)
    shrunk.fit(w, labels, shrinkage=0.1)
    assert float(raw.psi.max()) > 1e8  # unregularised LDA found the null space of S_w
    assert float(shrunk.psi.max()) < 1e3
    u = shrunk(w)
    scores = shrunk.score(u, torch.stack([u[labels == k].mean(0) for k in range(24)]))
    assert float(scores.abs().max()) < 1e4
    assert bool((scores.argmax(dim=1) == labels).double().mean() > 0.9)
