"""Variant names: parsing, stage maps, MLflow parameters and rejected names."""

import dataclasses

import pytest

from stsep.variants import DEFAULT_VARIANTS, STSEP_DEPTH, VariantSpec, parse_variant


@pytest.mark.parametrize(
    ("name", "stage_stateful", "stage_map"),
    [
        ("vanilla", (True, True, True, True), "SSSS"),
        ("ns0", (True, True, True, True), "SSSS"),
        ("ns1", (False, True, True, True), "NSSS"),
        ("ns2", (False, False, True, True), "NNSS"),
        ("ns3", (False, False, False, True), "NNNS"),
        ("ns4", (False, False, False, False), "NNNN"),
        ("rns0", (True, True, True, True), "SSSS"),
        ("rns1", (True, True, True, False), "SSSN"),
        ("rns2", (True, True, False, False), "SSNN"),
        ("rns3", (True, False, False, False), "SNNN"),
        ("rns4", (False, False, False, False), "NNNN"),
    ],
)
def test_ns_and_rns_stage_maps(name, stage_stateful, stage_map):
    spec = parse_variant(name)

    assert spec.stage_stateful == stage_stateful
    assert spec.stage_map == stage_map
    assert spec.stsep_stages == ()
    assert spec.temporal_state is None
    assert spec.stem_stateful == stage_stateful[0]


def test_ns_depths():
    assert (parse_variant("vanilla").ns_depth, parse_variant("vanilla").rns_depth) == (0, 0)
    assert (parse_variant("ns3").ns_depth, parse_variant("ns3").rns_depth) == (3, 0)
    assert (parse_variant("rns2").ns_depth, parse_variant("rns2").rns_depth) == (0, 2)
    assert (parse_variant("ns4").ns_depth, parse_variant("ns4").rns_depth) == (4, 4)
    assert parse_variant("rns2").num_nonstateful_stages == 2


@pytest.mark.parametrize(
    ("name", "stages", "temporal_state", "stage_map"),
    [
        ("stsep-s34-state", (3, 4), True, "SSTT"),
        ("stsep-s34-nostate", (3, 4), False, "SSTT"),
        ("stsep-s1234-nostate", (1, 2, 3, 4), False, "TTTT"),
        ("stsep-s2-state", (2,), True, "STSS"),
        ("stsep-s13-state", (1, 3), True, "TSTS"),
    ],
)
def test_stsep_variants(name, stages, temporal_state, stage_map):
    spec = parse_variant(name)

    assert spec.stsep_stages == stages
    assert spec.temporal_state is temporal_state
    assert spec.stage_map == stage_map
    assert spec.ns_depth == STSEP_DEPTH
    assert spec.rns_depth == STSEP_DEPTH
    # Plain stages of an STSep variant stay stateful.
    for index, stateful in enumerate(spec.stage_stateful, start=1):
        assert stateful is (index not in stages)


def test_to_params_flat_values():
    params = parse_variant("stsep-s34-state").to_params()

    assert params == {
        "variant": "stsep-s34-state",
        "ns_depth": -1,
        "rns_depth": -1,
        "temporal_state": "state",
        "stsep_stages": "34",
        "stage_map": "SSTT",
    }
    assert parse_variant("ns2").to_params() == {
        "variant": "ns2",
        "ns_depth": 2,
        "rns_depth": 0,
        "temporal_state": "none",
        "stsep_stages": "none",
        "stage_map": "NNSS",
    }


def test_default_variants_parse():
    names = [parse_variant(name).name for name in DEFAULT_VARIANTS]

    assert names == list(DEFAULT_VARIANTS)
    assert DEFAULT_VARIANTS == (
        "vanilla", "ns1", "ns2", "ns3", "ns4", "rns1", "rns2", "rns3",
        "stsep-s34-state", "stsep-s34-nostate",
    )


def test_spec_is_frozen():
    spec = parse_variant("ns1")

    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.ns_depth = 3  # type: ignore[misc]
    assert isinstance(spec, VariantSpec)


@pytest.mark.parametrize(
    "name",
    [
        "ns5",
        "rns-1",
        "stsep-s43-state",
        "stsep-s1234",
        "foo",
        "stsep-s11-state",
        "stsep-s5-state",
        "stsep--state",
        "Vanilla",
        "ns",
        "ns12",
        " ns1",
        "",
    ],
)
def test_malformed_names_rejected_with_valid_forms(name):
    with pytest.raises(ValueError) as error:
        parse_variant(name)

    message = str(error.value)
    assert repr(name) in message
    assert "'vanilla'" in message
    assert "'ns<k>' or 'rns<k>'" in message
    assert "stsep-s<stages>-state" in message


def test_non_string_name_rejected():
    with pytest.raises(TypeError, match="string"):
        parse_variant(3)  # type: ignore[arg-type]
