"""ONNX backbones through onnxruntime (``onnx:path=FILE.onnx``): fixtures exported from tiny torch models (a waveform
graph and a feature graph) give the torch model's embeddings; the input kind is detected from the graph; the
backbone has no gradient, so white-box attacks are refused with a KnowledgeError while score- and decision-based
attacks run end to end through the CLI."""

from __future__ import annotations

import copy
import json
import warnings

import pytest
import torch
from onnx import TensorProto, helper
from onnx import save as onnx_save
from torch import nn

from sec4sr_core.base.errors import KnowledgeError, ParameterError
from sec4sr_core.cli import main
from sec4sr_core.compose.factories import load_model
from sec4sr_core.plugins.manager import get_registry
from sec4sr_core.sdk.interfaces import Knowledge
from sec4sr_core.testing import ContractError, check_model

from sec4sr_plugins_models.frontends import KaldiFbank
from sec4sr_plugins_models.onnx_model import OnnxModel


class WaveNet(nn.Module):
    """(B, T) waveform -> (B, 8): framed conv, log energy, mean and std over time, linear."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(1, 6, kernel_size=160, stride=80)
        self.fc = nn.Linear(12, 8)

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        h = torch.log(self.conv(wav.unsqueeze(1)).pow(2) + 1e-3)
        return self.fc(torch.cat([h.mean(dim=2), h.std(dim=2)], dim=1))


class FeatNet(nn.Module):
    """(B, frames, 20) features -> (B, 8)."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(20, 16)
        self.fc = nn.Linear(32, 8)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.proj(feats))
        return self.fc(torch.cat([h.mean(dim=1), h.std(dim=1)], dim=1))


def export(module: nn.Module, example: torch.Tensor, path, name: str, axes: dict) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module.eval(), (example,), str(path), input_names=[name], output_names=["embs"],
                          dynamic_axes={name: axes, "embs": {0: "B"}}, dynamo=False)


def wave_graph(path) -> WaveNet:
    """Write the seeded waveform fixture graph (input ``wav`` (B, T), output (B, 8)) to ``path``; its torch original."""
    torch.manual_seed(0)
    wave = WaveNet()
    export(wave, torch.randn(2, 16000) * 0.1, path, "wav", {0: "B", 1: "T"})
    return wave


def feature_graph(path) -> FeatNet:
    """Write the seeded feature fixture graph (input ``feats`` (B, frames, 20), output (B, 8)) to ``path``."""
    torch.manual_seed(1)
    feat = FeatNet()
    export(feat, torch.randn(2, 50, 20), path, "feats", {0: "B", 1: "frames"})
    return feat


@pytest.fixture(scope="module")
def graphs(tmp_path_factory):
    d = tmp_path_factory.mktemp("onnx")
    wave = wave_graph(d / "wave.onnx")
    feat = feature_graph(d / "feat.onnx")
    return {"dir": d, "wave": (d / "wave.onnx", wave), "feat": (d / "feat.onnx", feat)}


def test_waveform_graph_matches_its_torch_original(graphs):
    path, net = graphs["wave"]
    m = OnnxModel(path=path).eval()
    assert m.kind == "wave" and m.levels == ("wave", "final")
    x = torch.randn(3, 1, 12000) * 0.1
    assert m.to_level(x, "wave", "final").shape == (3, 12000, 1)
    with torch.no_grad():
        torch.testing.assert_close(m.embed(x), net(x[:, 0]), rtol=1e-4, atol=1e-5)


def test_feature_graph_gets_the_wespeaker_front_end(graphs):
    path, net = graphs["feat"]
    m = OnnxModel(path=path).eval()
    assert m.kind == "wespeaker" and m.n_mels == 20 and m.levels == ("wave", "raw", "final")
    x = torch.randn(2, 1, 8000) * 0.1
    fb = KaldiFbank(num_mel_bins=20, snip_edges=True)  # ×32768, Hamming window (WeSpeaker's compute_fbank)
    fb.window = torch.hamming_window(400, periodic=False)
    feats = fb(x)
    feats = feats - feats.mean(dim=1, keepdim=True)
    with torch.no_grad():
        torch.testing.assert_close(m.to_level(x, "wave", "final"), feats)
        torch.testing.assert_close(m.embed(x), net(feats), rtol=1e-4, atol=1e-5)
    sb = OnnxModel(path=path, frontend="speechbrain")
    assert sb.to_level(x, "wave", "raw").shape == (2, 8000 // 160 + 1, 20)
    d3 = OnnxModel(path=path, frontend="3dspeaker", cmn=False)
    ref = KaldiFbank(num_mel_bins=20, snip_edges=True, scale=1.0)(x)
    torch.testing.assert_close(d3.to_level(x, "wave", "final"), ref)


def test_no_gradient_knowledge_error_and_declaration(graphs):
    m = OnnxModel(path=graphs["wave"][0]).eval()
    assert OnnxModel.differentiable is False
    x = (torch.randn(2, 1, 4000) * 0.1).requires_grad_(True)
    scores = m.score(m.embed(x), torch.randn(3, 8))
    assert scores.shape == (2, 3) and scores.requires_grad
    with pytest.raises(KnowledgeError, match="score-based attack"):
        scores.sum().backward()


def test_contract_kit_everything_but_gradients(graphs):
    """The kit passes every rule except the gradient one (an ONNX graph has none)."""
    for key in ("wave", "feat"):
        try:
            check_model(OnnxModel, {"path": str(graphs[key][0])})
        except ContractError as exc:
            assert set(exc.rules) == {"model.differentiable"}, str(exc)
            assert "KnowledgeError" in str(exc)


def test_bad_graphs_and_frontends_are_parameter_errors(graphs, tmp_path):
    with pytest.raises(ParameterError, match="is not a file"):
        OnnxModel(path=tmp_path / "nope.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"not a graph")
    with pytest.raises(ParameterError, match="cannot load"):
        OnnxModel(path=tmp_path / "junk.onnx")
    with pytest.raises(ParameterError, match="takes waveforms"):
        OnnxModel(path=graphs["wave"][0], frontend="wespeaker")
    with pytest.raises(ParameterError, match="takes features"):
        OnnxModel(path=graphs["feat"][0], frontend="wave")
    with pytest.raises(ParameterError, match="n_mels=40"):
        OnnxModel(path=graphs["feat"][0], n_mels=40)
    # two inputs, built with onnx.helper
    a = helper.make_tensor_value_info("a", TensorProto.FLOAT, ["B", 4])
    b = helper.make_tensor_value_info("b", TensorProto.FLOAT, ["B", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["B", 4])
    graph = helper.make_graph([helper.make_node("Add", ["a", "b"], ["y"])], "two", [a, b], [y])
    onnx_save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(tmp_path / "two.onnx"))
    with pytest.raises(ParameterError, match="has 2 inputs"):
        OnnxModel(path=tmp_path / "two.onnx")


def test_fixed_batch_graph_and_copies(graphs, tmp_path):
    """A graph exported with batch 1 is run row by row; a deep copy rebuilds its session."""
    path = tmp_path / "b1.onnx"
    net = graphs["wave"][1]
    export(net, torch.randn(1, 16000) * 0.1, path, "wav", {1: "T"})
    m = OnnxModel(path=path)
    assert m.fixed_batch == 1
    x = torch.randn(3, 1, 8000) * 0.1
    with torch.no_grad():
        out = m.embed(x)
        torch.testing.assert_close(out, net(x[:, 0]), rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(copy.deepcopy(m).embed(x), out)


def _run(tmp_path, model, attack, task="sv"):
    return main(["run", "--model", model, "--task", task, "--attack", attack, "--limit", "4", "--batch-size", "4",
                 "--length", "1", "--quiet", "--json", "--out", str(tmp_path)])


def test_score_and_decision_attacks_run_end_to_end(graphs, tmp_path, capsys):
    spec = f"onnx:path={graphs['wave'][0]}"
    assert isinstance(load_model(spec), OnnxModel)
    reg = get_registry()
    assert reg.resolve("attack", "fakebob")[0].knowledge == Knowledge.SCORES
    assert reg.resolve("attack", "hsja")[0].knowledge == Knowledge.DECISIONS
    attack = "fakebob:max_iter=2,samples=2,samples_batch=2,estimate_iter=1"
    rc = _run(tmp_path / "fb", spec, attack)
    out = capsys.readouterr()
    assert rc == 0, out.err
    cells = json.loads(out.out)["results"]
    assert cells[0]["n"] == 4 and cells[0]["mean_queries"] > 0
    rc = _run(tmp_path / "hsja", spec, "hsja:iterations=1,init_evals=4,max_evals=4,probe_batch=4,search_steps=3,step_halvings=2,init_draws=2,start_pool=0", task="csi-e")
    out = capsys.readouterr()
    assert rc == 0, out.err
    assert json.loads(out.out)["results"][0]["n"] == 4


def test_white_box_attack_is_refused(graphs, tmp_path, capsys):
    rc = _run(tmp_path, f"onnx:path={graphs['wave'][0]}", "pgd-10:steps=1", task="csi-e")
    err = capsys.readouterr().err
    assert rc == 2
    assert "no gradient" in err and "score-based" in err and "Traceback" not in err
