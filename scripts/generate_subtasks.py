"""Write the sub-task definitions, nuwa/subtasks/DATASET.yaml (run once; the files are committed).

    .venv/bin/python scripts/generate_subtasks.py [OUT_DIR]   # default: nuwa/subtasks

Hard sub-tasks are hand-picked similar classes; simple sub-tasks are random dissimilar classes
drawn with a fixed seed (SEED), so re-running this script reproduces the committed files byte
for byte. Neither the library nor the workflow runs it: they read the YAML files.

ImageNet-1K: the class order is the standard one (sorted WordNet ids), taken from timm's
`timm/data/_info/imagenet_synsets.txt`, names from `imagenet_synset_to_lemma.txt`.
"Dissimilar" = at most one class per known family (dogs, birds, fish, insects, ...; each family
counts as one unit) and spread over the WordNet order (one unit per equal-width bin), which puts
related classes next to each other.
"""
from __future__ import annotations

import random
from pathlib import Path

import yaml

OUT = Path(__file__).resolve().parents[1] / "nuwa" / "subtasks"
SEED = 20250403  # the arXiv id of the paper, 2504.03118

FASHION_MNIST = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                 "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
CIFAR10 = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
CIFAR10_GROUPS = {"vehicles": ["airplane", "automobile", "ship", "truck"],
                  "animals": ["bird", "cat", "deer", "dog", "frog", "horse"]}
# CIFAR-100 superclasses -> fine classes (Krizhevsky 2009); fine names as in the data set's meta file.
CIFAR100_SUPER = {
    "aquatic_mammals": ["beaver", "dolphin", "otter", "seal", "whale"],
    "fish": ["aquarium_fish", "flatfish", "ray", "shark", "trout"],
    "flowers": ["orchid", "poppy", "rose", "sunflower", "tulip"],
    "food_containers": ["bottle", "bowl", "can", "cup", "plate"],
    "fruit_and_vegetables": ["apple", "mushroom", "orange", "pear", "sweet_pepper"],
    "household_electrical_devices": ["clock", "keyboard", "lamp", "telephone", "television"],
    "household_furniture": ["bed", "chair", "couch", "table", "wardrobe"],
    "insects": ["bee", "beetle", "butterfly", "caterpillar", "cockroach"],
    "large_carnivores": ["bear", "leopard", "lion", "tiger", "wolf"],
    "large_man-made_outdoor_things": ["bridge", "castle", "house", "road", "skyscraper"],
    "large_natural_outdoor_scenes": ["cloud", "forest", "mountain", "plain", "sea"],
    "large_omnivores_and_herbivores": ["camel", "cattle", "chimpanzee", "elephant", "kangaroo"],
    "medium_mammals": ["fox", "porcupine", "possum", "raccoon", "skunk"],
    "non-insect_invertebrates": ["crab", "lobster", "snail", "spider", "worm"],
    "people": ["baby", "boy", "girl", "man", "woman"],
    "reptiles": ["crocodile", "dinosaur", "lizard", "snake", "turtle"],
    "small_mammals": ["hamster", "mouse", "rabbit", "shrew", "squirrel"],
    "trees": ["maple_tree", "oak_tree", "palm_tree", "pine_tree", "willow_tree"],
    "vehicles_1": ["bicycle", "bus", "motorcycle", "pickup_truck", "train"],
    "vehicles_2": ["lawn_mower", "rocket", "streetcar", "tank", "tractor"],
}
CIFAR100 = sorted(c for members in CIFAR100_SUPER.values() for c in members)  # label order = alphabetical
# ImageNet-1K families (index ranges in the standard order) that hard sub-tasks are made of.
IMAGENET_FAMILIES = {
    "fish": [*range(0, 7), *range(389, 398)], "birds": [*range(7, 25), *range(80, 101), *range(127, 147)],
    "amphibians_reptiles": list(range(25, 69)), "arachnids_myriapods": list(range(69, 80)),
    "crustaceans_molluscs": list(range(107, 127)), "marine_mammals": list(range(147, 151)),
    "dogs": list(range(151, 269)), "wild_canids": list(range(269, 281)), "cats": list(range(281, 294)),
    "insects": list(range(300, 327)), "primates": list(range(365, 385)),
}
IMAGENET_HARD = {
    "H1": ("aquatic animals: fish, crustaceans and a whale (the paper: tench, lobster, crab, ...)",
           [*range(0, 7), *range(389, 398), *range(118, 126), 148]),
    "H2": ("birds (the paper: cock, hen, robin, ...)", [*range(7, 25), *range(80, 87)]),
    "H3": ("insects (the paper: beetle, ladybug, bee, ...)", list(range(300, 325))),
    "H4": ("dogs (the paper: chihuahua, hound, retriever, ...); ImageNet's dogs are 151-268", list(range(151, 251))),
}
IMAGENET_SIMPLE = {"S1": 25, "S2": 25, "S3": 25, "S4": 50, "S5": 100, "S6": 200}


def timm_imagenet() -> tuple[list[str], list[str]]:
    import timm

    info = Path(timm.__file__).parent / "data" / "_info"
    wnids = (info / "imagenet_synsets.txt").read_text().split()
    lemma = dict(line.split("\t", 1) for line in (info / "imagenet_synset_to_lemma.txt").read_text().splitlines())
    assert len(wnids) == 1000
    return wnids, [lemma[w].split(",")[0].strip() for w in wnids]


def entry(kind: str, description: str, indices: list[int], names: list[str], wnids: list[str] | None = None) -> dict:
    e = {"kind": kind, "description": description, "indices": [int(i) for i in indices],
         "names": [names[i] for i in indices]}
    if wnids is not None:
        e["wnids"] = [wnids[i] for i in indices]
    return e


def draw_dissimilar(rng: random.Random, n_classes: int, k: int, families: dict[str, list[int]]) -> list[int]:
    """k classes, no two from one family: each family counts as one unit (at its first class's
    place in the class order), every other class as its own unit; one unit is drawn per
    equal-width bin of the unit order, then a random member of a family unit."""
    family = {i: f for f, members in families.items() for i in members}
    units: list[list[int]] = []
    seen: set[str] = set()
    for c in range(n_classes):
        f = family.get(c)
        if f is None:
            units.append([c])
        elif f not in seen:
            seen.add(f)
            units.append(sorted(families[f]))
    edges = [round(i * len(units) / k) for i in range(k + 1)]
    picks = []
    for lo, hi in zip(edges, edges[1:]):
        picks.append(rng.choice(units[rng.randrange(lo, hi)]))
    return sorted(picks)


def write(out: Path, name: str, header: str, subtasks: dict) -> None:
    text = header + yaml.safe_dump(subtasks, sort_keys=False, allow_unicode=True, width=110, default_flow_style=None)
    (out / f"{name}.yaml").write_text(text)


def main(out: Path = OUT) -> None:
    rng = random.Random(SEED)
    fm = {
        "H1": entry("hard", "upper-body garments", [0, 2, 4, 6], FASHION_MNIST),
        "H2": entry("hard", "footwear", [5, 7, 9], FASHION_MNIST),
        "S1": entry("simple", "dissimilar garments and accessories", [1, 2, 7, 8], FASHION_MNIST),
        "S2": entry("simple", "dissimilar garments and accessories", [0, 1, 5, 8], FASHION_MNIST),
    }
    write(out, "fashion-mnist", "# Fashion-MNIST sub-tasks.\n"
          "# Written by scripts/generate_subtasks.py; indices are the data set's labels.\n", fm)

    group10 = {CIFAR10.index(c): g for g, members in CIFAR10_GROUPS.items() for c in members}
    c10 = {
        "H1": entry("hard", "four mammals", [CIFAR10.index(c) for c in ("cat", "deer", "dog", "horse")], CIFAR10),
        "H2": entry("hard", "vehicles", [CIFAR10.index(c) for c in CIFAR10_GROUPS["vehicles"]], CIFAR10),
    }
    for name, k in (("S1", 3), ("S2", 5)):
        # dissimilar: classes spread over the two coarse groups (animals, vehicles) as evenly as possible
        by_group = {g: rng.sample([CIFAR10.index(c) for c in m], len(m)) for g, m in sorted(CIFAR10_GROUPS.items())}
        picks, order = [], sorted(by_group)
        while len(picks) < k:
            for g in order:
                if len(picks) < k and by_group[g]:
                    picks.append(by_group[g].pop())
        c10[name] = entry("simple", f"{k} random classes spread over animals and vehicles (seed {SEED})",
                          sorted(picks), CIFAR10)
    assert all(group10.get(i) for s in c10.values() for i in s["indices"])
    write(out, "cifar10", "# CIFAR-10 sub-tasks (Figure 6 of the paper: sizes are not given there; our choice).\n"
          "# Written by scripts/generate_subtasks.py; indices are the data set's labels.\n", c10)

    assert len(CIFAR100) == 100
    c100 = {}
    for name, sup in (("H1", "aquatic_mammals"), ("H2", "fish"), ("H3", "insects"), ("H4", "vehicles_1")):
        c100[name] = entry("hard", f"the 5 fine classes of the superclass {sup!r}",
                           [CIFAR100.index(c) for c in CIFAR100_SUPER[sup]], CIFAR100)
    super_of = {CIFAR100.index(c): s for s, members in CIFAR100_SUPER.items() for c in members}
    for name, k in (("S1", 5), ("S2", 10), ("S3", 20), ("S4", 50)):
        supers = sorted(CIFAR100_SUPER)
        per = -(-k // len(supers))  # classes per superclass: 1 up to 20 classes, then 3 for 50
        pool = [CIFAR100.index(c) for s in supers for c in rng.sample(CIFAR100_SUPER[s], per)]
        picks = sorted(rng.sample(sorted({super_of[i]: i for i in pool}.values()), k)) if k <= len(supers) \
            else sorted(rng.sample(pool, k))
        c100[name] = entry("simple", f"{k} random classes, at most {per} per superclass (seed {SEED})", picks, CIFAR100)
    write(out, "cifar100", "# CIFAR-100 sub-tasks: hard = the fine classes of one superclass; simple = random classes\n"
          "# from different superclasses (Figure 6 of the paper; sizes are our choice). Written by\n"
          "# scripts/generate_subtasks.py; indices are the fine labels (alphabetical, as in the meta file).\n", c100)

    wnids, names = timm_imagenet()
    inet = {h: entry("hard", desc, sorted(idx), names, wnids) for h, (desc, idx) in IMAGENET_HARD.items()}
    for name, k in IMAGENET_SIMPLE.items():
        picks = draw_dissimilar(rng, 1000, k, IMAGENET_FAMILIES)
        inet[name] = entry("simple", f"{k} random dissimilar classes (at most one per family, spread over the "
                           f"WordNet order; seed {SEED})", picks, names, wnids)
    for s in inet.values():
        assert len(set(s["indices"])) == len(s["indices"])
    write(out, "imagenet", "# ImageNet-1K sub-tasks of the paper (Appendix A.1): H1-H4 hand-picked similar classes,\n"
          "# S1-S6 random dissimilar classes. Indices in the standard 1000-class order (sorted WordNet ids,\n"
          "# timm's imagenet_synsets.txt); names from timm's imagenet_synset_to_lemma.txt (first lemma).\n"
          "# Written by scripts/generate_subtasks.py.\n", inet)


if __name__ == "__main__":
    import sys

    main(Path(sys.argv[1]) if len(sys.argv) > 1 else OUT)
