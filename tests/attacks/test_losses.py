"""SPEC §7 losses pinned on hand-made score tensors: every task × targeted × κ case, the clip, CE."""

from __future__ import annotations

import math

import pytest
import torch

from sec4sr_core.base.errors import ParameterError
from sec4sr_core.sdk.losses import ce_loss, margin_loss, resolve_loss

S = torch.tensor([[0.9, 0.2, 0.5], [0.1, 0.3, -0.4], [0.2, 0.6, 0.7]])
TH = 0.4


@pytest.mark.parametrize("kappa", [0.0, 0.25])
def test_csi_margin(kappa):
    y = torch.tensor([0, 2, -1])
    unt = margin_loss(S, y, "csi-e", targeted=False, kappa=kappa)
    tgt = margin_loss(S, y, "csi-e", targeted=True, kappa=kappa)
    # untargeted: s_y − max_{j≠y} s_j + κ ; targeted: max_{j≠y} s_j − s_y + κ ; y = −1 → 0
    assert torch.allclose(unt, torch.tensor([0.9 - 0.5 + kappa, -0.4 - 0.3 + kappa, 0.0]))
    assert torch.allclose(tgt, torch.tensor([0.5 - 0.9 + kappa, 0.3 + 0.4 + kappa, 0.0]))


@pytest.mark.parametrize("kappa", [0.0, 0.3])
def test_osi_enrolled(kappa):
    y = torch.tensor([0, 1, 2])
    tgt = margin_loss(S, y, "osi", targeted=True, kappa=kappa, threshold=TH)
    # max(s_other, θ) − s_y + κ
    expect_t = [max(0.5, TH) - 0.9, max(0.1, TH) - 0.3, max(0.6, TH) - 0.7]
    assert torch.allclose(tgt, torch.tensor(expect_t) + kappa)
    unt = margin_loss(S, y, "osi", targeted=False, kappa=kappa, threshold=TH)
    # min(max_j s_j + κ − θ  [reject],  max(s_y, θ) + κ − s_other  [misidentify])
    rows = [(0.9, 0.9, 0.5), (0.3, 0.3, 0.1), (0.7, 0.7, 0.6)]  # (max, s_y, s_other)
    expect_u = [min(m + kappa - TH, max(sy, TH) + kappa - so) for m, sy, so in rows]
    assert torch.allclose(unt, torch.tensor(expect_u))


def test_osi_untargeted_picks_the_closer_goal():
    s = torch.tensor([[0.41, 0.1], [0.9, 0.88]])
    f = margin_loss(s, torch.tensor([0, 0]), "osi", targeted=False, threshold=0.4)
    # row 0: rejecting is closer (0.01) than misidentifying (0.31); row 1: misidentifying (0.02) beats reject (0.5)
    assert torch.allclose(f, torch.tensor([0.41 - 0.4, 0.9 - 0.88]))


@pytest.mark.parametrize("kappa", [0.0, 0.2])
def test_osi_imposter(kappa):
    y = torch.full((3,), -1)
    best = S.max(dim=1).values
    tgt = margin_loss(S, y, "osi", targeted=True, kappa=kappa, threshold=TH)  # target reject
    unt = margin_loss(S, y, "osi", targeted=False, kappa=kappa, threshold=TH)  # imposter wants acceptance
    assert torch.allclose(tgt, best + kappa - TH)
    assert torch.allclose(unt, TH + kappa - best)


@pytest.mark.parametrize("kappa", [0.0, 0.1])
def test_sv_all_four_cases(kappa):
    s = torch.tensor([[0.7], [0.2]])
    acc = TH + kappa - s[:, 0]  # toward accept
    rej = s[:, 0] + kappa - TH  # toward reject
    y0, ym = torch.tensor([0, 0]), torch.tensor([-1, -1])
    assert torch.allclose(margin_loss(s, y0, "sv", True, kappa, TH), acc)  # imposter claims → accept
    assert torch.allclose(margin_loss(s, y0, "sv", False, kappa, TH), rej)  # genuine → rejected
    assert torch.allclose(margin_loss(s, ym, "sv", True, kappa, TH), rej)  # target = reject
    assert torch.allclose(margin_loss(s, ym, "sv", False, kappa, TH), acc)  # imposter → accepted


def test_sv_validates_shape_and_labels():
    with pytest.raises(ValueError):
        margin_loss(S, torch.tensor([0, 0, 0]), "sv", threshold=TH)
    with pytest.raises(ValueError):
        margin_loss(torch.zeros(2, 1), torch.tensor([0, 3]), "sv", threshold=TH)


def test_threshold_required_for_sv_osi():
    for task in ("sv", "osi"):
        with pytest.raises(ParameterError):
            margin_loss(torch.zeros(1, 1), torch.tensor([0]), task)


def test_clip_max():
    y = torch.tensor([0, 2, -1])
    f = margin_loss(S, y, "csi-e", clip=True)
    assert torch.allclose(f, margin_loss(S, y, "csi-e").clamp(min=0))
    assert float(f[1]) == 0.0


def test_cross_entropy_matches_manual():
    y = torch.tensor([0, 2, -1])
    manual = [-(S[i, y[i]] - torch.logsumexp(S[i], 0)) for i in range(2)]
    unt = ce_loss(S, y, targeted=False)
    tgt = ce_loss(S, y, targeted=True)
    assert torch.allclose(tgt[:2], torch.stack(manual))
    assert torch.allclose(unt[:2], -torch.stack(manual))
    assert float(unt[2]) == 0.0 and float(tgt[2]) == 0.0


def test_resolve_loss_routes_sv_osi_to_margin_and_rejects_unknown():
    f = resolve_loss("ce", "osi", targeted=True, kappa=0.1, threshold=TH)
    assert torch.allclose(f(S, torch.tensor([0, 1, 2])),
                          margin_loss(S, torch.tensor([0, 1, 2]), "osi", True, 0.1, TH))
    with pytest.raises(ParameterError):
        resolve_loss("hinge", "csi-e")


def test_margin_mask_is_not_a_magic_constant():
    # scores far below the predecessor's −10000 mask still give the right s_other
    s = torch.tensor([[-20000.0, -30000.0]])
    f = margin_loss(s, torch.tensor([0]), "csi-e")
    assert math.isclose(float(f), 10000.0)
