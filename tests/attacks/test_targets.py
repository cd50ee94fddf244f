"""Target selection: random (seeded, order-free), hardest/simplest against a manual computation, files."""

from __future__ import annotations

import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sec4sr_core.base.errors import Sec4srError
from sec4sr_core.sdk.interfaces import Task
from sec4sr_core.compose.targets import choose_targets, targets_from_scores

IDS = [f"s0{i}/s0{i}_0{j}" for i in range(1, 4) for j in range(3)]


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**20), task=st.sampled_from([Task.CSI_E, Task.OSI]))
def test_random_targets_are_seeded_valid_and_order_free(seed, task):
    labels = torch.tensor([i // 3 for i in range(9)])
    a = choose_targets(labels, IDS, task, 5, seed)
    assert torch.equal(a, choose_targets(labels, IDS, task, 5, seed))
    assert bool((a != labels).all())
    lo = -1 if task == Task.OSI else 0
    assert bool(((a >= lo) & (a < 5)).all())
    perm = torch.randperm(9)
    b = choose_targets(labels[perm], [IDS[i] for i in perm.tolist()], task, 5, seed)
    assert torch.equal(b, a[perm])


def test_sv_targets_are_the_opposite_decision():
    t = choose_targets(torch.tensor([0, -1, 0]), IDS[:3], Task.SV, 4, 0, mode="hardest",
                       scores=torch.zeros(3, 1))
    assert t.tolist() == [-1, 0, -1]


@settings(max_examples=10, deadline=None)
@given(scores=st.lists(st.lists(st.floats(-1, 1), min_size=4, max_size=4), min_size=1, max_size=6),
       mode=st.sampled_from(["hardest", "simplest"]))
def test_hardest_simplest_match_a_manual_loop(scores, mode):
    s = torch.tensor(scores)
    labels = torch.arange(s.shape[0]) % 4
    got = targets_from_scores(labels, s, Task.CSI_E, mode)
    for i in range(s.shape[0]):
        dec = int(s[i].argmax())
        cands = [c for c in range(4) if c not in (int(labels[i]), dec)] or [c for c in range(4) if c != dec]
        vals = [float(s[i, c]) for c in cands]
        want = vals.index(min(vals)) if mode == "hardest" else vals.index(max(vals))
        assert float(s[i, int(got[i])]) == vals[want]
        assert int(got[i]) in cands


def test_targets_from_tsv_and_json(tmp_path):
    labels = torch.tensor([1, 2, 0])  # no target equals its true label (that is refused)
    tsv = tmp_path / "t.tsv"
    tsv.write_text("# utterance\ttarget\n" + "".join(f"{u.split('/')[-1]}\t{k}\n" for k, u in enumerate(IDS[:3])))
    assert choose_targets(labels, IDS[:3], Task.OSI, 4, 0, mode=str(tsv)).tolist() == [0, 1, 2]
    js = tmp_path / "t.json"
    js.write_text(json.dumps({u: -1 for u in IDS[:3]}))
    assert choose_targets(labels, IDS[:3], Task.OSI, 4, 0, mode=str(js)).tolist() == [-1, -1, -1]
    with pytest.raises(Sec4srError, match="no target"):
        choose_targets(labels, IDS[:4], Task.OSI, 4, 0, mode=str(js))
    with pytest.raises(Sec4srError, match="outside"):
        choose_targets(labels, IDS[:3], Task.CSI_E, 4, 0, mode=str(js))
    with pytest.raises(Sec4srError, match="neither"):
        choose_targets(labels, IDS[:3], Task.OSI, 4, 0, mode=str(tmp_path / "missing.tsv"))
    with pytest.raises(Sec4srError, match="benign scores"):
        choose_targets(labels, IDS[:3], Task.OSI, 4, 0, mode="hardest")
