"""MkDocs hook: the digits example's committed figures are part of the site, read from
results/digits-clr/plots/ where the run writes them (never copied into docs/)."""

import pathlib

from mkdocs.structure.files import File

ROOT = pathlib.Path(__file__).resolve().parent.parent
FIGURES = ROOT / "results" / "digits-clr" / "plots"


def on_files(files, config):
    for path in sorted(FIGURES.glob("*.png")):
        files.append(File(path.relative_to(ROOT).as_posix(), src_dir=str(ROOT), dest_dir=config["site_dir"],
                          use_directory_urls=config["use_directory_urls"]))
    return files
