"""The training loop: seeded and resumable (1 + 1 epochs == 2 epochs), batch hook in eval mode, adversarial and
defended variants stored under their tags, and the train/enroll/threshold/evaluate commands end to end."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from sec4sr_core.cli import main
from sec4sr_core.base.errors import NotTrainedError, ParameterError, Sec4srError
from sec4sr_core.compose.factories import resolve_dataset
from sec4sr_core.sdk import ModelVariantDefense, Params, TrainingOptions, hookimpl
from sec4sr_core.sdk.modelstore import checkpoint_path, load_checkpoint
from sec4sr_core.study.training import TrainConfig, random_crops, train, train_variant, variant_tag
from sec4sr_core.study.variant_rows import build_row, train_variant_for

from sec4sr_plugins_models.audionet import AudioNet

FAST = {"crop_s": 0.3, "batch_size": 108, "eval_s": 0.3, "embed_s": 0.5}


@pytest.fixture()
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("SEC4SR_HOME", str(tmp_path))
    return tmp_path


def _weights(m):
    return torch.cat([p.detach().flatten() for p in m.parameters()])


def test_resumed_training_equals_uninterrupted_training(home):
    ds = resolve_dataset("embedded")
    a = AudioNet()
    train(a, ds, TrainConfig(epochs=2, seed=3, **FAST), progress=False)
    b = AudioNet()
    first = train(b, ds, TrainConfig(epochs=1, seed=3, resume=False, **FAST), progress=False, tag="t")
    b2 = AudioNet()
    second = train(b2, ds, TrainConfig(epochs=2, seed=3, **FAST), progress=False, tag="t")
    assert first["resumed_from"] == 0 and second["resumed_from"] == 1
    torch.testing.assert_close(_weights(b2), _weights(a))
    assert not b2.training
    again = train(AudioNet(), ds, TrainConfig(epochs=2, seed=3, **FAST), progress=False, tag="t")
    assert again["up_to_date"]
    assert len(b2.class_ids) == 24


def test_batch_hook_sees_the_model_in_eval_mode(home):
    ds = resolve_dataset("embedded")
    modes = []

    def hook(model, x, y):
        modes.append(model.training)
        return x, y

    m = AudioNet()
    train(m, ds, TrainConfig(epochs=1, **FAST), batch_hook=hook, progress=False, tag="hooked")
    assert modes and not any(modes)


def test_random_crops_are_seeded_and_inside_each_utterance():
    audio = torch.arange(30, dtype=torch.float32).view(3, 10) + 1
    lengths = torch.tensor([10, 4, 7])
    c1 = random_crops(audio, lengths, 5, torch.Generator().manual_seed(0))
    c2 = random_crops(audio, lengths, 5, torch.Generator().manual_seed(0))
    assert torch.equal(c1, c2) and c1.shape == (3, 1, 5)
    assert torch.equal(c1[1, 0], torch.tensor([11.0, 12, 13, 14, 0]))  # shorter: whole utterance, zero-padded
    row = c1[2, 0]
    assert row[0] >= 21 and torch.equal(row, torch.arange(int(row[0]), int(row[0]) + 5, dtype=torch.float32))


def test_min_crop_zeroes_a_seeded_tail_of_every_crop():
    audio = torch.arange(1, 401, dtype=torch.float32).view(4, 100)
    lengths = torch.full((4,), 100)
    c = random_crops(audio, lengths, 20, torch.Generator().manual_seed(5), min_length=12)
    assert torch.equal(c, random_crops(audio, lengths, 20, torch.Generator().manual_seed(5), min_length=12))
    kept = (c[:, 0] != 0).sum(dim=1)
    assert bool(((kept >= 12) & (kept <= 20)).all()) and len(set(kept.tolist())) > 1
    for row, k in zip(c[:, 0], kept.tolist()):
        assert torch.all(row[k:] == 0) and torch.all(row[1:k] - row[: k - 1] == 1)  # speech first, zeros after
    plain = random_crops(audio, lengths, 20, torch.Generator().manual_seed(5))
    assert torch.equal(c[:, 0, :12], plain[:, 0, :12])  # same crop positions, only the tail differs
    cfg = TrainConfig(crop_s=1.0, min_crop_s=2.0).resolved(AudioNet())
    assert cfg.min_crop_s is None  # a minimum above the crop keeps the whole crop


def test_adversarial_and_defended_training_variants(home):
    assert variant_tag("pgd:epsilon=0.002,steps=2", "qt:q=512") == "advt-pgd_epsilon0.002_steps2+qt_q512"
    assert variant_tag(None, "qt:q=512") == "natural+qt_q512"
    out = train_variant("audionet", adversarial="pgd:epsilon=0.002,steps=1", defense="qt:q=512", epochs=1,
                        ratio=0.25, **FAST)
    tag = "advt-pgd_epsilon0.002_steps1+qt_q512"
    assert out["tag"] == tag and checkpoint_path(AudioNet(), tag=tag).exists()
    m = AudioNet()
    m.load_weights(home, tag=tag)
    assert len(m.class_ids) == 24
    with pytest.raises(Sec4srError, match="ratio"):
        train_variant("audionet", adversarial="pgd", ratio=0.0, epochs=1, **FAST)
    with pytest.raises(Sec4srError, match="fitted by EM"):
        train_variant("ivector", adversarial="pgd", epochs=1)


class CleanTrainingParams(Params):
    level: int = 3


class CleanTraining(ModelVariantDefense):
    """A third party's model-variant defense with its own tag format: natural training, the rest in the loop."""

    name = "test-clean-training"
    Params = CleanTrainingParams

    def variant_tag(self, rest: str = "") -> str:
        return f"clean{self.params.level}" + (f"~{rest}" if rest else "")

    def training_options(self, rest: str = "") -> TrainingOptions:
        return TrainingOptions(defense=rest or None, epochs=1)


class CleanTrainingPlugin:
    @hookimpl
    def register_defenses(self, register):
        register(CleanTraining)


@pytest.fixture
def clean_training_plugin():
    from sec4sr_core.plugins.manager import register_plugin, unregister_plugin

    register_plugin(CleanTrainingPlugin(), "test-clean-training-plugin")
    yield
    unregister_plugin("test-clean-training-plugin")


def test_a_third_party_model_variant_is_trained_and_loaded_by_its_tag(home, clean_training_plugin, monkeypatch):
    monkeypatch.setattr(AudioNet, "train_defaults", {"crop_s": 0.3, "batch_size": 108})
    row = build_row("test-clean-training:level=7+qt:q=512")
    assert row.variant == "clean7~qt_q512" and row.rest == "qt:q=512" and [d.name for d in row.defenses] == ["qt"]
    assert row.options == TrainingOptions(defense="qt:q=512", epochs=1)
    with pytest.raises(NotTrainedError, match="clean7~qt_q512"):
        load_checkpoint(AudioNet(), home, tag=row.variant)
    train_variant_for(row, "audionet", "embedded", "cpu", 0)
    # stored under the tag the defense declared, not the trainer's own format (natural+qt_q512)
    assert checkpoint_path(AudioNet(), tag="clean7~qt_q512").exists()
    assert not checkpoint_path(AudioNet(), tag=variant_tag(None, "qt:q=512")).exists()
    m = AudioNet()
    assert load_checkpoint(m, home, tag=row.variant) and len(m.class_ids) == 24
    payload = torch.load(checkpoint_path(m, tag=row.variant), weights_only=False)
    assert payload["extra"]["epochs"] == 1 and payload["extra"]["complete"]


def test_train_variant_refuses_bad_options_and_a_variant_in_the_loop(home, capsys):
    with pytest.raises(ParameterError, match="variant tag '../x'"):
        train_variant("audionet", defense="qt", tag="../x", epochs=1)
    with pytest.raises(ParameterError, match="model-variant defense 'advt'"):
        train_variant("audionet", defense="advt+qt", epochs=1)
    assert main(["train", "--model", "audionet", "--adversarial", "pgd", "--eot", "0", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "sec4sr train: invalid parameter eot" in err and err.count("\n") == 1
    assert not (home / "models").exists()


def test_train_evaluate_and_run_classifier_through_the_cli(home, capsys):
    assert main(["evaluate", "--model", "audionet"]) == 2
    assert "sec4sr train --model audionet" in capsys.readouterr().err
    assert main(["train", "--model", "audionet", "--epochs", "1", "--crop", "0.4", "--batch-size", "72",
                 "--quiet", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["epochs"] == 1 and summary["history"][0]["loss"] > 0
    assert main(["evaluate", "--model", "audionet", "--json", "--limit", "8"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert set(doc["tasks"]) == {"csi-ne"} and doc["tasks"]["csi-ne"]["trials"] == 8
    assert main(["evaluate", "--model", "audionet", "--task", "sv"]) == 2
    assert "does not support sv" in capsys.readouterr().err
    assert main(["train", "--model", "nosuchmodel"]) == 2


TINY_IV = "ivector:components=4,ivector_dim=10,lda_dim=6,ubm_frames=3000,ubm_iters=2,tv_iters=2"


def test_train_enroll_threshold_evaluate_commands_store_and_reuse_thresholds(home, capsys):
    # a tiny i-vector model keeps this cheap; a subprocess proves the CLI entry point works
    assert main(["train", "--model", TINY_IV, "--quiet"]) == 0
    assert "checkpoint:" in capsys.readouterr().out
    out = subprocess.run([sys.executable, "-m", "sec4sr_core.cli", "enroll", "--model", TINY_IV, "--json"],
                         capture_output=True, text=True, check=True)
    enrolled = json.loads(out.stdout)
    assert len(enrolled["speakers"]) == 16 and set(enrolled["thresholds"]) == {"sv", "osi"}
    assert main(["threshold", "--model", TINY_IV, "--json"]) == 0
    th = json.loads(capsys.readouterr().out)
    assert th["thresholds"] == enrolled["thresholds"] and 0 <= th["osi_ier"] <= 1 and th["min_dcf"] is not None
    assert main(["evaluate", "--model", TINY_IV, "--task", "sv", "--task", "osi", "--limit", "12", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["tasks"]["sv"]["threshold"] == pytest.approx(enrolled["thresholds"]["sv"])
    assert doc["tasks"]["sv"]["eer"] == pytest.approx(enrolled["eer"]["sv"])
    assert doc["tasks"]["osi"]["trials"] == 12 and 0 <= doc["tasks"]["osi"]["accuracy"] <= 1
    assert main(["enroll", "--model", "audionet"]) == 2
