"""sec4sr's attacks and their presets, registered lazily by path (listing imports no torch-heavy module)."""

from __future__ import annotations

from sec4sr_core.sdk import Preset, hookimpl

_ATTACKS = (
    ("fgsm", "pgd:FGSM", "Fast gradient sign method: one signed step of size ε (white-box)."),
    ("pgd", "pgd:PGD", "Projected gradient descent in an L∞ or L2 ball, restarts, best kept per utterance "
                       "(white-box)."),
    ("cwinf", "pgd:CWInf", "CW∞: PGD on the margin loss with confidence κ (white-box)."),
    ("cw2", "cw2:CW2", "Carlini–Wagner L2: tanh box, Adam, binary search over c, κ, early stop (white-box)."),
    ("apgd", "apgd:APGD", "Auto-PGD: L∞ PGD with momentum and a checkpointed step-size schedule (white-box)."),
    ("uap", "uap:UAP", "Universal perturbation crafted on held-out utterances, applied to unseen ones "
                       "(white-box)."),
    ("pgd-nes", "pgd:PGDNES", "PGD on NES gradient estimates from scores only (score-based, estimated θ)."),
    ("fakebob", "fakebob:FakeBob", "FAKEBOB: NES, momentum, plateau lr schedule, early stop, estimated θ "
                                   "(score-based)."),
    ("siren", "siren:Siren", "SirenAttack: particle swarm optimisation in an L∞ ball (score-based, estimated θ)."),
    ("square", "square:Square", "Square Attack: random-search L∞ attack with shrinking windows (score-based)."),
    ("kenan", "kenan:Kenan", "Kenansville: remove low-energy FFT bins or SSA components by binary search "
                             "(decision-based, unbounded)."),
    ("hsja", "hsja:HSJA", "HopSkipJump: L2 boundary attack with gradient-direction estimates (decision-based)."),
    ("masking", "psychoacoustic:Masking", "Psychoacoustic attack: Adam under a frequency-masking threshold "
                                          "(Qin et al. 2019; white-box)."),
    ("pgd-detect", "adaptive_detect:PGDDetect", "Detector-aware L∞ PGD: attack loss + λ·WaveGuard score "
                                                "(white-box, adaptive to a detector)."),
)


@hookimpl
def register_attacks(register):
    for name, path, summary in _ATTACKS:
        register(f"sec4sr_plugins_attacks.{path}", name=name, summary=summary)


#: The SEC4SR study's 15 attack configurations (ε = 0.002). CW2 and FAKEBOB keep the predecessor's parameters
#: except the iteration caps, which are made practical (see docs/attacks.md): CW2 1000 Adam iterations per
#: binary-search step with an early-stop check every 100; FAKEBOB keeps 1000 iterations (its early stop ends
#: most utterances far sooner).
STUDY_PRESETS = (
    [Preset("fgsm", "attack", "fgsm", {"epsilon": 0.002}, "FGSM, ε = 0.002 (study configuration)")]
    + [Preset(f"pgd-{s}", "attack", "pgd", {"steps": s, "epsilon": 0.002, "step_size": 0.0004},
              f"PGD with {s} steps, ε = 0.002, α = 0.0004 (study configuration)") for s in (10, 20, 30, 40, 50, 100)]
    + [Preset("cwinf-0", "attack", "cwinf", {"kappa": 0.0, "epsilon": 0.002, "steps": 10, "step_size": 0.001},
              "CW∞ with κ = 0, 10 steps, ε = 0.002 (study configuration)")]
    + [Preset(f"cw2-{k}", "attack", "cw2", {"kappa": float(k), "max_iter": 1000, "stop_early_iter": 100},
              f"CW2 with κ = {k}, 9 binary-search steps × ≤ 1000 iterations (study configuration)")
       for k in (0, 2, 5, 10, 20, 50)]
    + [Preset("fakebob", "attack", "fakebob", {"epsilon": 0.002},
              "FAKEBOB, ε = 0.002, 50 NES samples, ≤ 1000 iterations (study configuration)")]
)


@hookimpl
def register_presets(register):
    for preset in STUDY_PRESETS:
        register(preset)
