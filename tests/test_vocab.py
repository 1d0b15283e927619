"""The vocabulary against the official table shipped in bigearthnet-common."""

from __future__ import annotations

import ast
import importlib.resources

import pytest

from bigearth_stac import vocab


def _official_constants() -> dict[str, object]:
    # constants.py imports natsort/rich at module level; read its literals without importing it.
    source = importlib.resources.files("bigearthnet_common").joinpath("constants.py").read_text()
    wanted = {"OLD2NEW_LABELS_DICT", "NEW_LABELS_ORIGINAL_ORDER", "BAND_STATS_S2", "BAND_STATS_S1",
              "BEN_10m_CHANNELS", "BEN_20m_CHANNELS", "BEN_60m_CHANNELS", "CLC_LV3_TO_LV2", "CLC_LV2_TO_CLC_CODE"}
    out = {}
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name) and node.targets[0].id in wanted:
            out[node.targets[0].id] = ast.literal_eval(node.value)
    assert wanted <= out.keys()
    return out


OFFICIAL = _official_constants()


def test_mapping_matches_official_table() -> None:
    official = OFFICIAL["OLD2NEW_LABELS_DICT"]
    assert vocab.MAP_43_TO_19 == official
    # order of the 43 names is part of the contract (multi-hot vectors)
    assert list(vocab.LABELS_43) == list(official)


def test_19_class_order_is_the_papers() -> None:
    assert vocab.LABELS_19 == OFFICIAL["NEW_LABELS_ORIGINAL_ORDER"]
    assert set(vocab.LABELS_19) == {v for v in vocab.MAP_43_TO_19.values() if v is not None}


def test_clc_codes_follow_corine_hierarchy() -> None:
    # Level-3 code = Level-2 code + position within the Level-2 group (CLC nomenclature).
    lv3_to_lv2 = OFFICIAL["CLC_LV3_TO_LV2"]
    lv2_code = OFFICIAL["CLC_LV2_TO_CLC_CODE"]
    for code, name in vocab.CLC_CODES.items():
        assert code // 10 == lv2_code[lv3_to_lv2[name]], name  # type: ignore[index]
    assert len(set(vocab.CLC_CODES)) == 43


def test_band_statistics_and_groups() -> None:
    for band, (mean, std) in vocab.BAND_STATS.items():
        stats = OFFICIAL["BAND_STATS_S2"] if band.startswith("B") else OFFICIAL["BAND_STATS_S1"]
        assert stats["mean"][band] == pytest.approx(mean)  # type: ignore[index]
        assert stats["std"][band] == pytest.approx(std)  # type: ignore[index]
    assert vocab.S2_GROUPS["s2_10m"] == OFFICIAL["BEN_10m_CHANNELS"]
    assert vocab.S2_GROUPS["s2_20m"] == OFFICIAL["BEN_20m_CHANNELS"]
    assert vocab.S2_GROUPS["s2_60m"] == OFFICIAL["BEN_60m_CHANNELS"]
    sizes = {b.name: b.size for b in vocab.S2_BANDS}
    assert sizes["B02"] == 120 and sizes["B05"] == 60 and sizes["B01"] == 20
    assert vocab.BANDS["B8A"].common_name == "nir08"


def test_to_19_and_multi_hot() -> None:
    assert vocab.to_19(["Peatbogs", "Inland marshes", "Port areas", "Pastures"]) == ["Pastures", "Inland wetlands"]
    assert vocab.to_19(["Airports"]) == []
    vec = vocab.multi_hot(["Marine waters", "Urban fabric"], "19")
    assert vec[0] == 1 and vec[18] == 1 and sum(vec) == 2
    lex = vocab.multi_hot(["Marine waters"], "19", order="lex")
    assert lex[vocab.CLASS_ORDERS["lex"]["19"].index("Marine waters")] == 1


def test_check_label_errors_are_helpful() -> None:
    with pytest.raises(vocab.UnknownLabelError, match="Did you mean 'Coniferous forest'"):
        vocab.check_label("coniferus forest", "19")
    with pytest.raises(vocab.UnknownLabelError, match="no 19-class counterpart"):
        vocab.check_label("Airports", "19")
    with pytest.raises(vocab.UnknownLabelError, match="'Inland wetlands'"):
        vocab.check_label("Peatbogs", "19")
    assert vocab.check_label("Peatbogs", "43") == "Peatbogs"


def test_shared_names_mean_the_same_classes() -> None:
    # A name in both nomenclatures is searched in either with the same result only if its
    # 43-class class maps to the 19-class class of that name and no other 43-class class does.
    assert len(vocab.SHARED_LABELS) == 9 and "Pastures" in vocab.SHARED_LABELS
    for name in vocab.SHARED_LABELS:
        assert [n for n, target in vocab.MAP_43_TO_19.items() if target == name] == [name]


def test_resolve_label_of_either_nomenclature() -> None:
    assert vocab.resolve_label("Olive groves") == ("43", "Olive groves")
    assert vocab.resolve_label("Airports", "19") == ("43", "Airports")
    assert vocab.resolve_label("Permanent crops", "43") == ("19", "Permanent crops")
    assert vocab.resolve_label("Pastures") == ("19", "Pastures")
    assert vocab.resolve_label("Pastures", "43") == ("43", "Pastures")
    assert vocab.label_nomenclatures("Mixed forest") == ("19", "43")
    assert vocab.label_nomenclatures("Mixed forests") == ()
    with pytest.raises(vocab.UnknownLabelError, match=r"Did you mean 'Olive groves' \(43\)"):
        vocab.resolve_label("olive grove")
    with pytest.raises(vocab.UnknownLabelError, match=r"'Inland wetlands' \(19\)"):
        vocab.resolve_label("Inland wetland")
    with pytest.raises(vocab.UnknownLabelError, match="must be a string, got 5"):
        vocab.resolve_label(5)


def test_public_names_are_in_all() -> None:
    own = {n for n, v in vars(vocab).items()
           if not n.startswith("_") and getattr(v, "__module__", vocab.__name__) == vocab.__name__
           and not isinstance(v, type(vocab))}
    assert own - {"annotations", "difflib"} <= set(vocab.__all__)
    assert all(hasattr(vocab, n) for n in vocab.__all__)
    assert "UnknownLabelError" in vocab.__all__
