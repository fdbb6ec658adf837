"""One JSON record per derived model, the rows the paper's tables are built from: what was
derived (base, sub-task, rate) and what came of it (sizes, rates, seconds, validation and test
top-1 before and after recovery), from the pruned and the recovered model's reports and their
test evaluations (`nuwa eval`)."""
from __future__ import annotations

from typing import Any

# The ablation tables (nuwa.paper.ablations) read the recovered model's top-1 under shorter names.
ABLATION_NAMES = dict(test_top1_pruned="top1_pruned", test_top1_finetuned="top1", test_n="n",
                      val_top1_finetuned="val_top1", test_correct_pruned="correct_pruned",
                      test_correct_finetuned="correct")


def derivation_record(pruned: dict[str, Any], finetuned: dict[str, Any], test_pruned: dict[str, Any],
                      test_finetuned: dict[str, Any], *, base: str, subtask: str, kind: str, alpha: float | str,
                      seed: int | str, names: dict[str, str] | None = None) -> dict[str, Any]:
    """The keys every derivation record holds. `pruned`, `finetuned`: the two models' reports
    (report.json); `test_pruned`, `test_finetuned`: their test evaluations; `names` renames keys.
    Callers add the keys only their tables read. The test evaluations' per-image correctness
    (`evaluate_dir(per_image=True)`), when there, becomes test_correct_pruned / _finetuned."""
    record = dict(
        base=base, subtask=subtask, kind=kind, alpha=float(alpha), seed=int(seed), metric=pruned["metric"],
        test_top1_pruned=test_pruned["top1"], test_top1_finetuned=test_finetuned["top1"], test_n=test_finetuned["n"],
        val_top1_pruned=pruned["val_top1"], val_top1_finetuned=finetuned["val_top1"],
        params=pruned["params"], flops=pruned["flops"], base_params=pruned["base_params"],
        base_flops=pruned["base_flops"], rate_achieved=pruned["rate_achieved"], depth=pruned["depth"],
        embed_dim=pruned["embed_dim"], derive_seconds=pruned["derive_seconds"],
        finetune_seconds=finetuned["seconds"].get("recovery"),
        test_correct_pruned=test_pruned.get("correct"), test_correct_finetuned=test_finetuned.get("correct"),
    )
    names = names or {}
    return {names.get(k, k): v for k, v in record.items()}
