"""Pretrained speaker-embedding networks in their published formats.

* :mod:`.nets` — WeSpeaker's ResNet (18…293), SimAM-ResNet (VoxBlink2), ECAPA-TDNN (c512/c1024, GLOB) and CAM++,
  and 3D-Speaker's CAM++, re-implemented with the upstream module trees so that the published state dicts load by
  key name with ``strict=True``; :mod:`.pooling` their pooling layers.
* :mod:`.frontend` — the upstream front-ends (Kaldi fbank with WeSpeaker's or 3D-Speaker's settings, per-utterance
  CMN), batched and differentiable.
* :mod:`.backbone` — the backbones ``wespeaker`` (a ``config.yaml`` + ``avg_model.pt`` folder) and ``campplus3d``
  (a 3D-Speaker CAM++ ``.bin`` state dict).

The package's own imports are lazy: the registry imports :mod:`.backbone` by path only when a backbone is built.
"""
