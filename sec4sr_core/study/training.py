"""The generic, seeded training loop for neural backbones (and the entry point that trains any backbone).

:func:`train` trains a backbone that exposes the *trainable* protocol (duck-typed; the core imports no plugin):

* ``set_classes(class_ids)`` — build the classifier for the speakers of the dataset's ``train`` split;
* ``train_logits(final) -> (B, C)`` — training logits from ``final``-level features;
* optional ``train_loss(logits, y)`` (cross-entropy otherwise), ``after_training(dataset, config)`` (e.g. fitting a
  PLDA back-end), ``adapt_to_checkpoint(payload)`` (resize the classifier before loading a checkpoint);
* ``train_defaults`` — per-backbone defaults for :class:`TrainConfig` on the embedded corpus.

A backbone without ``train_logits`` but with ``fit(dataset, seed=, progress=)`` (the i-vector model: UBM, T matrix,
LDA, PLDA by EM) is fitted instead.

Training runs on a seeded random crop of every training utterance per epoch (``crop_s``), Adam, one checkpoint per
epoch in the model store (:func:`~sec4sr_core.sdk.modelstore.save_checkpoint` with the variant ``tag``) holding the
optimizer state, so an interrupted run resumes from its last finished epoch with the same result. The forward path
is the model's CSI view behind the optional ``defenses`` chain (``--defense``: e.g. quantisation in the loop).
``batch_hook(model, x, y) -> (x, y)`` runs on every batch **with the model in eval mode** (and back to train mode
afterwards): adversarial training (``--adversarial``) uses it to replace a share of the batch by adversarial
examples crafted against the model being trained, as the registry's attack sees it through an oracle
(:func:`adversarial_hook`, which crafts through the in-loop defense chain too).

:func:`train_variant` is the one entry point of ``sec4sr train --adversarial/--defense`` and of a study's
model-variant rows (``advt``: :class:`sec4sr_core.sdk.variants.ModelVariantDefense`, whose
:class:`~sec4sr_core.sdk.variants.TrainingOptions` are its keyword arguments). Variant tags
(:func:`sec4sr_core.sdk.variants.variant_tag`): natural training ``""``; adversarial ``advt-<attack slug>`` or
``advt-<attack slug>+<defense slug>``; natural training with a defense in the loop ``natural+<defense slug>``; a
study row passes the tag its model-variant defense declares.
"""

from __future__ import annotations

import math
import time
from typing import Any, Callable, Sequence

import torch
from pydantic import BaseModel, ConfigDict, Field

from sec4sr_core.base.errors import ParameterError, Sec4srError
from sec4sr_core.sdk.interfaces import Defense, SpeakerModel, Task
from sec4sr_core.sdk.variants import TAG_PATTERN, ModelVariantDefense, TrainingOptions, variant_tag

BatchHook = Callable[[Any, torch.Tensor, torch.Tensor], "tuple[torch.Tensor, torch.Tensor]"]


class TrainConfig(BaseModel):
    """Training settings. ``None`` means the backbone's own default (``model.train_defaults``)."""

    model_config = ConfigDict(extra="forbid")

    epochs: int | None = Field(None, ge=1, description="passes over the training split")
    lr: float | None = Field(None, gt=0, description="Adam learning rate")
    batch_size: int | None = Field(None, ge=1, description="utterances per batch")
    crop_s: float | None = Field(None, gt=0, description="seconds of audio per training example (seeded random crop)")
    min_crop_s: float | None = Field(None, gt=0, description="shortest speech per training example in seconds: each "
                                     "example keeps U[min_crop_s, crop_s] s of its crop and is zero-padded to crop_s, "
                                     "as evaluation zero-pads short utterances (None: crop_s, no padding added)")
    seed: int = Field(0, description="seeds shuffling, crops, initialisation and noise")
    resume: bool = Field(True, description="continue from the last epoch checkpoint of the same configuration")
    aug_eps: float = Field(0.0, ge=0, description="uniform noise augmentation bound in [-1,1] amplitude units "
                                                  "(predecessor: a ~ U[0,1), noise ~ U[-a·eps, a·eps])")
    weight_decay: float = Field(0.0, ge=0, description="Adam weight decay")
    device: str = Field("cpu", description="cpu or cuda")
    eval_s: float = Field(3.0, gt=0, description="seconds per held-out utterance when reporting accuracy")
    embed_s: float = Field(3.0, gt=0, description="seconds per utterance when fitting a back-end after training")
    defense_order: str = Field("sequential", description="order of the training defense chain")

    def resolved(self, model: Any) -> "TrainConfig":
        defaults = {"epochs": 10, "lr": 1e-3, "batch_size": 32, "crop_s": 2.0, "min_crop_s": None}
        defaults.update(getattr(model, "train_defaults", {}) or {})
        values = self.model_dump()
        for key in ("epochs", "lr", "batch_size", "crop_s", "min_crop_s"):
            if values[key] is None:
                values[key] = defaults[key]
        if values["min_crop_s"] is not None and values["min_crop_s"] >= values["crop_s"]:
            values["min_crop_s"] = None  # a crop shorter than the minimum keeps all its speech
        return TrainConfig(**values)


class ClassifierView(SpeakerModel):
    """A trainable backbone seen as a CSI-NE classifier over its training speakers (same parameters, same levels):
    what the training forward path and the adversarial-training attacks use."""

    output = "logits"
    tasks = (Task.CSI_NE,)

    def __init__(self, model: SpeakerModel) -> None:
        torch.nn.Module.__init__(self)
        self.name = model.name  # type: ignore[misc]
        self.params = model.params
        self.levels = model.levels  # type: ignore[misc]
        self.inner = model
        self.class_ids = list(model.class_ids)

    def to_level(self, x: torch.Tensor, src: str, dst: str) -> torch.Tensor:
        return self.inner.to_level(x, src, dst)

    def head(self, final: torch.Tensor) -> torch.Tensor:
        return self.inner.train_logits(final)


def is_trainable(model: Any) -> bool:
    return hasattr(model, "train_logits") or hasattr(model, "fit")


def classifier_system(model: SpeakerModel, defenses: Sequence[Any] = (), order: str = "sequential"):
    """The model's CSI-NE view (over ``model.class_ids``) behind ``defenses``."""
    from sec4sr_core.sdk.system import DefendedSystem, SpeakerSystem

    view = model if model.output == "logits" else ClassifierView(model)
    return DefendedSystem(SpeakerSystem(view, Task.CSI_NE, list(model.class_ids)), list(defenses), order)


def in_loop_defenses(chain: str | Sequence[Defense]) -> list[Defense]:
    """The defenses of a training forward path: a chain spec (``qt:q=512+at:snr=30``, built by the registry) or
    built defenses; model-variant parts (``advt``) are dropped — they select a backbone, they are not in its loop."""
    if isinstance(chain, str):
        from sec4sr_core.compose.factories import build_defenses

        built: Sequence[Defense] = build_defenses(chain) if chain.strip() else []
    else:
        built = chain
    return [d for d in built if not isinstance(d, ModelVariantDefense)]


def adversarial_hook(
    attack_spec: str, defenses: str | Sequence[Defense] = (), ratio: float = 0.5, eot: int = 1, seed: int = 0,
    order: str = "sequential",
) -> BatchHook:
    """The per-batch hook of adversarial training: ``hook(model, x, y) -> (x', y)``.

    ``x`` (B, 1, T) waves in [-1, 1], ``y`` (B,) training-class labels (over ``model.class_ids``). ``ceil(ratio·B)``
    seeded-random examples are replaced by untargeted adversarial examples of the registry's ``attack_spec``
    (white-box or black-box, through the matching oracle) crafted on the model's CSI-NE view behind ``defenses``
    (:func:`in_loop_defenses`: a chain spec or built defenses): BPDA for non-differentiable defenses, ``eot`` draws
    for randomized ones. The model is in eval mode while crafting (so attack queries leave batch-norm statistics
    alone) and back in its previous mode afterwards, whoever calls the hook. Batch ``i`` draws from seed
    ``seed·100003 + i``.
    """
    from sec4sr_core.plugins.manager import get_registry
    from sec4sr_core.sdk.oracle import make_oracle

    if not 0.0 < ratio <= 1.0:
        raise ParameterError(f"adversarial ratio must be in (0, 1], got {ratio}")
    if eot < 1:
        raise ParameterError(f"eot must be >= 1, got {eot}")
    attack = get_registry().build("attack", attack_spec)
    chain = in_loop_defenses(defenses)
    g = torch.Generator().manual_seed(seed)
    state = {"batch": 0}

    def craft(model: Any, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b = x.shape[0]
        k = max(1, math.ceil(ratio * b))
        idx = torch.randperm(b, generator=g)[:k].to(x.device)
        system = classifier_system(model, chain, order)
        batch_seed = seed * 100003 + state["batch"]
        state["batch"] += 1
        system.seed(batch_seed)
        oracle = make_oracle(system, attack.knowledge, n=k, eot=eot if system.randomized else 1, seed=batch_seed)
        torch.manual_seed(batch_seed)
        result = attack.run(oracle, x[idx], y[idx], targeted=False)
        x = x.clone()
        x[idx] = result.adv.detach().to(x.dtype)
        return x, y

    def hook(model: Any, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        was_training = model.training
        model.eval()
        try:
            return craft(model, x, y)
        finally:
            model.train(was_training)

    return hook


_AUDIO_CACHE: dict[tuple[str, str, str], tuple[torch.Tensor, torch.Tensor, list[str], torch.Tensor]] = {}


def _load_train_audio(dataset: Any, split: str = "train") -> tuple[torch.Tensor, torch.Tensor, list[str], torch.Tensor]:
    """All training audio as a zero-padded (N, Tmax) tensor, lengths (N,), speakers, labels (N,).

    The last split loaded is kept (one entry, keyed on the dataset's name and content fingerprint), so training
    several variants in one process (a study's AdvT rows, a resumed run) decodes the files once. Callers must not
    modify the returned tensors in place."""
    key = (dataset.name, str(dataset.fingerprint()), split)
    if key not in _AUDIO_CACHE:
        loaded = _read_train_audio(dataset, split)
        _AUDIO_CACHE.clear()
        _AUDIO_CACHE[key] = loaded
    return _AUDIO_CACHE[key]


def _read_train_audio(dataset: Any, split: str) -> tuple[torch.Tensor, torch.Tensor, list[str], torch.Tensor]:
    from sec4sr_core.sdk.audio import load_audio

    utts = dataset.split(split)
    if not utts:
        raise Sec4srError(f"dataset {dataset.name!r} has no {split!r} split to train on")
    speakers = sorted({u.speaker for u in utts})
    if len(speakers) < 2:
        raise Sec4srError(f"dataset {dataset.name!r}: the {split!r} split needs at least 2 speakers")
    index = {s: i for i, s in enumerate(speakers)}
    waves = [load_audio(u.path)[0] for u in utts]
    lengths = torch.tensor([w.numel() for w in waves])
    audio = torch.zeros(len(waves), int(lengths.max()))
    for i, w in enumerate(waves):  # loading only; the hot loop below is batched
        audio[i, : w.numel()] = w
    labels = torch.tensor([index[u.speaker] for u in utts])
    return audio, lengths, speakers, labels


def random_crops(audio: torch.Tensor, lengths: torch.Tensor, length: int, g: torch.Generator,
                 min_length: int | None = None) -> torch.Tensor:
    """One seeded random crop of ``length`` samples per row of ``audio`` (zero-padded when shorter): (N, 1, length).

    With ``min_length``, each crop keeps only its first ``U{min_length..length}`` samples and zeroes the rest — the
    zero-padded tail that evaluation gives utterances shorter than its window (models with utterance-level
    normalisation, e.g. ECAPA, otherwise meet padding only at test time)."""
    room = (lengths - length).clamp_min(0)
    start = (torch.rand(len(lengths), generator=g) * (room + 1).double()).long().clamp(max=room)
    steps = torch.arange(length).unsqueeze(0)
    idx = start.unsqueeze(1) + steps
    valid = idx < lengths.unsqueeze(1)
    if min_length is not None and min_length < length:
        keep = min_length + (torch.rand(len(lengths), generator=g) * (length - min_length + 1)).long()
        valid = valid & (steps < keep.clamp(max=length).unsqueeze(1))
    crops = audio.gather(1, idx.clamp(max=audio.shape[1] - 1)) * valid
    return crops.unsqueeze(1)


@torch.no_grad()
def heldout_accuracy(model: SpeakerModel, dataset: Any, defenses: Sequence[Any] = (), seconds: float = 3.0,
                     order: str = "sequential", device: str = "cpu") -> float | None:
    """CSI accuracy of the model's classifier view on the dataset's ``heldout`` split (eval mode)."""
    from sec4sr_core.sdk.audio import load_batch

    index = {s: i for i, s in enumerate(model.class_ids)}
    utts = [u for u in dataset.split("heldout") if u.speaker in index] if "heldout" in dataset.split_names() else []
    if not utts:
        return None
    was = model.training
    model.eval()
    system = classifier_system(model, defenses, order)
    system.seed(0)
    correct = 0
    for s in range(0, len(utts), 32):
        chunk = utts[s : s + 32]
        x = load_batch([u.path for u in chunk], int(round(seconds * 16000))).to(device)
        pred = system(x).argmax(dim=1).cpu()
        correct += int((pred == torch.tensor([index[u.speaker] for u in chunk])).sum())
    model.train(was)
    return correct / len(utts)


def train(
    model: SpeakerModel,
    dataset: Any,
    config: TrainConfig | None = None,
    *,
    batch_hook: BatchHook | None = None,
    tag: str = "",
    progress: bool = True,
    defenses: Sequence[Any] = (),
) -> dict[str, Any]:
    """Train ``model`` on ``dataset``'s ``train`` split; checkpoints per epoch under the model store.

    Returns a summary (epochs run, loss and accuracy history, held-out accuracy, seconds, checkpoint path). The
    model is left in eval mode with the final weights.
    """
    from tqdm import tqdm

    from sec4sr_core.sdk.modelstore import checkpoint_path, load_state, read_torch_file, save_checkpoint

    config = (config or TrainConfig()).resolved(model)
    if config.device.startswith("cuda") and not torch.cuda.is_available():
        raise Sec4srError("--device cuda was asked for, but no CUDA device is available")
    t0 = time.perf_counter()
    if not hasattr(model, "train_logits"):
        if not hasattr(model, "fit"):
            raise Sec4srError(f"model {model.name!r} cannot be trained by sec4sr (no training procedure)")
        if batch_hook is not None or defenses:
            raise Sec4srError(f"model {model.name!r} is fitted by EM; adversarial or defended training needs a "
                              f"neural backbone (audionet, xvector, ecapa)")
        stats = model.fit(dataset, seed=config.seed, progress=progress)
        path = save_checkpoint(model, tag=tag, extra={"complete": True, "epoch": 1, "epochs": 1,
                                                      "config": config.model_dump(mode="json")})
        model.eval()
        return {"model": model.name, "tag": tag, "checkpoint": str(path), "time_s": time.perf_counter() - t0,
                **stats}

    device = torch.device(config.device)
    audio, lengths, speakers, labels = _load_train_audio(dataset)
    torch.manual_seed(config.seed)
    for mod in model.modules():  # seeded initialisation, whatever the RNG state when the model was built
        if hasattr(mod, "reset_parameters") and mod is not model:
            mod.reset_parameters()
    model.set_classes(speakers)
    model.to(device)
    for d in defenses:
        d.to(device)
    opt = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    fingerprint = {k: v for k, v in config.model_dump(mode="json").items() if k not in ("epochs", "resume", "device")}
    fingerprint["dataset"] = f"{dataset.name}-{dataset.fingerprint()}"
    history: list[dict[str, Any]] = []
    start = 0
    path = checkpoint_path(model, tag=tag)
    if config.resume and path.exists():
        payload = read_torch_file(path)
        extra = payload.get("extra", {}) if isinstance(payload, dict) else {}
        if extra.get("fingerprint") == fingerprint and "optimizer" in extra:
            model.adapt_to_checkpoint(payload) if hasattr(model, "adapt_to_checkpoint") else None
            model.to(device)
            load_state(model, payload["state_dict"], str(path))
            opt = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
            opt.load_state_dict(extra["optimizer"])
            start = int(extra.get("epoch", 0))
            history = list(extra.get("history", []))
            if extra.get("complete") and start >= config.epochs:
                model.eval()
                return {"model": model.name, "tag": tag, "checkpoint": str(path), "epochs": start,
                        "resumed_from": start, "history": history, "time_s": time.perf_counter() - t0,
                        "heldout_accuracy": history[-1].get("heldout_accuracy") if history else None,
                        "up_to_date": True}
    resumed_from = start
    system = classifier_system(model, defenses, config.defense_order)
    n = audio.shape[0]
    length = int(round(config.crop_s * 16000))
    min_length = None if config.min_crop_s is None else int(round(config.min_crop_s * 16000))
    loss_fn = getattr(model, "train_loss", None) or (lambda logits, y: torch.nn.functional.cross_entropy(logits, y))
    for epoch in range(start, config.epochs):
        g = torch.Generator().manual_seed(config.seed * 1000 + epoch)
        torch.manual_seed(config.seed * 1000 + epoch)
        system.seed(config.seed * 1000 + epoch)
        order = torch.randperm(n, generator=g)
        crops = random_crops(audio[order], lengths[order], length, g, min_length)
        ys = labels[order]
        model.train()
        tot_loss, tot_correct, seen = 0.0, 0, 0
        batches = range(0, n, config.batch_size)
        bar = tqdm(batches, desc=f"{model.name} epoch {epoch + 1}/{config.epochs}", disable=not progress,
                   leave=False, unit="batch")
        for s in bar:
            x = crops[s : s + config.batch_size].to(device)
            y = ys[s : s + config.batch_size].to(device)
            if batch_hook is not None:
                model.eval()
                try:
                    x, y = batch_hook(model, x, y)
                finally:
                    model.train()
            if config.aug_eps > 0:
                a = torch.rand(x.shape[0], 1, 1, generator=g).to(device)
                noise = (torch.rand(x.shape, generator=g).to(device) * 2 - 1) * a * config.aug_eps
                x = torch.cat([x, (x + noise).clamp(-1, 1)])
                y = torch.cat([y, y])
            opt.zero_grad(set_to_none=True)
            logits = system(x)
            loss = loss_fn(logits, y)
            loss.backward()
            opt.step()
            tot_loss += float(loss.detach()) * x.shape[0]
            tot_correct += int((logits.detach().argmax(dim=1) == y).sum())
            seen += x.shape[0]
            bar.set_postfix(loss=f"{tot_loss / seen:.3f}", acc=f"{tot_correct / seen:.2f}")
        bar.close()
        acc = heldout_accuracy(model, dataset, defenses, config.eval_s, config.defense_order, config.device)
        history.append({"epoch": epoch + 1, "loss": tot_loss / max(seen, 1), "train_accuracy": tot_correct / max(seen, 1),
                        "heldout_accuracy": acc})
        last = epoch + 1 == config.epochs
        extra: dict[str, Any] = {}
        if last and hasattr(model, "after_training"):
            extra = model.after_training(dataset, config) or {}
        save_checkpoint(model, tag=tag, extra={
            "epoch": epoch + 1, "epochs": config.epochs, "complete": last, "optimizer": opt.state_dict(),
            "history": history, "fingerprint": fingerprint, **extra,
        })
    model.eval()
    return {"model": model.name, "tag": tag, "checkpoint": str(path), "epochs": config.epochs,
            "resumed_from": resumed_from, "history": history, "time_s": time.perf_counter() - t0,
            "heldout_accuracy": history[-1]["heldout_accuracy"] if history else None, "up_to_date": False}


def train_variant(
    model_spec: str,
    dataset_spec: str = "embedded",
    adversarial: str | None = None,
    defense: str | None = None,
    epochs: int | None = None,
    seed: int = 0,
    *,
    ratio: float = 0.5,
    eot: int = 1,
    progress: bool = False,
    tag: str | None = None,
    **config: Any,
) -> dict[str, Any]:
    """Train ``model_spec`` (naturally, adversarially with ``adversarial`` = an attack spec, and/or with the defense
    chain ``defense`` in the forward path, through which the adversarial examples are crafted too) and store it
    under ``tag`` — by default its variant tag (:func:`variant_tag`); a study row passes the tag its model-variant
    defense declares. ``adversarial``, ``defense``, ``ratio``, ``eot`` and ``epochs`` are the fields of
    :class:`~sec4sr_core.sdk.variants.TrainingOptions`; ``config`` holds further :class:`TrainConfig` fields."""
    from sec4sr_core.plugins.manager import get_registry
    from sec4sr_core.compose.factories import build_defenses, resolve_dataset

    options = TrainingOptions.checked("training options", adversarial=adversarial, defense=defense, ratio=ratio,
                                      eot=eot, epochs=epochs)
    if tag is None:
        tag = variant_tag(options.adversarial, options.defense)
    elif tag and not TAG_PATTERN.fullmatch(tag):
        raise ParameterError(f"variant tag {tag!r}: use only the characters [A-Za-z0-9_.+~-]")
    model = get_registry().build("model", model_spec)
    dataset = resolve_dataset(dataset_spec)
    try:
        cfg = TrainConfig(epochs=options.epochs, seed=seed, **config)
    except Exception as exc:  # pydantic ValidationError -> one line
        raise ParameterError(f"training config: {exc}".splitlines()[0]) from None
    defenses = build_defenses(options.defense) if options.defense else []
    variants = [d.name for d in defenses if isinstance(d, ModelVariantDefense)]
    if variants:
        raise ParameterError(f"defense chain {options.defense!r} names the model-variant defense {variants[0]!r}, "
                             f"which selects a trained backbone and cannot be in the training loop; train it with "
                             f"--adversarial SPEC (or run a study row {variants[0]}+...)")
    hook = (adversarial_hook(options.adversarial, defenses, options.ratio, options.eot, seed, cfg.defense_order)
            if options.adversarial else None)
    return train(model, dataset, cfg, batch_hook=hook, tag=tag, progress=progress, defenses=defenses)
