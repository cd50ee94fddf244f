"""Evaluation over unseen channels: channel-EOT PGD survives unseen channels better than plain PGD on the same
trials; the unseen channels are fixed per seed, disjoint from the crafting rooms, and summarised with Wilson
intervals; the CLI refuses bad input in one line."""

from __future__ import annotations

import pytest
import torch

from sec4sr_core.base.errors import ParameterError
from sec4sr_core.cli import main
from sec4sr_core.study.channels import (
    UNSEEN_ROOMS_SEED, channel_setting, check_crafting_spec, over_channels, summarize_success, unseen_channels,
)
from sec4sr_core.study.config import StudyConfig


@pytest.mark.slow
def test_channel_eot_raises_success_over_unseen_channels(tmp_path):
    cfg = StudyConfig(limit=2, length_s=1.0, out=tmp_path, save_audio=False, metrics=[], gradient_check=False)
    r = channel_setting("ge2e", "pgd:epsilon=0.005,steps=10,step_size=0.001", cfg, eot=4, n_channels=6)
    doc = r.as_dict()["methods"]
    assert doc["plain"]["digital"]["success"] == 1.0  # white-box PGD succeeds without a channel ...
    plain, eot = doc["plain"]["over_channels"], doc["eot"]["over_channels"]
    assert plain["channels"] == eot["channels"] == 6 and plain["examples"] == 2
    assert eot["success"] > plain["success"]  # ... but EOT over the channel survives unseen channels better
    assert doc["benign"]["over_channels"]["success"] < plain["success"]  # not the channel alone
    lo, hi = eot["ci"]
    assert lo <= eot["success"] <= hi


def test_unseen_channels_are_fixed_per_seed_and_disjoint_from_crafting_rooms(ge2e_system, test_batch):
    x, y = test_batch[0][:2, :, :16000], test_batch[1][:2]
    chans = unseen_channels("channel:snr_min=20,snr_max=30", 3)
    assert [c.params.rooms_seed for c in chans] == [UNSEEN_ROOMS_SEED + j for j in range(3)]
    assert all(c.params.shared and c.params.bank == 1 for c in chans)
    crafting_rooms = {r.dims for r in unseen_channels("channel", 1)[0].rooms} | set()
    from sec4sr_core.plugins.manager import get_registry

    crafting = get_registry().build("defense", "channel")
    assert not ({r.dims for r in crafting.rooms} & {c.rooms[0].dims for c in chans})
    assert crafting_rooms  # the evaluation's own rooms exist
    a = over_channels(ge2e_system, x, y, False, chans, seed=5)
    b = over_channels(ge2e_system, x, y, False, unseen_channels("channel:snr_min=20,snr_max=30", 3), seed=5)
    assert a.shape == (3, 2) and torch.equal(a, b)
    # the same channel for every batch: channel j's output for one utterance does not depend on its batch-mates
    ch = chans[0]
    ch.seed(1)
    one = ch(x[:1])
    ch.seed(1)
    both = ch(x)
    assert torch.allclose(one[0], both[0], atol=1e-3)


def test_summary_counts_pairs_every_channel_and_per_channel():
    s = torch.tensor([[1, 1, 0, 1], [1, 0, 0, 1], [1, 1, 0, 0]], dtype=torch.bool)  # 3 channels × 4 examples
    d = summarize_success(s)
    assert d["success"] == pytest.approx(7 / 12) and d["all_channels"] == pytest.approx(1 / 4)
    assert d["per_channel"] == pytest.approx([0.75, 0.5, 0.5])
    assert d["per_example"] == pytest.approx([1.0, 2 / 3, 0.0, 2 / 3])
    lo, hi = d["ci"]
    assert 0 < lo < 7 / 12 < hi < 1


def test_crafting_spec_must_be_randomized_and_below_the_unseen_rooms():
    with pytest.raises(ParameterError):
        check_crafting_spec(f"channel:rooms_seed={UNSEEN_ROOMS_SEED}")
    with pytest.raises(ParameterError):
        check_crafting_spec("qt")
    check_crafting_spec("at")  # a randomized waveform defense without rooms is fine
    with pytest.raises(ParameterError):
        unseen_channels("channel", 0)


@pytest.mark.parametrize("argv, needle", [
    (["channels", "--attack", "nope", "--limit", "1"], "nope"),
    (["channels", "--attack", "fgsm", "--eot-defense", "qt"], "randomized"),
    (["channels", "--attack", "fgsm", "--channels", "0"], "at least one"),
    (["channels", "--attack", "fgsm", "--eot", "0"], "eot"),
])
def test_cli_bad_input_is_one_error_line(argv, needle, capsys, tmp_path):
    rc = main(argv + ["--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error:") and needle in err and len(err.strip().splitlines()) == 1
