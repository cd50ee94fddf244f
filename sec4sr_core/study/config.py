"""What a study is: its systems, dataset, attack columns, defense rows, settings and knobs (``sec4sr run`` flags
or a TOML file), validated by pydantic. Torch-free, so reports and the CLI read stored configurations cheaply.

Validation is strict: floats must be finite (``--threshold nan`` is refused), lengths lie in
[:data:`MIN_LENGTH_S`, :data:`MAX_LENGTH_S`], and the output folder may be neither a file nor inside a dataset folder
(its ``audio/`` would be enrolled as a speaker on the next run)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator
from pydantic_core import PydanticCustomError

from sec4sr_core.base.errors import Sec4srError
from sec4sr_core.base.params import format_spec, parse_spec
from sec4sr_core.base.types import DEFAULT_LENGTH_S, Task

Setting = Literal["non-adaptive", "adaptive"]

#: shortest trial/enrollment length (s): 0.1 s gives the built-in front-ends (25 ms windows, 10 ms hop) 8 frames,
#: the least every built-in backbone can embed (x-vector needs 0.31 s and says so itself); below it a front-end
#: yields no frame at all and a backbone fails with a shape error
MIN_LENGTH_S = 0.1
#: longest length (s): every trial is padded to it, so 10 minutes is already 38 MB per utterance in a batch
MAX_LENGTH_S = 600.0


def _spec_text(value: Any, what: str) -> str:
    """A component spec from TOML: ``"pgd:steps=10"`` or a table ``{name = "pgd", steps = 10}``."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        if "name" not in value:
            raise ValueError(f"{what} table needs a 'name' key")
        rest = {k: v for k, v in value.items() if k != "name"}
        return format_spec(str(value["name"]), rest)
    raise ValueError(f"{what} must be a spec string or a table with 'name'")


class SystemSpec(BaseModel):
    """One system of a study: a backbone enrolled for a task (on the study's dataset unless given)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    model: str = Field("ge2e", description="backbone spec, e.g. 'ge2e' or 'ecapa:channels=512'")
    task: Task = Field(Task.CSI_E, description="csi-e, csi-ne, sv or osi")
    dataset: str | None = Field(None, description="dataset spec or folder (default: the study's dataset)")
    threshold: float | None = Field(None, description="override the stored SV/OSI threshold (score units)")
    label: str | None = Field(None, description="name of the system in results and reports (default: the model)")


class StudyConfig(BaseModel):
    """A study: what ``sec4sr run`` (flags or a TOML file) describes."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    name: str | None = Field(None, description="a title for reports")
    model: str = Field("ge2e", description="backbone spec of the single system when 'systems' is empty")
    task: Task = Field(Task.CSI_E, description="task of the single system when 'systems' is empty")
    systems: list[SystemSpec] = Field(default_factory=list, description="the systems; empty = one from model/task")
    dataset: str = Field("embedded", description="dataset spec or a folder path")
    attacks: list[str] = Field(default_factory=list, description="attack specs or presets (columns)")
    defenses: list[str] = Field(default_factory=list, description="defense chain specs (rows; 'none' is implicit)")
    defense_order: Literal["sequential", "average"] = "sequential"
    settings: list[Setting] = Field(default_factory=lambda: ["non-adaptive"])
    eot: int = Field(1, ge=1, description="EOT draws when crafting adaptively against randomized defenses")
    targeted: bool = False
    seed: int = Field(0, ge=0, lt=2**63, description="seed of every random draw (a non-negative 64-bit integer)")
    device: str = "cpu"
    limit: int | None = Field(None, ge=1, description="evaluate only the first N trials (seeded order)")
    batch_size: int = Field(16, ge=1, description="utterances per batch (the unit of resumption)")
    length_s: float = Field(DEFAULT_LENGTH_S, ge=MIN_LENGTH_S, le=MAX_LENGTH_S,
                            description="every trial utterance is cropped/padded to this length in seconds")
    enroll_length_s: float = Field(DEFAULT_LENGTH_S, ge=MIN_LENGTH_S, le=MAX_LENGTH_S,
                                   description="enrollment/threshold audio length in seconds")
    metrics: list[str] = Field(default_factory=lambda: ["linf", "l2", "snr", "pesq"])
    threshold: float | None = Field(None, description="override the stored SV/OSI threshold")
    out: Path = Path("sec4sr-out")
    save_audio: bool = True
    examples: int = Field(2, ge=0, description="utterances per cell whose defended audio is saved for the report")
    gradient_check: bool = Field(True, description="measure the input gradient of white-box cells (masking warning)")
    eot_check: bool = Field(False, description="re-craft one batch of each adaptive cell on a randomized row with "
                            "twice the EOT draws; warn when the accuracy moves beyond its interval")
    check_benchmark: bool = Field(False, description="evaluate a random-weights model of each backbone on the same "
                                  "trials; warn when it reaches the trained model's benign accuracy")

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        if v not in ("cpu", "cuda") and not v.startswith("cuda:"):
            raise ValueError("device must be 'cpu' or 'cuda'")
        return v

    @field_validator("out")
    @classmethod
    def _out(cls, v: Path, info: ValidationInfo) -> Path:
        out = Path(v).expanduser()
        if out.exists() and not out.is_dir():
            raise PydanticCustomError("out_is_file", "{out} exists and is not a folder; give a folder (new or one "
                                      "of an earlier run) for the results", {"out": str(out)})
        specs = [info.data.get("dataset")] + [s.dataset for s in info.data.get("systems") or []]
        for root in {r for r in (dataset_folder(s) for s in specs if s) if r is not None}:
            here, there = out.resolve(), root.resolve()
            if here == there or there in here.parents:
                raise PydanticCustomError(
                    "out_inside_dataset", "the output folder {out} is inside the dataset folder {root}: its audio/ "
                    "would be enrolled as a speaker; give an output folder outside the dataset",
                    {"out": str(out), "root": str(root)})
        return v

    @field_validator("attacks", mode="before")
    @classmethod
    def _attacks(cls, v: Any) -> Any:
        return [_spec_text(a, "attack") for a in v] if isinstance(v, list) else v

    @field_validator("defenses", mode="before")
    @classmethod
    def _defenses(cls, v: Any) -> Any:
        if not isinstance(v, list):
            return v
        out = []
        for d in v:
            if isinstance(d, list):  # a chain given as a list of specs/tables
                out.append("+".join(_spec_text(p, "defense") for p in d))
            else:
                out.append(_spec_text(d, "defense"))
        return out

    @field_validator("settings")
    @classmethod
    def _settings(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("at least one setting is needed")
        return list(dict.fromkeys(v))

    @model_validator(mode="after")
    def _unique(self) -> "StudyConfig":
        if "none" in self.defenses:
            self.defenses = [d for d in self.defenses if d != "none"]
        if len(set(self.defenses)) != len(self.defenses):
            raise ValueError("a defense row is listed twice")
        if len(set(self.attacks)) != len(self.attacks):
            raise ValueError("an attack column is listed twice")
        keys = [(s.label or _default_label(s, self.dataset), s.task) for s in self.system_specs()]
        if len(set(keys)) != len(keys):
            raise ValueError("two systems have the same label and task; give them distinct 'label's")
        return self

    def system_specs(self) -> list[SystemSpec]:
        """The study's systems (the single model/task system when ``systems`` is empty)."""
        if self.systems:
            return list(self.systems)
        return [SystemSpec(model=self.model, task=self.task, threshold=self.threshold)]


def dataset_folder(spec: str) -> Path | None:
    """The folder a dataset spec reads from (a folder path, or the ``root`` parameter of e.g. ``folder:root=...``);
    None for datasets without one (``embedded``) and for specs that do not parse (validated later)."""
    path = Path(spec).expanduser()
    if path.is_dir():
        return path
    try:
        _, params = parse_spec(spec)
    except Sec4srError:
        return None
    root = params.get("root")
    return Path(str(root)).expanduser() if root not in (None, "") else None


def _default_label(spec: SystemSpec, study_dataset: str) -> str:
    if spec.dataset and spec.dataset != study_dataset:
        return f"{spec.model}@{spec.dataset}"
    return spec.model
