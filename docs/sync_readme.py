"""Copy the digits example's comparison table into README.md (between the markers).

Run after `python -m kfold_clr run experiments/digits-clr.yaml`:

    python docs/sync_readme.py
"""

import pathlib
import re
import sys

import pandas as pd

ROOT = pathlib.Path(__file__).resolve().parent.parent
RESULTS = ROOT / "results" / "digits-clr"
START, END = "<!-- digits-comparison:start -->", "<!-- digits-comparison:end -->"


def expected_table(results=RESULTS, metric="accuracy") -> str:
    from kfold_clr.report import key_comparison_markdown

    return key_comparison_markdown(pd.read_csv(results / "comparison.csv"), metric).strip()


def readme_table(readme_text: str) -> str:
    match = re.search(re.escape(START) + r"\n(.*?)\n" + re.escape(END), readme_text, re.S)
    return match.group(1).strip() if match else ""


def main() -> int:
    readme = ROOT / "README.md"
    text = readme.read_text(encoding="utf-8")
    if START not in text or END not in text:
        print("README.md lacks the table markers", file=sys.stderr)
        return 1
    before, rest = text.split(START, 1)
    _, after = rest.split(END, 1)
    readme.write_text(f"{before}{START}\n{expected_table()}\n{END}{after}", encoding="utf-8")
    print("README.md table updated from", RESULTS / "comparison.csv")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
