"""Copy the digits example's comparison table into README.md and the digits tutorial (between the markers).

Run after `python -m kfold_clr run experiments/digits-clr.yaml`:

    python docs/sync_readme.py

The tutorial's prose quotes the table; tests/test_readme.py fails until someone rewrites it from
the new one.
"""

import pathlib
import re
import sys

import pandas as pd

ROOT = pathlib.Path(__file__).resolve().parent.parent
RESULTS = ROOT / "results" / "digits-clr"
PAGES = (ROOT / "README.md", ROOT / "docs" / "tutorials" / "digits.md")
START, END = "<!-- digits-comparison:start -->", "<!-- digits-comparison:end -->"


def expected_table(results=RESULTS, metric="accuracy") -> str:
    from kfold_clr.report import key_comparison_markdown

    return key_comparison_markdown(pd.read_csv(results / "comparison.csv"), metric).strip()


def readme_table(readme_text: str) -> str:
    """The table between the markers of a page's text ("" if it has none)."""
    match = re.search(re.escape(START) + r"\n(.*?)\n" + re.escape(END), readme_text, re.S)
    return match.group(1).strip() if match else ""


def main() -> int:
    table = expected_table()
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        if START not in text or END not in text:
            print(f"{page.relative_to(ROOT)} lacks the table markers", file=sys.stderr)
            return 1
        before, rest = text.split(START, 1)
        _, after = rest.split(END, 1)
        page.write_text(f"{before}{START}\n{table}\n{END}{after}", encoding="utf-8")
        print(f"{page.relative_to(ROOT)}: table updated from", RESULTS / "comparison.csv")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
