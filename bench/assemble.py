"""Build bench/README.md from the per-benchmark reports in bench/results/.

Each benchmark script writes its own bench/results/<topic>.md with the figures
it measured; this only stitches them together in a fixed order. What a person
wrote about a report (how to read it, what it means) lives beside it in
bench/results/<topic>.notes.md and follows its section, so rerunning a bench
rewrites the figures without losing the reading.
"""
from pathlib import Path

HERE = Path(__file__).resolve().parent
ORDER = ["python", "confidence", "convert", "browser", "host", "native", "retrain", "label_curve",
         "epoch_choice", "anchor", "zero_shot_variants", "zero_shot_framing", "site_alphabet", "browser_general"]
HEADER = """# Benchmarks

All figures below were measured on this project's machine: 2 CPU cores, no
GPU, shared with other work — so each table quotes medians and ratios taken
within one run. The CPU under the machine has changed between sessions (an
Intel Xeon with AVX-512, an AMD EPYC with AVX2), which moves speed by up to
~2x: each section names the CPU it ran on. Regenerate a section by running its
script; then `python bench/assemble.py` rebuilds this file.

| section | script |
|---|---|
| Python solver vs ddddocr | `bench/python_bench.py` |
| Confidence threshold | `bench/confidence.py` |
| Converter quantisation | `bench/convert_quant.py` |
| In-browser (extension, TF.js) | `bench/browser_bench.py` |
| Local host (HTTP) | `bench/host_bench.py` |
| Native messaging vs HTTP | `bench/native_bench.py` |
| Retraining on a folder | `bench/retrain_bench.py` |
| Label curve (labels -> accuracy) | `bench/label_curve.py` |
| Which epoch to keep | `bench/epoch_choice.py` |
| Pulling fine-tuned weights toward the base | `bench/anchor.py` |
| Zero-shot variants of the general reader | `bench/zero_shot_variants.py` |
| Framing in height, voted with the width scales | `bench/zero_shot_framing.py` |
| A site's alphabet (its first corrections' characters) | `bench/site_alphabet.py` |
| In-browser, general reader | `bench/browser_bench.py --model captchalens/models/general --size 200x50` |
"""


def main() -> None:
    parts = [HEADER]
    results = HERE / "results"
    files = {p.stem: p for p in results.glob("*.md") if not p.name.endswith(".notes.md")}
    for name in ORDER + sorted(set(files) - set(ORDER)):
        if name in files:
            parts.append(files[name].read_text().strip() + "\n")
            notes = results / f"{name}.notes.md"
            if notes.exists():
                parts.append(notes.read_text().strip() + "\n")
    (HERE / "README.md").write_text("\n".join(parts))
    print(f"wrote {HERE / 'README.md'} from {len(files)} report(s)")


if __name__ == "__main__":
    main()
