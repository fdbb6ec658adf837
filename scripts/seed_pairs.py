"""NuWa against each baseline on the seeds a study has built so far: the ledger's paired 95 %
intervals over seeds and the same test images (nuwa.paper.stats.crossed_interval; with several
seeds, Student's t on their spread), per sub-task, alpha and stage (pruned, fine-tuned),
only where the two achieved rates differ by at most RATE_TOLERANCE. Until every seed is built the
ledger cannot run; this table is what the README quotes meanwhile.

    .venv/bin/python scripts/seed_pairs.py results/dinov2 0   # seeds 0 -> results/dinov2/pilot/seed_pairs.{csv,md}
    (a third argument writes elsewhere than ROOT/pilot)
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main(argv: list[str]) -> int:
    import numpy as np
    import pandas as pd

    from nuwa.atomic import atomic_file, atomic_path
    from nuwa.correctness import unpack_correct
    from nuwa.options import RATE_TOLERANCE
    from nuwa.paper.stats import crossed_interval, verdict_of

    root = Path(argv[0]) if argv else Path("results/dinov2")
    wanted = {int(x) for x in argv[1].split(",")} if len(argv) > 1 else None
    recs = [json.loads(p.read_text()) for p in sorted((root / "metrics").glob("*/*/*/*.json"))]
    recs = [r for r in recs if wanted is None or r["seed"] in wanted]
    by = {(r["subtask"], r["alpha"], r["method"], r["seed"]): r for r in recs}
    rows = []
    for (subtask, alpha, method, seed), r in sorted(by.items()):
        if method != "nuwa":
            continue
        for other in sorted({m for (s, a, m, _) in by if (s, a) == (subtask, alpha) and m not in ("nuwa", "nuwa-accuracy")}):
            seeds = sorted(sd for (s, a, m, sd) in by if (s, a, m) == (subtask, alpha, other) and (s, a, "nuwa", sd) in by)
            if seed != seeds[0]:
                continue
            pairs = [(by[(subtask, alpha, "nuwa", sd)], by[(subtask, alpha, other, sd)]) for sd in seeds]
            gap = max(abs(a["rate_achieved"] - b["rate_achieved"]) for a, b in pairs)
            for stage in ("pruned", "finetuned"):
                row = dict(subtask=subtask, alpha=alpha, baseline=other, stage=stage, seeds=len(seeds), rate_gap=round(gap, 4),
                           nuwa=np.mean([a[f"test_top1_{stage}"] if f"test_top1_{stage}" in a else a[f"eval_{stage}"]["top1"]
                                         for a, _ in pairs]),
                           other=np.mean([b[f"eval_{stage}"]["top1"] for _, b in pairs]))
                if gap <= RATE_TOLERANCE:
                    a = np.stack([unpack_correct(x[f"test_correct_{stage}"]) for x, _ in pairs])
                    b = np.stack([unpack_correct(y[f"test_correct_{stage}"]) for _, y in pairs])
                    iv = crossed_interval([(a, b)])
                    row.update(diff=iv.pts(), verdict=verdict_of(iv))
                else:
                    row.update(diff="", verdict="not at equal cost")
                rows.append(row)
    table = pd.DataFrame(rows)
    out = Path(argv[2]) if len(argv) > 2 else root / "pilot"
    with atomic_path(out / "seed_pairs.csv") as tmp:
        table.to_csv(tmp, index=False)
    with atomic_file(out / "seed_pairs.md") as f:
        f.write("# NuWa against each baseline, seeds built so far (paired 95 % intervals over seeds and test images; "
                "seeds with Student's t)\n\n")
        f.write(table.to_markdown(index=False, floatfmt=".4f") + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
