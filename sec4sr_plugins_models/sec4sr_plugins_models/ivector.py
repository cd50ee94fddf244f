"""i-vector / PLDA (Kaldi VoxCeleb v1 style), batched and differentiable from waveform to PLDA score.

Levels: ``wave`` -> ``raw`` (MFCC 24, (B, T, 24)) -> ``delta`` ([static, Δ, ΔΔ], (B, T, 72)) -> ``cmvn`` (sliding
CMN, window 300) -> ``final`` (= ``cmvn``, the frames entering the UBM).

Head: full-covariance UBM posteriors over all components (``ll_c(x) = g_c + (Σ_c⁻¹μ_c)ᵀx − ½ xᵀΣ_c⁻¹x`` computed
as one GEMM with the Cholesky factor of Σ_c⁻¹), zeroth/first-order statistics, then the i-vector
``w = L⁻¹ b`` with ``L = I + Σ_c N_c M_cᵀΣ_c⁻¹M_c`` and ``b = Σ_c M_cᵀΣ_c⁻¹F_c + o·e₀`` (``w₀ −= o``, Kaldi's prior
offset). The constant terms ``M_cᵀΣ_c⁻¹M_c`` (C, D, D) and ``M_cᵀΣ_c⁻¹`` (C, D, F) are computed once when the weights
are set (the predecessor recomputed them per utterance per call) and ``L`` is solved for the whole batch with one
batched Cholesky. The back-end (LDA, length norm, PLDA) is :class:`~.backend.PLDABackend`.

Weights: the predecessor's Kaldi text files (``kaldi_dir`` holding ``final_ubm.txt``, ``final_ie.txt``,
``plda.txt``, ``mean.vec``, ``transform.txt``), or a model trained by ``sec4sr train --model ivector`` (UBM by
k-means + full-covariance EM, total-variability matrix by EM, LDA and PLDA; small sizes by default).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from pydantic import Field

from sec4sr_core.sdk import NotTrainedError, Sec4srError
from sec4sr_core.sdk import SpeakerModel, Task
from sec4sr_core.sdk import Params
from sec4sr_core.sdk import checkpoint_path, load_state, read_torch_file, save_checkpoint

from . import kaldi_io
from .backend import PLDABackend
from .frontends import KaldiMFCC, deltas, sliding_cmn


class IvectorParams(Params):
    kaldi_dir: Path | None = Field(None, description="folder with the predecessor's Kaldi text files "
                                   "(final_ubm.txt, final_ie.txt, plda.txt, mean.vec, transform.txt)")
    components: int = Field(32, ge=2, description="UBM Gaussians (trained models)")
    ivector_dim: int = Field(50, ge=2, description="i-vector dimension (trained models)")
    lda_dim: int = Field(20, ge=1, description="LDA output dimension (trained models; < number of speakers)")
    num_ceps: int = Field(24, ge=2, le=30, description="MFCC cepstra")
    cmn_window: int = Field(300, ge=1, description="sliding CMN window in frames (10 ms each)")
    dither: float = Field(0.0, ge=0, description="Kaldi dither in int16 units (0 = deterministic; the predecessor used 1)")
    frame_chunk: int = Field(4096, ge=64, description="frames per chunk of the UBM posterior computation (memory bound)")
    ubm_frames: int = Field(20000, ge=100, description="frames (seeded subset) the UBM is trained on")
    ubm_iters: int = Field(8, ge=1, description="full-covariance EM iterations when training the UBM")
    tv_iters: int = Field(5, ge=1, description="EM iterations when training the total-variability matrix")
    ivector_offset: float = Field(100.0, gt=0, description="prior offset of the first i-vector dimension (Kaldi)")


class IVector(SpeakerModel):
    """i-vector / PLDA with Kaldi MFCC 24 + Δ + ΔΔ, sliding CMN, full UBM; CSI-E/SV/OSI."""

    name = "ivector"
    Params = IvectorParams
    #: wave (B, 1, T) -> raw MFCC (B, frames, num_ceps) -> delta (+Δ+ΔΔ, 3·num_ceps) -> cmvn (sliding CMN) -> final
    stages = (("raw", "compute_mfcc"), ("delta", "add_deltas"), ("cmvn", "normalize_mean"), ("final", None))
    output = "embedding"
    tasks = (Task.CSI_E, Task.SV, Task.OSI)
    needs_training = True

    def __init__(self, params=None, **kwargs) -> None:
        super().__init__(params, **kwargs)
        p = self.params
        self.mfcc = KaldiMFCC(num_ceps=p.num_ceps, num_mel_bins=30, low_freq=20.0, high_freq=7600.0,
                              snip_edges=False, dither=p.dither, cepstral_lifter=22.0)
        feat = 3 * p.num_ceps
        c, d = p.components, p.ivector_dim
        self.register_buffer("gconsts", torch.zeros(c))
        self.register_buffer("means_invcovars", torch.zeros(c, feat))
        self.register_buffer("inv_covars", torch.eye(feat).repeat(c, 1, 1))
        self.register_buffer("ie_M", torch.zeros(c, feat, d))
        self.register_buffer("ie_sigma_inv", torch.eye(feat).repeat(c, 1, 1))
        self.register_buffer("ie_offset", torch.tensor(p.ivector_offset))
        self.backend = PLDABackend(d, min(p.lda_dim, d))
        self.generator: torch.Generator | None = None
        self.prepare()

    # -- constants ---------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def prepare(self) -> None:
        """Precompute the constant terms (Cholesky of Σ_c⁻¹ for posteriors; M_cᵀΣ_c⁻¹M_c and M_cᵀΣ_c⁻¹)."""
        inv = self.inv_covars.double()
        inv = 0.5 * (inv + inv.transpose(1, 2))
        chol = torch.linalg.cholesky(inv)  # Σ⁻¹ = L Lᵀ, xᵀΣ⁻¹x = ||Lᵀx||²
        c, f, _ = chol.shape
        # (F, C·F) so that x @ W gives Lᵀx for every component at once
        dtype = self.ie_M.dtype
        self._set_const("ubm_chol_t", chol.permute(1, 0, 2).reshape(f, c * f).to(dtype))
        u, p = self.ivector_constants()
        self._set_const("ie_U", u.to(dtype))
        self._set_const("ie_P", p.to(dtype))

    def _set_const(self, name: str, value: torch.Tensor) -> None:
        value = value.to(self.gconsts.device)
        if name in self._buffers:
            self._buffers[name] = value
        else:
            self.register_buffer(name, value, persistent=False)

    def ivector_constants(self, chunk: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
        """(M_cᵀΣ_c⁻¹M_c (C, D, D), M_cᵀΣ_c⁻¹ (C, D, F)) computed in float64 ``chunk`` components at a time and
        returned in the extractor's dtype (bounded memory for Kaldi-size models)."""
        us, ps = [], []
        for s in range(0, self.ie_M.shape[0], chunk):
            m = self.ie_M[s : s + chunk].double()
            p = m.transpose(1, 2) @ self.ie_sigma_inv[s : s + chunk].double()
            us.append((p @ m).to(self.ie_M.dtype))
            ps.append(p.to(self.ie_M.dtype))
        return torch.cat(us), torch.cat(ps)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        out = super().load_state_dict(state_dict, strict=strict, assign=assign)
        self.prepare()
        return out

    # -- weights ----------------------------------------------------------------------------------------------------
    def load_weights(self, home: Path, tag: str = "") -> None:
        if self.params.kaldi_dir is not None:
            self.load_kaldi(self.params.kaldi_dir)
            return
        path = checkpoint_path(self, home, tag)
        if not path.exists():
            raise NotTrainedError(f"model 'ivector' has no trained weights in {path.parent}; run "
                                  f"`sec4sr train --model ivector` (or pass kaldi_dir=<folder of Kaldi text files>)")
        payload = read_torch_file(path)
        if not isinstance(payload, dict) or "state_dict" not in payload:
            raise Sec4srError(f"checkpoint {path} is not a sec4sr checkpoint (no state_dict)")
        load_state(self, payload["state_dict"], str(path))
        self.class_ids = list(payload.get("class_ids", []))

    def load_kaldi(self, folder: Path | str) -> None:
        """Load ``final_ubm.txt``, ``final_ie.txt``, ``plda.txt``, ``mean.vec`` and ``transform.txt``."""
        folder = Path(folder)
        gmm = kaldi_io.read_full_gmm(folder / "final_ubm.txt")
        ie = kaldi_io.read_ivector_extractor(folder / "final_ie.txt")
        plda = kaldi_io.read_plda(folder / "plda.txt")
        mean = kaldi_io.read_vector(folder / "mean.vec")
        lda = kaldi_io.read_matrix(folder / "transform.txt")
        feat = 3 * self.params.num_ceps
        if gmm.means_invcovars.shape[1] != feat:
            raise Sec4srError(f"{folder / 'final_ubm.txt'}: UBM features are {gmm.means_invcovars.shape[1]}-d but "
                              f"the front-end gives {feat} (num_ceps={self.params.num_ceps} with Δ and ΔΔ)")
        if ie.M.shape[0] != gmm.gconsts.numel() or ie.M.shape[1] != feat:
            raise Sec4srError(f"{folder / 'final_ie.txt'}: extractor M is {tuple(ie.M.shape)}, expected "
                              f"({gmm.gconsts.numel()}, {feat}, D)")
        if mean.numel() != ie.M.shape[2]:
            raise Sec4srError(f"{folder / 'mean.vec'}: {mean.numel()} values, i-vectors are {ie.M.shape[2]}-d")
        dev = self.gconsts.device
        self.gconsts = gmm.gconsts.float().to(dev)
        self.means_invcovars = gmm.means_invcovars.float().to(dev)
        self.inv_covars = gmm.inv_covars.float().to(dev)
        self.ie_M = ie.M.float().to(dev)
        self.ie_sigma_inv = ie.sigma_inv.float().to(dev)
        self.ie_offset = torch.tensor(float(ie.offset), device=dev)
        self.backend.load_kaldi(mean, lda, plda.mean, plda.transform, plda.psi)
        self.prepare()

    def export_kaldi(self, folder: Path | str) -> None:
        """Write this model as the five Kaldi text files :meth:`load_kaldi` reads."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        c = self.gconsts.numel()
        kaldi_io.write_full_gmm(folder / "final_ubm.txt", kaldi_io.FullGMM(
            self.gconsts.double().cpu(), torch.full((c,), 1.0 / c, dtype=torch.float64),
            self.means_invcovars.double().cpu(), self.inv_covars.double().cpu()))
        kaldi_io.write_ivector_extractor(folder / "final_ie.txt", kaldi_io.IvectorExtractorFile(
            torch.zeros(c, dtype=torch.float64), self.ie_M.double().cpu(), self.ie_sigma_inv.double().cpu(),
            float(self.ie_offset)))
        b = self.backend
        kaldi_io.write_plda(folder / "plda.txt", kaldi_io.PldaFile(b.plda_mean.double().cpu(),
                                                                  b.plda_transform.double().cpu(),
                                                                  b.psi.double().cpu()))
        kaldi_io.write_vector(folder / "mean.vec", b.mean.double().cpu())
        kaldi_io.write_matrix(folder / "transform.txt", b.lda.double().cpu())

    # -- levels ------------------------------------------------------------------------------------------------------
    def compute_mfcc(self, wave: torch.Tensor) -> torch.Tensor:
        """(B, 1, T) waveform -> (B, frames, num_ceps) Kaldi MFCCs (dither from ``self.generator`` if enabled)."""
        return self.mfcc(wave, self.generator)

    def add_deltas(self, raw: torch.Tensor) -> torch.Tensor:
        """(B, frames, num_ceps) -> (B, frames, 3·num_ceps): MFCC, Δ, ΔΔ (Kaldi window 3)."""
        return deltas(raw, order=2, window=3)

    def normalize_mean(self, delta: torch.Tensor) -> torch.Tensor:
        """Sliding cepstral mean normalisation over ``cmn_window`` frames (shape kept)."""
        return sliding_cmn(delta, self.params.cmn_window)

    # -- head --------------------------------------------------------------------------------------------------------
    def log_likelihoods(self, frames: torch.Tensor) -> torch.Tensor:
        """Per-component log-likelihoods (N, C) of frames (N, F) (weights folded into the constants)."""
        c = self.gconsts.numel()
        f = frames.shape[1]
        out = []
        for s in range(0, frames.shape[0], self.params.frame_chunk):
            x = frames[s : s + self.params.frame_chunk]
            quad = (x @ self.ubm_chol_t.to(x.dtype)).view(-1, c, f).pow(2).sum(dim=-1)
            out.append(self.gconsts.to(x.dtype) + x @ self.means_invcovars.T.to(x.dtype) - 0.5 * quad)
        return torch.cat(out, dim=0)

    def stats(self, final: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Zeroth (B, C) and uncentred first-order (B, C, F) Baum-Welch statistics of (B, T, F) frames."""
        b, t, f = final.shape
        post = torch.softmax(self.log_likelihoods(final.reshape(b * t, f)), dim=-1).view(b, t, -1)
        n = post.sum(dim=1)
        fs = post.transpose(1, 2) @ final
        return n, fs

    def extract(self, n: torch.Tensor, fs: torch.Tensor, precomputed: bool = True) -> torch.Tensor:
        """i-vectors (B, D) from statistics. ``precomputed=False`` recomputes M_cᵀΣ_c⁻¹M_c per call (the
        predecessor's way; kept for the benchmark)."""
        if precomputed:
            u, p = self.ie_U.to(n.dtype), self.ie_P.to(n.dtype)
        else:
            m = self.ie_M.to(n.dtype)
            p = m.transpose(1, 2) @ self.ie_sigma_inv.to(n.dtype)
            u = p @ m
        d = u.shape[-1]
        offset = self.ie_offset.to(n.dtype)
        lin = torch.einsum("cdf,bcf->bd", p, fs)
        lin = torch.cat([lin[:, :1] + offset, lin[:, 1:]], dim=1)
        prec = torch.eye(d, dtype=n.dtype, device=n.device) + torch.einsum("bc,cde->bde", n, u)
        w = torch.cholesky_solve(lin.unsqueeze(-1), torch.linalg.cholesky(prec)).squeeze(-1)
        return torch.cat([w[:, :1] - offset, w[:, 1:]], dim=1)

    def ivector(self, final: torch.Tensor) -> torch.Tensor:
        n, fs = self.stats(final)
        return self.extract(n, fs)

    def head(self, final: torch.Tensor) -> torch.Tensor:
        """PLDA-space embeddings (B, lda_dim) from CMN'd frames (B, T, 72)."""
        return self.backend(self.ivector(final))

    def score(self, emb: torch.Tensor, enrolled: torch.Tensor) -> torch.Tensor:
        return self.backend.score(emb, enrolled.to(emb.dtype))

    # -- training ----------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def fit(self, dataset: Any, seed: int = 0, progress: bool = True, split: str = "train",
            length_s: float | None = None) -> dict[str, Any]:
        """Train UBM, total-variability matrix, LDA and PLDA on ``dataset``'s ``split``. Returns statistics."""
        from sec4sr_core.sdk import load_audio
        from tqdm import tqdm

        utts = dataset.split(split)
        if not utts:
            raise Sec4srError(f"dataset {dataset.name!r} has no {split!r} split to train the i-vector model on")
        speakers = sorted({u.speaker for u in utts})
        index = {s: i for i, s in enumerate(speakers)}
        labels = torch.tensor([index[u.speaker] for u in utts])
        g = torch.Generator().manual_seed(seed)
        feats = []
        for u in utts:  # utterances differ in length: features per utterance (training only, not a hot path)
            w = load_audio(u.path)
            if length_s:
                w = w[:, : int(length_s * 16000)]
            feats.append(self.to_level(w.unsqueeze(0), "wave", "final")[0])
        frames = torch.cat(feats, dim=0).double()
        p = self.params
        c, f, d = p.components, frames.shape[1], p.ivector_dim
        if frames.shape[0] > p.ubm_frames:  # the UBM is trained on a seeded subset of frames (as Kaldi does)
            frames = frames[torch.randperm(frames.shape[0], generator=g)[: p.ubm_frames]]
        bar = tqdm(total=4 + p.ubm_iters + p.tv_iters, desc="ivector", disable=not progress, leave=False)
        # --- UBM: k-means init, then full-covariance EM (posteriors in float32, moments in float64)
        means = frames[torch.randperm(frames.shape[0], generator=g)[:c]].clone()
        for _ in range(10):
            assign = torch.cdist(frames, means).argmin(dim=1)
            onehot = torch.nn.functional.one_hot(assign, c).double()
            cnt = onehot.sum(0)
            keep = cnt > 0
            means[keep] = (onehot.T @ frames)[keep] / cnt[keep].unsqueeze(1)
        bar.update(1)
        gvar = frames.var(dim=0)
        floor = 1e-3 * torch.diag(gvar)
        weights = torch.full((c,), 1.0 / c, dtype=torch.float64)
        covs = torch.diag(gvar).repeat(c, 1, 1)
        frames32 = frames.float()
        for _ in range(p.ubm_iters):
            self._set_ubm(weights, means, covs)
            post = torch.softmax(self.log_likelihoods(frames32), dim=-1)  # (N, C)
            occ = post.sum(0).double() + 1e-10
            weights = occ / occ.sum()
            means = (post.T @ frames32).double() / occ.unsqueeze(1)
            second = torch.zeros(c, f, f, dtype=torch.float64)
            for s in range(0, frames.shape[0], 2048):
                x, q = frames32[s : s + 2048], post[s : s + 2048]
                second += ((q.unsqueeze(2) * x.unsqueeze(1)).reshape(-1, c * f).T @ x).view(c, f, f).double()
            second /= occ.view(c, 1, 1)
            covs = second - means.unsqueeze(2) * means.unsqueeze(1) + floor
            bar.update(1)
        self._set_ubm(weights, means, covs)
        # --- statistics per utterance
        stats = [self.stats(x.unsqueeze(0)) for x in feats]  # per utterance: lengths differ
        n = torch.cat([s[0] for s in stats]).double()
        fs = torch.cat([s[1] for s in stats]).double()
        bar.update(1)
        # --- total variability (Kaldi parametrisation: prior offset on dimension 0, uncentred statistics)
        off = p.ivector_offset
        sigma_inv = torch.linalg.inv(covs)
        chol = torch.linalg.cholesky(covs)
        m = torch.zeros(c, f, d, dtype=torch.float64)
        m[:, :, 0] = means / off
        m[:, :, 1:] = chol @ torch.randn(c, f, d - 1, generator=g, dtype=torch.float64) / math.sqrt(d)
        eye = torch.eye(d, dtype=torch.float64)
        for _ in range(p.tv_iters):
            pm = m.transpose(1, 2) @ sigma_inv
            u = pm @ m
            lin = torch.einsum("cdf,bcf->bd", pm, fs)
            lin[:, 0] += off
            prec = eye + torch.einsum("bc,cde->bde", n, u)
            cov = torch.linalg.inv(prec)
            w = (cov @ lin.unsqueeze(-1)).squeeze(-1)  # posterior means, offset included
            eww = cov + w.unsqueeze(2) * w.unsqueeze(1)
            acc_a = torch.einsum("bc,bde->cde", n, eww)
            acc_c = torch.einsum("bcf,bd->cfd", fs, w)
            m = torch.linalg.solve(acc_a, acc_c.transpose(1, 2)).transpose(1, 2)
            bar.update(1)
        self.ie_M = m.float()
        self.ie_sigma_inv = sigma_inv.float()
        self.ie_offset = torch.tensor(float(off))
        self.prepare()
        # --- LDA + PLDA on the training i-vectors
        ivecs = self.extract(n.float(), fs.float())
        bar.update(1)
        self.backend.fit(ivecs, labels)
        bar.update(1)
        bar.close()
        self.class_ids = speakers
        return {"utterances": len(utts), "frames": int(frames.shape[0]), "speakers": len(speakers)}

    def _set_ubm(self, weights: torch.Tensor, means: torch.Tensor, covs: torch.Tensor) -> None:
        covs = 0.5 * (covs + covs.transpose(1, 2))
        inv = torch.linalg.inv(covs)
        mi = (inv @ means.unsqueeze(-1)).squeeze(-1)
        f = means.shape[1]
        logdet = torch.linalg.slogdet(covs)[1]
        g = weights.log() - 0.5 * (f * math.log(2 * math.pi) + logdet + (mi * means).sum(-1))
        self.gconsts = g.float()
        self.means_invcovars = mi.float()
        self.inv_covars = inv.float()
        self.prepare()

    def save(self, tag: str = "", extra: dict[str, Any] | None = None) -> Path:
        return save_checkpoint(self, tag=tag, extra={"complete": True, **(extra or {})})
