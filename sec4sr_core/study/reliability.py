"""Reliability warnings: automatic flags on evaluations that look unreliable (after AutoAttack's ``checks.py``).

Each warning is a ``{"code": ..., "message": ...}`` entry in the ``warnings`` JSON column of the result rows it
concerns, so it travels with the numbers into every report.

======================  ==========================================================================================
code                    raised when
======================  ==========================================================================================
randomized-no-eot       an adaptive cell crafts against a randomized defense with one EOT draw: the attack chases
                        one random draw per query, and robustness is over-estimated (use ``eot`` > 1)
gradient-masking        a white-box attack's loss gradient at the benign input is zero or not finite (its L2 norm
                        ≤ :data:`GRAD_TOL`): gradients are masked, the attack is blind (use BPDA or a black-box
                        attack)
black-box-beats-white   on the same (system, task, defense, setting), a score- or decision-based attack leaves a
                        lower accuracy than every white-box attack: the white-box attacks are not working
accuracy-above-benign   the accuracy under an attack is higher than the benign accuracy of the same row
adaptive-weaker         on a defended row, an adaptive attack leaves a higher accuracy than the same attack crafted
                        non-adaptively (transferred from the undefended system): the adaptive attack is too weak
over-budget             the adversarial audio (as saved, 16-bit) lies outside the attack's declared ε-ball
                        (``norm`` with ``params.epsilon``): the attack broke its own budget (16-bit rounding alone
                        never does: it rounds toward the benign sample where needed)
======================  ==========================================================================================

The first two and ``over-budget`` are decided per batch while crafting (:func:`row_warnings`); the last two compare cells after a study
ran (:func:`study_warnings`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterable, Sequence

if TYPE_CHECKING:  # pragma: no cover
    import torch

#: gradient L2 norms (in loss units per [-1, 1] amplitude unit) at or below this count as vanished
GRAD_TOL = 1e-10

CODES = {
    "randomized-no-eot": "randomized defense attacked without EOT (eot = 1): robustness is likely over-estimated",
    "gradient-masking": "vanishing input gradient (gradient masking): the white-box attack saw a zero or non-finite "
                        "gradient",
    "black-box-beats-white": "a black-box attack beats the white-box attacks on this cell: the white-box evaluation "
                             "is unreliable",
    "accuracy-above-benign": "accuracy under attack is above benign accuracy",
    "over-budget": "the saved adversarial audio is outside the attack's declared budget",
    "adaptive-weaker": "the adaptive attack is weaker than the same attack crafted without the defense: the adaptive "
                       "evaluation is too weak (more EOT draws or steps; robustness is the lower of the two)",
}


def warning(code: str, detail: str = "") -> dict[str, str]:
    """One warning entry; ``detail`` is appended to the code's standard message."""
    return {"code": code, "message": CODES[code] + (f" ({detail})" if detail else "")}


def input_gradient_norms(
    system: Any, x: torch.Tensor, y: torch.Tensor, targeted: bool = False, claims: torch.Tensor | None = None,
    seed: int = 0,
) -> torch.Tensor:
    """L2 norm (B,) of the gradient of the margin loss (SEC4SR §7) at ``x`` (B, 1, T) through ``system`` (a
    DefendedSystem, with BPDA where it applies — the gradient a white-box attack sees). NaN where not finite."""
    import torch

    from sec4sr_core.sdk.losses import margin_loss

    system.seed(seed)
    xd = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        scores = system(xd, claims=claims)
        loss = margin_loss(scores, y.to(scores.device), system.task, targeted, 0.0, system.threshold)
        (grad,) = torch.autograd.grad(loss.sum(), xd, allow_unused=True)
    if grad is None:
        return torch.zeros(x.shape[0], dtype=torch.float64)
    norms = grad.detach().double().flatten(1).norm(dim=1).cpu()
    return torch.where(torch.isfinite(norms), norms, torch.full_like(norms, float("nan")))


def row_warnings(
    n: int, *, adaptive: bool, randomized: bool, eot: int, grad_norms: torch.Tensor | None = None
) -> list[list[dict[str, str]]]:
    """Per-utterance warnings (a list of ``n`` lists) of one crafted batch."""
    out: list[list[dict[str, str]]] = [[] for _ in range(n)]
    if adaptive and randomized and eot <= 1:
        for w in out:
            w.append(warning("randomized-no-eot"))
    if grad_norms is not None:
        for j, g in enumerate(grad_norms.tolist()):
            if not (g == g) or g <= GRAD_TOL:
                out[j].append(warning("gradient-masking"))
    return out


def study_warnings(results: Sequence[dict[str, Any]], knowledge: dict[str, str]) -> list[tuple[dict[str, Any], dict[str, str]]]:
    """Cross-cell warnings of a study's summary ``results`` (entries with system, task, defense, attack, setting,
    benign_accuracy, adversarial_accuracy). ``knowledge`` maps attack spec -> knowledge value.

    Returns ``(cell key, {code: message})`` pairs; a cell key has system, task, defense, attack, setting."""
    out: list[tuple[dict[str, Any], dict[str, str]]] = []
    for r in results:
        a_a, a_b = r.get("adversarial_accuracy"), r.get("benign_accuracy")
        if a_a is not None and a_b is not None and a_a > a_b + 1e-12:
            w = warning("accuracy-above-benign", f"A_a {100 * a_a:.1f}% > A_b {100 * a_b:.1f}%")
            out.append((_key(r), {w["code"]: w["message"]}))
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in results:
        if r.get("adversarial_accuracy") is None or not r.get("n"):
            continue
        groups.setdefault((r["system"], r["task"], r["defense"], r["setting"]), []).append(r)
    for cells in groups.values():
        white = [c for c in cells if knowledge.get(c["attack"]) == "white-box"]
        black = [c for c in cells if knowledge.get(c["attack"]) not in (None, "white-box")]
        if not white or not black:
            continue
        best_white = min(white, key=lambda c: c["adversarial_accuracy"])
        for c in black:
            if c["adversarial_accuracy"] < best_white["adversarial_accuracy"] - 1e-12:
                w = warning(
                    "black-box-beats-white",
                    f"{c['attack']} A_a {100 * c['adversarial_accuracy']:.1f}% < best white-box "
                    f"{best_white['attack']} A_a {100 * best_white['adversarial_accuracy']:.1f}%",
                )
                for cell in [c] + white:
                    out.append((_key(cell), {w["code"]: w["message"]}))
    # an adaptive attack (crafted on the defended system itself) that leaves a higher accuracy than the same attack
    # crafted on the undefended system is weaker than it should be: BPDA/EOT are not doing their job
    by_setting = {(r["system"], r["task"], r["defense"], r["attack"], r["setting"]): r for r in results
                  if r.get("adversarial_accuracy") is not None and r.get("n")}
    for (system, task, defense, attack, setting), ad in by_setting.items():
        na = by_setting.get((system, task, defense, attack, "non-adaptive"))
        if setting != "adaptive" or defense == "none" or na is None:
            continue
        if ad["adversarial_accuracy"] > na["adversarial_accuracy"] + 1e-12:
            w = warning("adaptive-weaker", f"{attack} on {defense}: adaptive A_a {100 * ad['adversarial_accuracy']:.1f}% "
                                           f"> non-adaptive {100 * na['adversarial_accuracy']:.1f}%")
            out.append((_key(ad), {w["code"]: w["message"]}))
    return out


def _key(r: dict[str, Any]) -> dict[str, Any]:
    return {k: r[k] for k in ("system", "task", "defense", "attack", "setting")}


def count(rows: Iterable[dict[str, Any]]) -> dict[str, int]:
    """How many rows carry each warning code."""
    out: dict[str, int] = {}
    for r in rows:
        for code in {w.get("code") for w in (r.get("warnings") or []) if isinstance(w, dict)}:
            out[code] = out.get(code, 0) + 1
    return out
