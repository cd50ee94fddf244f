"""Crafting data reaches an attack through the core (``sec4sr_core.compose.crafting``) or the caller, never through
a dataset the plugin loads itself: UAP declares its set, the core decodes it from the request's dataset or the
attacked utterances' dataset, a Python caller passes waveforms."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch

import sec4sr_core
from sec4sr_core.base.errors import ParameterError
from sec4sr_core.base.types import Utterance
from sec4sr_core.compose import crafting
from sec4sr_core.compose.crafting import load_crafting, provide_crafting
from sec4sr_core.sdk import CraftingRequest, Dataset, load_batch, save_audio
from sec4sr_core.sdk.oracle import make_oracle

from .conftest import T, speech_like

UAP = {"steps": 2, "craft_size": 3, "epsilon": 0.01, "period": 0}


class TinyCorpus(Dataset):
    """A dataset of files written by the test: ``dev`` holds ``dev`` utterances, ``test`` two, ``heldout`` none."""

    name = "tiny-corpus"

    def __init__(self, root: Path, seed: int = 50) -> None:
        super().__init__()
        self.root = root
        waves = speech_like(5, seed=seed, t=T + 300)
        self._splits: dict[str, list[Utterance]] = {"dev": [], "test": [], "heldout": []}
        for i in range(5):
            split = "dev" if i < 3 else "test"
            path = save_audio(root / f"u{i}.wav", waves[i])
            self._splits[split].append(Utterance(path, f"s{i % 2}", f"u{i}"))

    def split(self, name):
        return list(self._splits[name])

    def split_names(self):
        return list(self._splits)


@pytest.fixture()
def corpus(tmp_path):
    crafting._SETS.clear()
    yield TinyCorpus(tmp_path)
    crafting._SETS.clear()


def _uap(toy, x, y, **params):
    atk = sec4sr_core.attack("uap", **{**UAP, **params})
    return atk, make_oracle(toy, atk.knowledge, n=x.shape[0], seed=0)


def test_uap_declares_its_crafting_set_and_defaults_to_the_attacked_dataset():
    atk = sec4sr_core.attack("uap", craft_size=7, craft_split="heldout")
    assert atk.crafting_request() == CraftingRequest(None, "heldout", 7)
    assert sec4sr_core.attack("pgd").crafting_request() is None


def test_the_core_crafts_from_the_study_dataset_when_the_attack_names_none(toy, corpus):
    x = speech_like(3, seed=41)
    with torch.no_grad():
        y = toy.decide(toy(x))
    atk, oracle = _uap(toy, x, y)
    waves = provide_crafting(atk, length=T, dataset=corpus)
    paths = [u.path for u in corpus.split("dev")[:3]]
    assert torch.equal(waves, load_batch(paths, T)) and torch.equal(atk.crafting, waves)
    r = atk.run(oracle, x, y)
    assert r.extra["crafting"] == f"{corpus.name}:dev[:3]"
    # the same audio handed over by a Python caller gives the same perturbation
    again = sec4sr_core.attack("uap", **UAP)
    adv = again(toy, x, y, crafting=load_batch(paths))  # any length: the attack fits it to T
    assert torch.equal(adv, r.adv)
    assert again.last_result.extra["crafting"] == "given"
    # the decoded set is decoded once per (dataset, split, size, length)
    assert provide_crafting(sec4sr_core.attack("uap", **UAP), length=T, dataset=corpus) is waves


def test_the_request_dataset_beats_the_default_and_bad_splits_are_one_line_errors(corpus, tmp_path):
    (tmp_path / "other").mkdir()
    other = TinyCorpus(tmp_path / "other", seed=99)
    req = CraftingRequest(None, "dev", 2)
    assert torch.equal(load_crafting(req, T, corpus), load_batch([u.path for u in corpus.split("dev")[:2]], T))
    assert not torch.equal(load_crafting(req, T, other), load_crafting(req, T, corpus))
    with pytest.raises(ParameterError, match="no split 'enroll'"):
        load_crafting(CraftingRequest(None, "enroll", 2), T, corpus, who="uap")
    with pytest.raises(ParameterError, match="'heldout' .* is empty"):
        load_crafting(CraftingRequest(None, "heldout", 2), T, corpus, who="uap")
    # a spec in the request wins over the dataset the caller passes (the embedded corpus' dev split)
    embedded = load_crafting(CraftingRequest("embedded", "dev", 2), T, corpus)
    assert embedded.shape == (2, 1, T) and not torch.equal(embedded, load_crafting(req, T, corpus))


def test_handed_over_crafting_data_changes_the_perturbation_and_the_fallback_says_so(toy, corpus):
    x = speech_like(3, seed=43)
    with torch.no_grad():
        y = toy.decide(toy(x))
    atk, oracle = _uap(toy, x, y)
    provide_crafting(atk, length=T, dataset=corpus)
    crafted = atk.run(oracle, x, y)
    bare, oracle = _uap(toy, x, y)
    with pytest.warns(UserWarning, match="crafting on the attacked batch"):
        fallback = bare.run(oracle, x, y)
    assert fallback.extra["crafting"] == "attacked batch"
    assert not torch.equal(crafted.adv, fallback.adv)
    for r in (crafted, fallback):
        assert float((r.adv - x).abs().max()) <= 0.01 + 1e-6


def test_bad_crafting_waveforms_are_refused():
    atk = sec4sr_core.attack("uap")
    for bad in (torch.zeros(3, 100), torch.zeros(0, 1, 100), torch.full((2, 1, 10), 2.0),
                torch.full((2, 1, 10), float("nan")), torch.zeros(2, 1, 10, dtype=torch.int16)):
        with pytest.raises(ParameterError, match="uap: crafting"):
            atk.set_crafting(bad)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        atk.set_crafting(torch.zeros(2, 1, 10))
    assert atk.crafting_source == "given"


def test_sv_crafting_trials_carry_their_own_claims(corpus):
    """For SV the core hands UAP the crafting trials' own claims: an enrolled speaker's utterance claims that
    speaker, an imposter's claims one chosen by its id — never claims borrowed by index from another set."""
    atk = sec4sr_core.attack("uap", **UAP)
    dev = corpus.split("dev")[:3]  # speakers s0, s1, s0
    provide_crafting(atk, length=T, dataset=corpus, task="sv", speakers=["s1", "s0"])
    assert atk.crafting_claims.tolist() == [1, 0, 1]
    assert [u.speaker for u in dev] == ["s0", "s1", "s0"]
    # an imposter (not enrolled) claims a speaker fixed by its id, the same whatever the batch or run
    provide_crafting(atk, length=T, dataset=corpus, task="sv", speakers=["s1", "x"])
    first = atk.crafting_claims.tolist()
    import zlib

    assert first == [zlib.crc32(b"u0") % 2, 0, zlib.crc32(b"u2") % 2]
    provide_crafting(atk, length=T, dataset=corpus, task="sv", speakers=["s1", "x"])
    assert atk.crafting_claims.tolist() == first
    # other tasks get no claims
    provide_crafting(atk, length=T, dataset=corpus, task="csi-e", speakers=["s1", "s0"])
    assert atk.crafting_claims is None
