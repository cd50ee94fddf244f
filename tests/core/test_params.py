"""Component specs (``name:k=v,...``), chains (``a+b``) and parameter validation messages."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import Field

from sec4sr_core.base.errors import ParameterError, UnknownComponentError
from sec4sr_core.base.params import Params, format_spec, parse_chain, parse_spec, schema, validate
from sec4sr_core.plugins.manager import get_registry
from sec4sr_core.compose.factories import build_defenses

NAME_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789-_"
names = st.text(NAME_CHARS, min_size=1, max_size=12)
keys = st.text(NAME_CHARS, min_size=1, max_size=8)


def _plain_string(s: str) -> bool:
    """A string value that survives the spec syntax as a string (not JSON, no separators, no edge spaces)."""
    if s != s.strip() or not s or any(c in s for c in ",+"):
        return False
    try:
        json.loads(s)
    except ValueError:
        return True
    return False


simple_values = st.one_of(
    st.integers(min_value=-10**12, max_value=10**12),
    st.floats(allow_nan=False, allow_infinity=False, width=64),
    st.booleans(),
    st.none(),
    st.text(st.characters(codec="ascii", categories=["L", "N", "P"]), min_size=1, max_size=10).filter(_plain_string),
)


@settings(max_examples=60, deadline=None)
@given(names, st.dictionaries(keys, simple_values, max_size=4))
def test_format_parse_round_trip(name, params):
    spec = format_spec(name, params)
    got_name, got = parse_spec(spec)
    assert got_name == name
    assert got.keys() == params.keys()
    for k, v in params.items():
        assert type(got[k]) is type(v), (spec, k)
        assert got[k] == v or (isinstance(v, float) and math.isclose(got[k], v))


@settings(max_examples=30, deadline=None)
@given(st.lists(st.tuples(names, st.dictionaries(keys, st.integers(-1000, 1000), max_size=3)), min_size=1, max_size=4))
def test_chain_round_trip(parts):
    chain = "+".join(format_spec(n, p) for n, p in parts)
    assert parse_chain(chain) == [(n, p) for n, p in parts]


def test_parse_spec_coerces_values():
    name, params = parse_spec(" pgd : epsilon=0.004 , steps=20,loss=margin,x=true,y=null ")
    assert name == "pgd"
    assert params == {"epsilon": 0.004, "steps": 20, "loss": "margin", "x": True, "y": None}
    assert isinstance(params["steps"], int)


@pytest.mark.parametrize("spec, needle", [
    ("", "empty"),
    ("   ", "empty"),
    (":steps=3", "no component name"),
    ("pgd:steps", "expected key=value"),
    ("pgd:=3", "expected key=value"),
    ("pgd:steps=3,", "expected key=value"),
])
def test_parse_spec_errors(spec, needle):
    with pytest.raises(ParameterError, match=needle):
        parse_spec(spec)


class Demo(Params):
    steps: int = Field(10, ge=1, description="iterations")
    epsilon: float = Field(0.002, gt=0, le=1, description="L∞ bound in amplitude units")
    mode: str = Field("a", pattern="^(a|b)$", description="a or b")


@pytest.mark.parametrize("values, field, constraint", [
    ({"steps": -3}, "steps", "greater than or equal to 1"),
    ({"steps": 0}, "steps", "greater than or equal to 1"),
    ({"epsilon": 0}, "epsilon", "greater than 0"),
    ({"epsilon": 2.0}, "epsilon", "less than or equal to 1"),
    ({"steps": "many"}, "steps", "valid integer"),
    ({"mode": "c"}, "mode", "pattern"),
])
def test_validation_names_field_and_constraint(values, field, constraint):
    with pytest.raises(ParameterError) as info:
        validate(Demo, "demo", values)
    msg = str(info.value)
    assert "\n" not in msg
    assert msg.startswith("demo: invalid parameter")
    assert f"{field}:" in msg and constraint in msg
    assert repr(next(iter(values.values()))) in msg  # the offending value is shown


def test_unknown_key_lists_allowed_keys():
    with pytest.raises(ParameterError) as info:
        validate(Demo, "demo", {"stepz": 3})
    msg = str(info.value)
    assert "stepz: unknown parameter" in msg
    assert "allowed: steps, epsilon, mode" in msg


def test_several_problems_in_one_line():
    with pytest.raises(ParameterError) as info:
        validate(Demo, "demo", {"steps": -1, "epsilon": -1})
    msg = str(info.value)
    assert "\n" not in msg and "steps:" in msg and "epsilon:" in msg


def test_params_are_frozen_and_defaults_validated():
    p = validate(Demo, "demo", {})
    assert (p.steps, p.epsilon, p.mode) == (10, 0.002, "a")
    with pytest.raises(Exception):
        p.steps = 3  # type: ignore[misc]

    class BadDefault(Params):
        n: int = Field(-1, ge=0)

    with pytest.raises(ParameterError, match="n:"):
        validate(BadDefault, "bad", {})


def test_schema_shows_defaults_constraints_and_descriptions():
    s = schema(Demo)
    assert s["steps"]["default"] == 10 and s["steps"]["minimum"] == 1 and s["steps"]["description"] == "iterations"
    assert s["epsilon"]["exclusiveMinimum"] == 0 and s["epsilon"]["maximum"] == 1
    assert s["steps"]["required"] is False


def test_registry_validates_real_component_params():
    reg = get_registry()
    with pytest.raises(ParameterError) as info:
        reg.build("attack", "pgd:steps=-3")
    assert "steps" in str(info.value) and "greater than or equal to 1" in str(info.value)
    with pytest.raises(ParameterError, match=r"allowed: .*epsilon"):
        reg.build("attack", "pgd:stepz=3")
    pgd = reg.build("attack", "pgd:epsilon=0.004,steps=3")
    assert (pgd.params.epsilon, pgd.params.steps) == (0.004, 3)
    # Python keyword overrides are validated the same way
    with pytest.raises(ParameterError, match="epsilon"):
        reg.build("attack", "pgd", epsilon=-1.0)


def test_chains_build_each_part_in_order():
    chain = build_defenses("qt:q=512+qt-512+qt")
    assert [d.name for d in chain] == ["qt", "qt", "qt"]
    assert [d.params.q for d in chain] == [512, 512, 128]
    with pytest.raises(UnknownComponentError, match="did you mean 'qt'"):
        build_defenses("qt+qtt")
    with pytest.raises(ParameterError, match="q:"):
        build_defenses("qt:q=0")


@pytest.mark.parametrize("spec, needle", [
    ("pgd:steps=1,steps=2", "'steps' is given twice"),
    ("pgd: steps=1 , steps =1", "'steps' is given twice"),
])
def test_a_key_given_twice_is_refused(spec, needle):
    with pytest.raises(ParameterError, match=needle):
        parse_spec(spec)


@pytest.mark.parametrize("chain, needle", [
    ("+qt", "first part is empty"),
    ("qt+", "last part is empty"),
    ("qt++at", "#2 part is empty"),
    ("qt+ +at", "#2 part is empty"),
])
def test_empty_chain_parts_are_refused(chain, needle):
    with pytest.raises(ParameterError, match=needle) as info:
        parse_chain(chain)
    assert repr(chain) in str(info.value)


def test_an_exponent_sign_is_not_a_chain_separator():
    assert parse_chain("at:snr=1e+3+qt:q=2E+2") == [("at", {"snr": 1000.0}), ("qt", {"q": 200.0})]
    assert parse_chain("x:a=5e+at") == [("x", {"a": "5e"}), ("at", {})]


class Strict(Params):
    steps: int = Field(10, ge=1)
    epsilon: float = 0.002
    maybe: int | None = None
    flag: bool = False
    either: bool | int = 0


@pytest.mark.parametrize("values, field, needle", [
    ({"steps": True}, "steps", "expects int, not a boolean"),
    ({"steps": False}, "steps", "not a boolean"),
    ({"epsilon": True}, "epsilon", "expects float, not a boolean"),
    ({"maybe": True}, "maybe", "not a boolean"),
    ({"steps": 2.5}, "steps", "fractional part"),
    ({"epsilon": math.nan}, "epsilon", "finite"),
    ({"epsilon": "nan"}, "epsilon", "finite"),
    ({"epsilon": -math.inf}, "epsilon", "finite"),
])
def test_numbers_are_strict(values, field, needle):
    with pytest.raises(ParameterError) as info:
        validate(Strict, "demo", values)
    assert f"{field}: " in str(info.value) and needle in str(info.value)


def test_booleans_still_reach_boolean_parameters():
    p = validate(Strict, "demo", {"flag": True, "either": True, "steps": 3.0})
    assert p.flag is True and p.either is True and p.steps == 3
