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
zero-bpda-gradient      a white-box attack crafted through BPDA (a non-differentiable defense) saw a zero input
                        gradient, or its saved perturbation is all zero: BPDA passes nothing, the attack is blind
sweep-not-monotone      in an attack sweep (``sec4sr sweep``), accuracy rises as the attack gets stronger (larger ε,
                        steps, queries, EOT draws; smaller ``snr_db``): the attack has not converged or its step
                        size does not follow its budget
eot-not-converged       (``eot_check``) re-crafting one batch of an adaptive cell on a randomized row with twice the
                        EOT draws moves its accuracy outside the cell's 95 % Wilson interval on those trials:
                        ``eot`` is too small
benchmark-too-easy      (``check_benchmark``) a random-weights model of the same backbone, enrolled the same way,
                        reaches the trained model's benign accuracy within its 95 % interval on the same trials:
                        the benchmark cannot rank models
======================  ==========================================================================================

``randomized-no-eot``, ``gradient-masking``, ``zero-bpda-gradient`` and ``over-budget`` are decided per batch while
crafting (:func:`row_warnings`, :func:`zero_perturbation`); ``black-box-beats-white``, ``accuracy-above-benign`` and
``adaptive-weaker`` compare cells after a study ran (:func:`study_warnings`); ``sweep-not-monotone`` compares the
points of a sweep (:func:`sweep_warnings`); the last two are opt-in checks that cost extra computation
(:func:`eot_converged`, :func:`benchmark_easy`).
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
                        "gradient or left the audio unchanged (a saturated loss: try loss=margin)",
    "black-box-beats-white": "a black-box attack beats the white-box attacks on this cell: the white-box evaluation "
                             "is unreliable",
    "accuracy-above-benign": "accuracy under attack is above benign accuracy",
    "over-budget": "the saved adversarial audio is outside the attack's declared budget",
    "adaptive-weaker": "the adaptive attack is weaker than the same attack crafted without the defense: the adaptive "
                       "evaluation is too weak (more EOT draws or steps; robustness is the lower of the two)",
    "zero-bpda-gradient": "zero gradient through BPDA: the white-box attack crafted through a non-differentiable "
                          "defense saw no gradient or left the audio unchanged",
    "sweep-not-monotone": "accuracy rises as the attack gets stronger across the sweep: the attack has not converged "
                          "(more steps, a step size that follows the budget, restarts)",
    "eot-not-converged": "EOT not converged: doubling the EOT draws moves the accuracy outside the 95 % interval "
                         "(raise eot)",
    "benchmark-too-easy": "benchmark too easy to rank models: a random-weights model of the same backbone reaches the "
                          "same benign accuracy (within the 95 % interval)",
}

#: how the strength of an attack follows each sweepable parameter: +1 stronger as it grows, -1 weaker as it grows
STRENGTH = {"epsilon": 1, "steps": 1, "max_queries": 1, "eot": 1, "restarts": 1, "max_iter": 1, "samples": 1,
            "snr_db": -1}


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
    n: int, *, adaptive: bool, randomized: bool, eot: int, grad_norms: torch.Tensor | None = None,
    bpda: bool = False,
) -> list[list[dict[str, str]]]:
    """Per-utterance warnings (a list of ``n`` lists) of one crafted batch. ``bpda``: the system crafted on wraps a
    non-differentiable defense in BPDA (a vanishing gradient is then ``zero-bpda-gradient``)."""
    out: list[list[dict[str, str]]] = [[] for _ in range(n)]
    if adaptive and randomized and eot <= 1:
        for w in out:
            w.append(warning("randomized-no-eot"))
    if grad_norms is not None:
        for j, g in enumerate(grad_norms.tolist()):
            if not (g == g) or g <= GRAD_TOL:
                out[j].append(warning("zero-bpda-gradient", f"input gradient norm {g:.3g}") if bpda
                              else warning("gradient-masking"))
    return out


def zero_perturbation(adv: torch.Tensor, x: torch.Tensor) -> list[bool]:
    """Per utterance of (B, 1, T) batches: whether the (saved) adversarial audio equals the benign audio."""
    return (adv.detach() - x.detach()).flatten(1).abs().amax(dim=1).eq(0).tolist()


def sweep_warnings(sweep_data: Any, sweep: dict[str, Any]) -> list[tuple[dict[str, Any], dict[str, str]]]:
    """``sweep-not-monotone`` warnings of an attack or EOT sweep (``sweep_data``: the report's SweepData — x values
    and lines of values and cell keys). A point is flagged when its accuracy is above the lowest accuracy of any
    weaker point of the same line. Defense sweeps and parameters without a known direction (:data:`STRENGTH`) give
    none. Returns ``(cell key with study, {code: message})`` pairs."""
    param = str(sweep.get("param", ""))
    direction = STRENGTH.get(param)
    if sweep.get("kind", "defense") == "defense" or direction is None:
        return []
    out = []
    order = sorted(range(len(sweep_data.xs)), key=lambda i: direction * sweep_data.xs[i])  # weakest first
    for line in sweep_data.lines:
        if getattr(line, "benign", False):
            continue
        best: tuple[float, float] | None = None  # lowest accuracy so far and its x
        for i in order:
            v, key = line.values[i], line.cells[i]
            if v is None or key is None:
                continue
            if best is not None and v > best[0] + 1e-12:
                w = warning("sweep-not-monotone", f"{line.name}: {param}={best[1]:g} leaves {100 * best[0]:.1f}%, "
                                                  f"the stronger {param}={sweep_data.xs[i]:g} {100 * v:.1f}%")
                out.append((key, {w["code"]: w["message"]}))
            if best is None or v < best[0]:
                best = (v, sweep_data.xs[i])
    return out


def eot_converged(correct: Sequence[int], correct_doubled: Sequence[int], eot: int) -> dict[str, str] | None:
    """``eot-not-converged`` when the accuracy of the re-crafted trials (``correct_doubled``, 0/1 per trial, with
    ``2·eot`` draws) lies outside the Wilson 95 % interval of the original accuracy on the same trials."""
    from sec4sr_core.study.stats import wilson

    n = len(correct)
    if n == 0 or len(correct_doubled) != n:
        return None
    lo, hi = wilson(sum(correct), n)
    acc2 = sum(correct_doubled) / n
    if lo - 1e-12 <= acc2 <= hi + 1e-12:
        return None
    return warning("eot-not-converged", f"on {n} trials: eot={eot} A_a {100 * sum(correct) / n:.1f}% "
                                        f"[{100 * lo:.0f}-{100 * hi:.0f}], eot={2 * eot} {100 * acc2:.1f}%")


def benchmark_easy(trained: Sequence[int], random: Sequence[int], model: str) -> dict[str, str] | None:
    """``benchmark-too-easy`` when the random-weights model's benign accuracy (0/1 per trial) reaches the lower end
    of the trained model's Wilson 95 % interval on the same trials."""
    from sec4sr_core.study.stats import wilson

    n = len(trained)
    if n == 0 or len(random) != n:
        return None
    lo, hi = wilson(sum(trained), n)
    acc_r = sum(random) / n
    if acc_r < lo - 1e-12:
        return None
    return warning("benchmark-too-easy", f"{model} with random weights: A_b {100 * acc_r:.1f}% on {n} trials; "
                                         f"trained {100 * sum(trained) / n:.1f}% [{100 * lo:.0f}-{100 * hi:.0f}]")


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
