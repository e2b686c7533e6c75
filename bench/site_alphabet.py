"""A site's alphabet (captchalens/alphabet.py): how much reading a site with the character
families its first corrections show gains, before any training — for the general reader alone
and for the automatic reader (default model first, the general reader when it is unsure), as
the extension reads a site by default.

For each of label_curve's test sets, k corrections (0, 1, 2, 3, 5, 10, 25) are drawn at random
from the set's labelled pool (20 draws each; the pool's labels are what a user would type), and
the test captchas are read with alphabet.site_charset of their characters.  Whole captcha,
ignoring case and exact.  Read through Solver.solve_images and AutoSolver.solve_named (the
product's path: the rule's scales, the automatic reader's skip), once per set of families.

    .venv/bin/python bench/site_alphabet.py        # a few minutes on 2 cores

Results: bench/results/site_alphabet.md.
"""
from __future__ import annotations

import random
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import label_curve as lc  # noqa: E402
from _machine import cpu  # noqa: E402

KS = (0, 1, 2, 3, 5, 10, 25)
DRAWS = 20


def main() -> int:
    from captchalens.alphabet import MIN_LABELS, widen
    from captchalens.auto import AutoSolver
    from captchalens.images import to_rgba
    from captchalens.training.folder import load_folder, scan

    auto = AutoSolver.shipped()
    first, then = auto.first, auto.then
    work = Path(tempfile.mkdtemp(prefix="site-alphabet-"))
    rows = []
    try:
        for name, (test, names, pool_dir) in lc.datasets(work, None).items():
            images, texts, _ = load_folder(test)
            keep = set(names)  # the labelled pool only (captcha_images_v2's folder holds the test part too)
            pool = [t for path, t in scan(pool_dir)[0] if Path(path).name in keep]
            assert len(pool) == len(names), name
            rgba = [to_rgba(im) for im in images]
            cache: dict = {}

            def read(alphabet):
                """(general reader's answers, automatic reader's) with a site's alphabet, through
                the solvers themselves (the rule's scales, the skip); alphabets of the same
                families read the same, so each family set is read once."""
                key = frozenset(widen(alphabet, "")) if alphabet else frozenset()
                if key not in cache:
                    a = alphabet or None
                    cache[key] = ([t for t, _ in then.solve_images(rgba, a)],
                                  [t for t, _, _ in auto.solve_named(rgba, a)])
                return cache[key]

            def score(answers):
                return (np.mean([a.lower() == t.lower() for a, t in zip(answers, texts)]),
                        np.mean([a == t for a, t in zip(answers, texts)]))

            cells = {}
            for k in KS:
                runs = []
                for d in range(DRAWS if k else 1):
                    labels = random.Random(1000 * k + d).sample(pool, k)
                    seen = "".join(sorted(set("".join(labels))))
                    alphabet = seen if k >= MIN_LABELS else ""
                    g, a = read(alphabet)
                    runs.append((*score(g), *score(a)))
                cells[k] = np.mean(runs, axis=0)
            rows.append((name, cells))
            print(name, {k: np.round(100 * v, 1).tolist() for k, v in cells.items()}, flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    def table(title: str, col: int) -> list[str]:
        head = "| data set | " + " | ".join(f"{k} correction{'s' if k != 1 else ''}" for k in KS) + " |"
        lines = [f"**{title}**", "", head, "|---" * (len(KS) + 1) + "|"]
        for name, cells in rows:
            lines.append(f"| {name} | " + " | ".join(f"{100 * cells[k][col]:.1f}%" for k in KS) + " |")
        lines.append("| mean | " + " | ".join(
            f"{100 * np.mean([c[k][col] for _, c in rows]):.1f}%" for k in KS) + " |")
        return lines + [""]

    lines = ["## A site's alphabet (bench/site_alphabet.py)", "",
             f"Whole captcha on label_curve's test captchas, read with the character families of k "
             f"corrections drawn from each set's labelled pool ({DRAWS} draws per k, the mean; from "
             f"{MIN_LABELS} corrections on, alphabet.MIN_LABELS: fewer read the whole charset), no training. "
             f"The general reader `{then.meta.name}` alone, and the automatic reader (`{first.meta.name}` "
             f"when at least {auto.rule.sure:g} sure, else `{then.meta.name}`; the default model is skipped "
             f"on a site whose families it cannot read); {cpu()}.", ""]
    lines += table("General reader, ignoring case", 0)
    lines += table("General reader, exact (case as the site's labels)", 1)
    lines += table("Automatic reader, ignoring case", 2)
    lines += table("Automatic reader, exact", 3)
    (lc.RESULTS / "site_alphabet.md").write_text("\n".join(lines).rstrip() + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
