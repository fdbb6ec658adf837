"""Table 2 and Figs. 9-10: for a shallow and a deep layer of the base, the MLP neurons whose
class-token activation varies most over the test samples, and each one's top-k samples; plus,
per layer, how many distinct classes the top-k samples of its neurons span (the paper: shallow
neurons catch general patterns across classes, deep ones specific classes)."""
import sys

sm = snakemake  # noqa: F821
sys.path.insert(0, sm.scriptdir)
from _common import model_dir, start  # noqa: E402

log = start(sm, "table2")
from _interpret_plot import plt, save, show_image  # noqa: E402

import nuwa  # noqa: E402
from nuwa.data import open_split  # noqa: E402
from nuwa.interpret.neurons import class_spread, cls_activations, deep_more_specific, neuron_table, resolve_layers  # noqa: E402
from nuwa.paper.tables import write_table  # noqa: E402

o = sm.params.neurons
model = nuwa.load(model_dir(sm.input.model))
depth = len(model.blocks)
layers = resolve_layers(o["layers"], depth)
test = open_split(sm.params.spec, "test", img_size=model.config.img_size)
n = min(o["samples"], len(test))
acts, labels = cls_activations(model, test, layers, limit=n)  # the first n test samples, in order
table = neuron_table(acts, labels, list(range(n)), list(test.class_names), per_layer=o["per_layer"], k=o["top_k"])
spread = class_spread(acts, labels, table, k=o["top_k"], depth=depth)
write_table(table, sm.output.csv, sm.output.md, sm.output.parquet,
            title=f"Table 2: top-{o['top_k']} test samples of chosen MLP neurons")
write_table(spread, sm.output.spread_csv, sm.output.spread_md, sm.output.spread_parquet,
            title="Distinct classes among the top samples of MLP neurons, per layer")
holds, measured = deep_more_specific(spread)
log.info("\n%s\ndeep neurons more class-specific: %s (%s)", spread.to_string(), holds, measured)

k = o["top_k"]
units = table.drop_duplicates(["layer", "neuron"])[["layer", "neuron", "distinct_classes"]].to_records(index=False)
fig, axes = plt.subplots(len(units), k, figsize=(0.9 * k + 1.0, 1.0 * len(units) + 0.5), squeeze=False)
for row, (layer, neuron, distinct) in zip(axes, units):
    g = table[(table.layer == layer) & (table.neuron == neuron)]
    for ax, r in zip(row, g.itertuples()):
        show_image(ax, test[int(r.sample)][0])
        ax.set_xlabel(f"{r.class_name[:10]}\n{r.activation:.2f}", fontsize=5)
    row[0].set_ylabel(f"n{neuron} (l{layer})\n{distinct} classes", fontsize=6)
fig.suptitle(f"Figs. 9-10: top-{k} of {n} test samples by class-token activation; layers "
             f"{', '.join(str(l + 1) for l in layers)} of {depth}", fontsize=8)
fig.tight_layout()
save(fig, sm.output.png)
log.info("wrote %s", sm.output.png)
