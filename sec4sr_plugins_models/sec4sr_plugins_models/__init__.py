"""sec4sr's backbones. Registered lazily by path, so listing them imports no network code."""

from __future__ import annotations

from sec4sr_core.sdk import hookimpl


@hookimpl
def register_models(register):
    register("sec4sr_plugins_models.ge2e:GE2E", name="ge2e",
             summary="GE2E LSTM speaker encoder (resemblyzer's trained weights), cosine scoring; CSI-E/SV/OSI.")
    register("sec4sr_plugins_models.ivector:IVector", name="ivector",
             summary="i-vector/PLDA: Kaldi MFCC+Δ+ΔΔ, sliding CMN, full UBM, batched extractor; CSI-E/SV/OSI.")
    register("sec4sr_plugins_models.xvector:XVector", name="xvector",
             summary="x-vector/PLDA: Kaldi MFCC 30, sliding CMN, TDNN 512/1500 with statistics pooling; CSI-E/SV/OSI.")
    register("sec4sr_plugins_models.audionet:AudioNet", name="audionet",
             summary="AudioNet CNN classifier on 32-band log-mel (CSI-NE).")
    register("sec4sr_plugins_models.ecapa:ECAPA", name="ecapa",
             summary="ECAPA-TDNN on 80-d Kaldi fbank, AAM-softmax training, cosine scoring; CSI-E/SV/OSI.")
    register("sec4sr_plugins_models.wespeaker.backbone:WeSpeaker", name="wespeaker",
             summary="WeSpeaker folder (config.yaml + avg_model.pt: ResNet, SimAM-ResNet, ECAPA, CAM++), its fbank + CMN; "
                     "CSI-E/SV/OSI.")
    register("sec4sr_plugins_models.wespeaker.backbone:CAMPPlus3D", name="campplus3d",
             summary="3D-Speaker CAM++ state dict (.bin), its 80-bin fbank + CMN, cosine; CSI-E/SV/OSI.")
    register("sec4sr_plugins_models.ecapa:SpeechBrainECAPA", name="speechbrain",
             summary="SpeechBrain ECAPA-TDNN folder (hyperparams.yaml + embedding_model.ckpt), its Fbank; CSI-E/SV/OSI.")
    register("sec4sr_plugins_models.eres2net:ERes2Net3D", name="eres2net3d",
             summary="3D-Speaker ERes2Net state dict (.bin), Kaldi fbank 80 + CMN, cosine; CSI-E/SV/OSI.")
    register("sec4sr_plugins_models.onnx_model:OnnxModel", name="onnx",
             summary="ONNX speaker-embedding model via onnxruntime (score/decision attacks only); CSI-E/SV/OSI.")
