"""The attack review of issue 13, one test per finding (each failed before its fix): APGD's checkpoints and its
second step-halving condition, HSJA's query budget and batch-independent start points, the oracle's probe-count
charging and its hidden system, EOT majority-vote ties, UAP's SV crafting claims, meaningful L2 PGD defaults,
targeted Square with CE stopping early, and target files checked against the labels."""

from __future__ import annotations

import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sec4sr_plugins_attacks.apgd import checkpoints
from torch import nn

import sec4sr_core
from sec4sr_core.base.errors import ParameterError
from sec4sr_core.compose.targets import choose_targets
from sec4sr_core.sdk.attack import Goal
from sec4sr_core.sdk.interfaces import Knowledge, Task
from sec4sr_core.sdk.oracle import majority_vote, make_oracle

from .conftest import S, speech_like, toy_system

# -- APGD ----------------------------------------------------------------------------------------------------------


def _paper_checkpoints(steps: int) -> list[int]:
    """Croce & Hein's w_j = ⌈p_j·N⌉ with p in integer hundredths (an independent computation)."""
    p = [0, 22]
    while p[-1] < 100:
        p.append(p[-1] + max(p[-1] - p[-2] - 3, 6))
    return sorted({-(-q * steps // 100) for q in p[1:] if -(-q * steps // 100) < steps})


def test_apgd_checkpoints_are_the_papers_for_100_steps():
    assert checkpoints(100) == [22, 41, 57, 70, 80, 87, 93, 99]  # was 22, 41, 58, ...


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 2000))
def test_apgd_checkpoints_match_exact_arithmetic(steps):
    assert checkpoints(steps) == _paper_checkpoints(steps)


class _ScriptedOracle:
    """A white-box oracle stand-in whose loss follows a script (one value per call), for APGD's schedule."""

    task = Task.CSI_E
    n_scores = S
    knowledge = Knowledge.WHITE_BOX
    estimated_threshold = None
    threshold = None

    def __init__(self, losses, n=1):
        self.losses, self.calls, self.n, self.device = list(losses), 0, n, torch.device("cpu")

    def loss_and_grad(self, x, loss_fn, y, owners=None):
        loss = torch.full((x.shape[0],), float(self.losses[self.calls]))
        self.calls += 1
        scores = torch.zeros(x.shape[0], S)
        scores[:, 0] = 1.0  # decided as speaker 0 = the label: never a success
        return loss, torch.ones_like(x), scores, torch.zeros(x.shape[0], dtype=torch.long)

    def scores_and_decisions(self, x, owners=None):
        scores = torch.zeros(x.shape[0], S)
        scores[:, 0] = 1.0
        return scores, torch.zeros(x.shape[0], dtype=torch.long)


def test_apgd_does_not_halve_twice_for_a_stall_it_already_answered():
    """Checkpoint 22 halves η (the loss oscillates); from 23 to 41 the loss falls steadily but stays above the best:
    condition 1 is false and η was just halved, so the paper keeps η. The old code saved η *after* halving, so its
    'η unchanged' test was always true and it halved again at 41."""
    script = [1.0] + [3.0 if i % 2 else 2.0 for i in range(1, 23)] + [2.9 - 0.01 * (i - 23) for i in range(23, 42)]
    script += [0.9 - 0.001 * (i - 42) for i in range(42, 100)]  # new bests every step: no more halvings
    oracle = _ScriptedOracle(script)
    atk = sec4sr_core.attack("apgd", steps=100)
    out = atk.perturb(oracle, speech_like(1, seed=5), Goal(torch.zeros(1, dtype=torch.long), False))
    assert out.extra["halvings"].tolist() == [1]
    assert out.extra["step_size"].tolist() == pytest.approx([2 * 0.002 / 2])


def test_apgd_halves_when_the_best_loss_stalls_after_an_unhalved_checkpoint():
    """Condition 2 still fires: no halving at 22 (steady descent) and no new best from 23 to 41."""
    script = [5.0 - 0.1 * i for i in range(23)]  # falls every step: best 2.8 at 22, no halving at 22
    script += [3.0 - 0.001 * (i - 23) for i in range(23, 42)]  # falls, but above the best: condition 2 at 41
    script += [0.5 - 0.001 * (i - 42) for i in range(42, 100)]
    out = sec4sr_core.attack("apgd", steps=100).perturb(
        _ScriptedOracle(script), speech_like(1, seed=5), Goal(torch.zeros(1, dtype=torch.long), False))
    assert out.extra["halvings"].tolist() == [1]


# -- HSJA ----------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def toy_sys():
    return toy_system("csi-e")


@pytest.mark.parametrize("max_queries", [40, 150])
@pytest.mark.parametrize("targeted", [False, True])
def test_hsja_never_exceeds_its_query_budget(toy_sys, max_queries, targeted):
    x = speech_like(4, seed=3)
    with torch.no_grad():
        y = toy_sys.decide(toy_sys(x))
    goal = (y + 1) % S if targeted else y
    atk = sec4sr_core.attack("hsja", max_queries=max_queries, iterations=4, init_evals=60, probe_batch=30)
    atk(toy_sys, x, goal, targeted=targeted)
    q = atk.last_result.queries
    assert int(q.max()) <= max_queries, q.tolist()  # was 283 for a budget of 150
    assert "over_query_budget" not in atk.last_result.extra


def test_targeted_hsja_start_points_do_not_depend_on_the_batch(toy_sys):
    """Each utterance draws from its own generator and tries the same start pool: alone or batched, the same run.
    (Start points used to be other utterances of the batch: 8/8 batched, 3/8 one at a time.)"""
    x = speech_like(5, seed=11)
    pool = speech_like(8, seed=12)
    with torch.no_grad():
        y = toy_sys.decide(toy_sys(x))
    targets = (y + 1) % S
    params = {"max_queries": 200, "iterations": 2, "init_evals": 20, "probe_batch": 20, "start_pool": 8}
    batched = sec4sr_core.attack("hsja", **params)
    batched(toy_sys, x, targets, targeted=True, crafting=pool)
    alone_ok, alone_l2 = [], []
    for i in range(x.shape[0]):
        one = sec4sr_core.attack("hsja", **params)
        one(toy_sys, x[i:i + 1], targets[i:i + 1], targeted=True, crafting=pool)
        alone_ok.append(bool(one.last_result.success[0]))
        alone_l2.append(float(one.last_result.extra["l2"][0]))
    assert batched.last_result.success.tolist() == alone_ok
    assert batched.last_result.extra["l2"].tolist() == pytest.approx(alone_l2, rel=1e-3, abs=1e-6)


# -- the oracle ----------------------------------------------------------------------------------------------------


def test_the_oracle_charges_every_probe_row_whatever_owners_says(toy_sys):
    o = make_oracle(toy_sys, Knowledge.SCORES, n=2, eot=3)
    x = speech_like(5, seed=1)
    with pytest.raises(ParameterError, match="one owner per probe"):
        o.decisions(x, owners=torch.tensor([0]))  # 5 probes for the price of 1, before
    with pytest.raises(ParameterError, match="utterance indices"):
        o.scores(x, owners=torch.tensor([0, 1, 2, 0, 1]))
    o.scores(x, owners=torch.tensor([1, 1, 1, 1, 1]))
    assert o.queries.tolist() == [0, 15]
    assert int(o.queries.sum()) == 5 * 3


def test_the_oracle_hides_its_system_and_its_count(toy_sys):
    o = make_oracle(toy_sys, Knowledge.DECISIONS, n=2)
    with pytest.raises(AttributeError):
        o._system  # noqa: B018 - what an attack must not reach
    with pytest.raises(TypeError):
        vars(o)
    with pytest.raises(AttributeError):
        o.__dict__  # noqa: B018
    reachable = [getattr(o, name, None) for cls in type(o).__mro__ for name in getattr(cls, "__slots__", ())]
    assert not any(isinstance(v, nn.Module) for v in reachable)
    o.decisions(speech_like(2, seed=1))
    with pytest.raises(AttributeError):
        o.queries = torch.zeros(2, dtype=torch.long)
    q = o.queries
    q.zero_()  # a copy: the count is untouched
    assert o.queries.tolist() == [1, 1]
    for name, value in (("eot", 0), ("n", 5)):
        with pytest.raises(AttributeError):
            setattr(o, name, value)
    with pytest.raises(Exception, match="threshold|gradients"):
        o.loss_and_grad(speech_like(2, seed=1), lambda s, y: s[:, 0], torch.zeros(2, dtype=torch.long))


# -- EOT majority vote ---------------------------------------------------------------------------------------------


def test_majority_vote_ties_never_go_to_reject():
    d = torch.tensor([[-1, -1, 2, -1, 3],
                      [1, -1, 2, -1, 3],
                      [1, 0, -1, -1, 1],
                      [-1, 0, -1, 2, 1]])
    # columns: tie reject/1 -> 1; tie reject/0 -> 0; reject 2 votes vs 2 twice -> tie -> 2; reject 3 of 4 -> reject;
    # tie 3/1 -> the smaller label, 1
    assert majority_vote(d).tolist() == [1, 0, 2, -1, 1]
    assert majority_vote(torch.tensor([[4, -1]])).tolist() == [4, -1]  # one draw: itself


@settings(max_examples=50, deadline=None)
@given(st.lists(st.lists(st.integers(-1, 4), min_size=3, max_size=3), min_size=1, max_size=6))
def test_majority_vote_picks_a_most_voted_decision(rows):
    d = torch.tensor(rows).t().contiguous()  # (draws=3, N)
    got = majority_vote(d)
    for j in range(d.shape[1]):
        col = d[:, j].tolist()
        top = max(col.count(v) for v in col)
        winners = {v for v in col if col.count(v) == top}
        speakers = sorted(w for w in winners if w != -1)
        assert int(got[j]) == (speakers[0] if speakers else -1)


# -- UAP on SV -----------------------------------------------------------------------------------------------------


class _ClaimSpy(nn.Module):
    """Wraps a DefendedSystem and records the claims of every call."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner
        self.seen: list[torch.Tensor] = []

    def forward(self, x, claims=None):
        self.seen.append(claims.clone())
        return self.inner(x, claims=claims)

    def __getattr__(self, name):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.inner, name)


def test_uap_on_sv_crafts_against_the_crafting_trials_claims():
    sv = toy_system("sv")
    spy = _ClaimSpy(sv)
    x = speech_like(2, seed=21)
    batch_claims = torch.tensor([3, 3])
    waves = speech_like(6, seed=22)
    craft_claims = torch.tensor([0, 1, 2, 0, 1, 2])
    atk = sec4sr_core.attack("uap", steps=1, period=0, craft_batch=3)
    atk.set_crafting(waves, "test", claims=craft_claims)
    oracle = make_oracle(spy, Knowledge.WHITE_BOX, n=2, claims=batch_claims)
    with torch.no_grad():
        y = sv.decide(sv(x, claims=batch_claims))
    atk.run(oracle, x, y)
    crafting_calls = [c for c in spy.seen if c.numel() in (6, 3)]
    assert crafting_calls and all(not torch.equal(c, batch_claims.repeat(c.numel() // 2)) for c in crafting_calls)
    assert torch.equal(torch.cat(crafting_calls[1:3]), craft_claims)  # the two crafting batches of one pass
    assert torch.equal(spy.seen[-1], batch_claims)  # the attacked batch is scored with its own claims


def test_uap_on_sv_without_claims_claims_each_crafting_utterances_best_speaker():
    sv = toy_system("sv")
    spy = _ClaimSpy(sv)
    waves = speech_like(3, seed=23)
    atk = sec4sr_core.attack("uap", steps=1, period=0)
    atk.set_crafting(waves, "test")
    oracle = make_oracle(spy, Knowledge.WHITE_BOX, n=1, claims=torch.tensor([1]))
    x = speech_like(1, seed=24)
    with torch.no_grad():
        y = sv.decide(sv(x, claims=torch.tensor([1])))
    atk.run(oracle, x, y)
    lookup = spy.seen[0]  # every crafting utterance against every enrolled speaker
    assert torch.equal(lookup, torch.arange(S).repeat_interleave(3))
    with torch.no_grad():
        best = torch.stack([sv(waves, claims=torch.full((3,), s))[:, 0] for s in range(S)]).argmax(dim=0)
    assert torch.equal(spy.seen[1], best)


# -- L2 PGD defaults -----------------------------------------------------------------------------------------------


def test_l2_pgd_defaults_are_an_snr_radius_that_succeeds(toy_sys):
    atk = sec4sr_core.attack("pgd", norm="l2", steps=10)
    assert atk.params.snr_db == 30.0 and atk.params.epsilon is None  # not the L∞ ε = 0.002
    x = speech_like(6, seed=3)
    with torch.no_grad():
        y = toy_sys.decide(toy_sys(x))
    adv = atk(toy_sys, x, y)
    d = (adv - x).flatten(1).norm(dim=1)
    radius = x.flatten(1).norm(dim=1) * 10 ** (-30 / 20)
    assert bool((d <= radius * (1 + 1e-5)).all())
    assert int(atk.last_result.success.sum()) > 0  # was 0/6 with ε = 0.002 as an L2 radius


# -- Square --------------------------------------------------------------------------------------------------------


def test_targeted_square_with_ce_stops_once_the_target_is_reached(toy_sys):
    x = speech_like(4, seed=3)
    with torch.no_grad():
        y = toy_sys.decide(toy_sys(x))
    atk = sec4sr_core.attack("square", loss="ce", epsilon=0.1, max_iter=300)
    atk(toy_sys, x, (y + 1) % S, targeted=True)
    r = atk.last_result
    assert bool(r.success.any())
    assert bool((r.queries[r.success] < 300).all()), r.queries.tolist()  # every success ran all 301 queries before


# -- target files --------------------------------------------------------------------------------------------------

IDS = ["s01/a.wav", "s02/b.wav", "s03/c.wav"]


def test_a_target_equal_to_the_true_label_names_the_file_and_line(tmp_path):
    f = tmp_path / "targets.tsv"
    f.write_text("# utterance\ttarget\ns01/a.wav\t1\ns02/b.wav\t1\ns03/c.wav\t0\n")
    with pytest.raises(ParameterError, match=r"targets\.tsv line 3: .*'s02/b.wav'.*true label"):
        choose_targets(torch.tensor([0, 1, 2]), IDS, Task.CSI_E, 4, 0, mode=str(f))


def test_an_unknown_speaker_in_a_target_file_names_the_file_and_line(tmp_path):
    f = tmp_path / "targets.tsv"
    f.write_text("s01/a.wav\t1\ns02/b.wav\t7\ns03/c.wav\t0\n")
    with pytest.raises(ParameterError, match=r"targets\.tsv line 2: unknown speaker 7: outside"):
        choose_targets(torch.tensor([0, 1, 2]), IDS, Task.CSI_E, 4, 0, mode=str(f))
    f.write_text("s01/a.wav\tspk9\ns02/b.wav\tspk0\ns03/c.wav\tspk0\n")
    with pytest.raises(ParameterError, match=r"line 1: unknown speaker 'spk9'"):
        choose_targets(torch.tensor([0, 1, 2]), IDS, Task.CSI_E, 4, 0, mode=str(f),
                       speakers=["spk0", "spk1", "spk2", "spk3"])
    f.write_text("s01/a.wav\tspk3\ns02/b.wav\tspk0\ns03/c.wav\tspk0\n")
    assert choose_targets(torch.tensor([0, 1, 2]), IDS, Task.CSI_E, 4, 0, mode=str(f),
                          speakers=["spk0", "spk1", "spk2", "spk3"]).tolist() == [3, 0, 0]


def test_json_target_files_are_checked_per_key(tmp_path):
    f = tmp_path / "targets.json"
    f.write_text(json.dumps({"a": -1, "b": 0, "c": -1}))
    with pytest.raises(ParameterError, match=r"key 'c'.*reject"):  # an imposter targeted at reject
        choose_targets(torch.tensor([1, 2, -1]), IDS, Task.OSI, 4, 0, mode=str(f))
    f.write_text('{"a": 1, "a": 2}')
    with pytest.raises(ParameterError, match="given twice"):
        choose_targets(torch.tensor([0, 1, 2]), IDS, Task.CSI_E, 4, 0, mode=str(f))
    f.write_text(json.dumps({"a": -1, "b": -1, "c": 0}))
    with pytest.raises(ParameterError, match=r"key 'c'.*accept \(0\).*true label"):
        choose_targets(torch.tensor([0, 0, 0]), IDS, Task.SV, 1, 0, mode=str(f))
